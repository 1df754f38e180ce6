/**
 * GRPO, step by step, as TRL's GRPOTrainer runs it:
 * - a generation batch is perDeviceTrainBatchSize x gradientAccumulationSteps completions, i.e.
 *   that / numGenerations prompts, each with G completions from the serving engine;
 * - rewards -> group-normalised advantages (grpo.ts);
 * - gradientAccumulationSteps micro-batches of (prompt + completion) through the training forward
 *   (policy log-probs, reference log-probs with the adapter off when beta > 0), the per-token
 *   loss and its backward into the LoRA gradients;
 * - one optimizer step. With numIterations > 1 the same generation batch serves that many
 *   optimizer steps, with the sampling policy's log-probs kept as oldLogp for the ratio.
 */
import type { Example } from '../train/data.ts';
import type { TrainSequence } from '../model/train-batch.ts';
import type { RewardRegistry, RewardSpec } from './reward-registry.ts';
import { groupAdvantages, grpoLoss } from './grpo.ts';
import type { GrpoLossType, GrpoMetrics, ScaleRewards } from './grpo.ts';
import { generateRollouts } from './rollout.ts';
import type { Completion } from './rollout.ts';
import { chunked, microBatchBackward, microBatchLogprobs } from './train-context.ts';
import type { TrainContext } from './train-context.ts';
import { renderPrompt } from './render-prompt.ts';

export interface GrpoParams {
  numGenerations: number;
  perDeviceTrainBatchSize: number;
  gradientAccumulationSteps: number;
  maxPromptLength: number;
  maxCompletionLength: number;
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  repetitionPenalty: number;
  beta: number;
  epsilon: number;
  epsilonHigh: number;
  lossType: GrpoLossType;
  scaleRewards: ScaleRewards;
  numIterations: number;
  rewards: RewardSpec[];
  seed: number;
}

/** A generation batch: prompts, completions, advantages, and what training needs of them. */
export interface Generation {
  examples: Example[];
  promptIds: number[][];
  completions: Completion[][];
  /** Per completion (prompt-major). */
  advantages: Float64Array;
  sequences: TrainSequence[];
  /** Sampling policy's log-probs per micro-batch (numIterations > 1 only). */
  oldLogp: (Float32Array | null)[];
  /** Reference log-probs per micro-batch (beta > 0 only). */
  refLogp: (Float32Array | null)[];
  metrics: Record<string, number>;
  rolloutSeconds: number;
  rolloutTokens: number;
}

export function promptsPerGeneration(p: GrpoParams): number {
  const completions = p.perDeviceTrainBatchSize * p.gradientAccumulationSteps;
  if (completions % p.numGenerations !== 0) {
    throw new Error(`per_device_train_batch_size x gradient_accumulation_steps = ${completions} completions is not a multiple of num_generations ${p.numGenerations}`);
  }
  return completions / p.numGenerations;
}

/** Roll out, score and prepare one generation batch. `policy` is the engine adapter name to sample with. */
export async function generate(
  ctx: TrainContext,
  examples: Example[],
  p: GrpoParams,
  opts: { step: number; policy: string | null; rewards: RewardRegistry; requestPrefix: string },
): Promise<Generation> {
  const tok = ctx.loaded.tokenizer;
  const rendered = examples.map((e) => renderPrompt(tok, e.prompt));
  // TRL keeps the last max_prompt_length tokens of a long prompt (left truncation).
  const promptIds = rendered.map((r) => r.ids.slice(Math.max(0, r.ids.length - p.maxPromptLength)));
  const started = performance.now();
  const completions = await generateRollouts(ctx.engine, promptIds, {
    adapter: opts.policy,
    numGenerations: p.numGenerations,
    maxCompletionTokens: p.maxCompletionLength,
    temperature: p.temperature,
    topP: p.topP,
    topK: p.topK,
    minP: p.minP,
    repetitionPenalty: p.repetitionPenalty,
    seed: p.seed,
    step: opts.step,
    requestPrefix: opts.requestPrefix,
  });
  const rolloutSeconds = (performance.now() - started) / 1000;
  const flat = completions.flat();
  const rolloutTokens = flat.reduce((n, c) => n + c.ids.length, 0);

  const inputs = completions.flatMap((group, i) =>
    group.map((c) => ({ prompt: rendered[i].text, completion: c.text, example: examples[i] })),
  );
  const scores = await opts.rewards.scoreCompletions(p.rewards, inputs);
  const weights = new Map(p.rewards.map((r) => [r.name, r.weight ?? 1]));
  const adv = groupAdvantages(
    Object.entries(scores.perReward).map(([name, values]) => ({ name, values, weight: weights.get(name) })),
    { numGenerations: p.numGenerations, scaleRewards: p.scaleRewards },
  );

  const sequences: TrainSequence[] = completions.flatMap((group, i) =>
    group.map((c) => ({ tokens: [...promptIds[i], ...c.ids], targets: promptIds[i].length })),
  );
  const metrics: Record<string, number> = {
    reward: adv.metrics.reward,
    reward_std: adv.metrics.rewardStd,
    frac_reward_zero_std: adv.metrics.fracRewardZeroStd,
    completion_length: rolloutTokens / flat.length,
    completions_clipped_ratio: flat.filter((c) => c.finishReason === 'length').length / flat.length,
    rollout_tokens_per_second: rolloutTokens / Math.max(rolloutSeconds, 1e-9),
  };
  for (const [name, m] of Object.entries(adv.metrics.perFunction)) {
    metrics[`rewards/${name}/mean`] = m.mean;
    metrics[`rewards/${name}/std`] = m.std;
  }
  const micro = chunked(sequences, p.perDeviceTrainBatchSize);
  const gen: Generation = {
    examples,
    promptIds,
    completions,
    advantages: adv.advantages,
    sequences,
    oldLogp: micro.map(() => null),
    refLogp: micro.map(() => null),
    metrics,
    rolloutSeconds,
    rolloutTokens,
  };
  // Log-probs that stay fixed across the generation's iterations: computed once, up front.
  for (let i = 0; i < micro.length; i++) {
    if (p.numIterations > 1) gen.oldLogp[i] = (await microBatchLogprobs(ctx, micro[i], true, { temperature: p.temperature, forBackward: false })).logp;
    if (p.beta > 0) gen.refLogp[i] = (await microBatchLogprobs(ctx, micro[i], false, { temperature: p.temperature, forBackward: false })).logp;
  }
  return gen;
}

export interface GrpoStepResult {
  loss: number;
  /** False when the loss was not finite: no gradients were kept (the caller skips the step). */
  finite: boolean;
  metrics: Record<string, number>;
}

/** Forward, loss and backward of every micro-batch of a generation: gradients accumulate. */
export async function accumulateGrpo(ctx: TrainContext, gen: Generation, p: GrpoParams): Promise<GrpoStepResult> {
  const micro = chunked(gen.sequences, p.perDeviceTrainBatchSize);
  let numItems = 0;
  for (const s of gen.sequences) numItems += s.tokens.length - (s.targets as number);
  let loss = 0;
  const parts: GrpoMetrics[] = [];
  for (let i = 0; i < micro.length; i++) {
    const { batch, logp } = await microBatchLogprobs(ctx, micro[i], true, { temperature: p.temperature, forBackward: true });
    const first = i * p.perDeviceTrainBatchSize;
    const result = grpoLoss(
      {
        offsets: batch.cuTargets,
        logp,
        oldLogp: gen.oldLogp[i] ?? undefined,
        refLogp: gen.refLogp[i] ?? undefined,
        mask: new Uint8Array(logp.length).fill(1),
        advantages: gen.advantages.subarray(first, first + micro[i].length),
        numItemsInBatch: numItems,
      },
      {
        lossType: p.lossType,
        epsilon: p.epsilon,
        epsilonHigh: p.epsilonHigh,
        beta: p.beta,
        maxCompletionLength: p.maxCompletionLength,
        gradientAccumulationSteps: micro.length,
      },
    );
    if (!Number.isFinite(result.loss)) {
      // Drop the pending backward: the caller zeroes the gradients and skips the step.
      ctx.trainable.discard();
      return { loss: result.loss, finite: false, metrics: {} };
    }
    await microBatchBackward(ctx, result.dLogp);
    loss += result.loss;
    parts.push(result.metrics);
  }
  return { loss, finite: true, metrics: averageMetrics(parts, p.beta > 0) };
}

/** Token-weighted means of the micro-batches' metrics, named as TRL logs them. */
function averageMetrics(parts: GrpoMetrics[], withKl: boolean): Record<string, number> {
  let tokens = 0;
  const sum = { kl: 0, low: 0, high: 0, region: 0, ratio: 0 };
  let lowMin = Infinity;
  let highMax = -Infinity;
  for (const m of parts) {
    tokens += m.tokens;
    sum.kl += m.tokens * (withKl ? m.klMean : 0);
    sum.low += m.tokens * m.clipLowMean;
    sum.high += m.tokens * m.clipHighMean;
    sum.region += m.tokens * m.clipRegionMean;
    sum.ratio += m.tokens * m.ratioMean;
    lowMin = Math.min(lowMin, m.clipLowMin);
    highMax = Math.max(highMax, m.clipHighMax);
  }
  const t = Math.max(tokens, 1);
  const out: Record<string, number> = {
    'clip_ratio/low_mean': sum.low / t,
    'clip_ratio/high_mean': sum.high / t,
    'clip_ratio/region_mean': sum.region / t,
    'clip_ratio/low_min': lowMin,
    'clip_ratio/high_max': highMax,
    ratio_mean: sum.ratio / t,
  };
  if (withKl) out.kl = sum.kl / t;
  return out;
}
