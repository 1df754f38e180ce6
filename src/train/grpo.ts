// The host-side math of GRPO, compatible with TRL's GRPOTrainer (read at huggingface/trl
// 1.10.0.dev0, commit f2cd577, trl/trainer/grpo_trainer.py): group-normalised advantages from
// rewards, and for one micro-batch the clipped-surrogate loss with an optional k3 KL penalty,
// its exact derivative with respect to each completion token's log-prob, and the metrics TRL
// logs. The trainer computes log-probs on the device, downloads them, calls grpoLoss, and
// uploads dLogp for the backward pass. Everything here is float64 arithmetic on the host.
//
// What TRL has and this file does not (all off by default in TRL): sequence-level importance
// sampling (GSPO), the cispo / sapo / vespo / luspo losses, two-sided clipping (`delta`),
// use_bias_correction_kl, normalize_then_sum aggregation, entropy masks and bonuses, and vLLM
// importance-sampling correction.

export type ScaleRewards = 'group' | 'batch' | 'none';
export type GrpoLossType = 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo';

// TRL adds this to the std before dividing, so a zero-std group gives advantages of 0, not NaN.
const STD_EPS = 1e-4;

// ---------------------------------------------------------------- advantages

/** One reward function's values, one per completion, NaN where it gave no score (TRL: None). */
export interface RewardColumn {
  name: string;
  values: ArrayLike<number>;
  /** TRL's reward_weights entry; default 1. */
  weight?: number;
}

export interface AdvantageOptions {
  /** Completions per prompt (G); rows are grouped by prompt: rows [pG, (p+1)G) share prompt p. */
  numGenerations: number;
  /** 'group' (TRL's default): divide by each group's std; 'batch': by the std of all rewards; 'none'. */
  scaleRewards?: ScaleRewards;
}

export interface AdvantageResult {
  /** Per completion; 0 for completions no reward function scored. */
  advantages: Float64Array;
  /** Per completion: the weighted sum of the scores it has (NaN where it has none). */
  rewards: Float64Array;
  metrics: {
    /** TRL's `reward` and `reward_std`: nan-mean and unbiased nan-std of `rewards`. */
    reward: number;
    rewardStd: number;
    /** TRL's `frac_reward_zero_std`: share of completions whose scaling std is 0. */
    fracRewardZeroStd: number;
    /** TRL's `rewards/<name>/mean` and `/std`, unweighted, over the whole batch, NaNs skipped. */
    perFunction: Record<string, { mean: number; std: number }>;
  };
}

/**
 * TRL's advantages (multi_objective_aggregation 'sum_then_normalize'): reward = nansum of
 * weight * score per completion; advantage = (reward - group mean) / (std + 1e-4), the std
 * being unbiased (Bessel), per group or over the whole batch as `scaleRewards` says, or no
 * division for 'none'. A completion that no function scored is left out of the group's
 * statistics and gets advantage 0; so does any advantage that comes out NaN (a group with a
 * single scored completion has no std, as in TRL).
 */
export function groupAdvantages(columns: readonly RewardColumn[], opts: AdvantageOptions): AdvantageResult {
  const scale = opts.scaleRewards ?? 'group';
  if (scale !== 'group' && scale !== 'batch' && scale !== 'none') {
    throw new Error(`scaleRewards must be 'group', 'batch' or 'none', got ${JSON.stringify(scale)}`);
  }
  if (columns.length === 0) throw new Error('columns is empty: give at least one reward function\'s values');
  const n = columns[0].values.length;
  const G = opts.numGenerations;
  if (!Number.isInteger(G) || G < 1) throw new Error(`numGenerations must be a positive integer, got ${G}`);
  if (n === 0 || n % G !== 0) {
    throw new Error(`columns hold ${n} completions, which is not a positive multiple of numGenerations ${G}`);
  }
  for (const c of columns) {
    if (c.values.length !== n) throw new Error(`reward "${c.name}" has ${c.values.length} values; "${columns[0].name}" has ${n}`);
    if (c.weight !== undefined && !Number.isFinite(c.weight)) throw new Error(`reward "${c.name}" has weight ${c.weight}; it must be finite`);
  }

  const rewards = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    let scored = false;
    for (const c of columns) {
      const v = c.values[i] * (c.weight ?? 1);
      if (!Number.isNaN(v)) {
        sum += v;
        scored = true;
      }
    }
    rewards[i] = scored ? sum : NaN;
  }

  const advantages = new Float64Array(n);
  const stdOf = new Float64Array(n);
  const batchStd = n > 1 ? nanStd(rewards) : 0;
  for (let start = 0; start < n; start += G) {
    const group = rewards.subarray(start, start + G);
    const mean = nanMean(group);
    // With G = 1 TRL uses std 0 instead of the undefined sample std.
    const std = scale === 'batch' ? batchStd : G > 1 ? nanStd(group) : 0;
    for (let i = start; i < start + G; i++) {
      const centred = rewards[i] - mean;
      const a = scale === 'none' ? centred : centred / (std + STD_EPS);
      advantages[i] = Number.isNaN(a) ? 0 : a;
      stdOf[i] = std;
    }
  }

  let zeroStd = 0;
  // torch.isclose(std, 0) with its default atol of 1e-8; a NaN std is not close to 0.
  for (let i = 0; i < n; i++) if (Math.abs(stdOf[i]) <= 1e-8) zeroStd++;
  const perFunction: Record<string, { mean: number; std: number }> = {};
  for (const c of columns) {
    const values = Float64Array.from(c.values as ArrayLike<number>);
    perFunction[c.name] = { mean: nanMean(values), std: nanStd(values) };
  }
  return {
    advantages,
    rewards,
    metrics: { reward: nanMean(rewards), rewardStd: nanStd(rewards), fracRewardZeroStd: zeroStd / n, perFunction },
  };
}

/** Mean of the non-NaN values; NaN if there are none. */
export function nanMean(xs: ArrayLike<number>): number {
  let sum = 0;
  let count = 0;
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isNaN(xs[i])) {
      sum += xs[i];
      count++;
    }
  }
  return count === 0 ? NaN : sum / count;
}

/** Unbiased (n - 1) std of the non-NaN values; NaN with fewer than two, as TRL's nanstd. */
export function nanStd(xs: ArrayLike<number>): number {
  const mean = nanMean(xs);
  let sq = 0;
  let count = 0;
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isNaN(xs[i])) {
      sq += (xs[i] - mean) ** 2;
      count++;
    }
  }
  return count < 2 ? NaN : Math.sqrt(sq / (count - 1));
}

// ---------------------------------------------------------------- loss

export interface GrpoLossConfig {
  lossType: GrpoLossType;
  /** Lower clip range: ratios below 1 - epsilon are clipped (TRL's epsilon, default 0.2). */
  epsilon: number;
  /** Upper clip range (TRL's epsilon_high); default `epsilon`. DAPO uses 0.28. */
  epsilonHigh?: number;
  /** KL coefficient (TRL's beta, default 0); > 0 needs refLogp. */
  beta: number;
  /** dr_grpo's constant: the loss is divided by (sequences * maxCompletionLength). */
  maxCompletionLength?: number;
  /**
   * Micro-batches accumulated per optimizer step. grpo, bnpo and dr_grpo divide each
   * micro-batch's loss by it, as TRL does; dapo does not (its normaliser already spans the
   * whole step). Default 1.
   */
  gradientAccumulationSteps?: number;
}

/**
 * One micro-batch of completions. Token arrays are flat: sequence s owns tokens
 * [offsets[s], offsets[s+1]) (use paddedOffsets for a [B, T] layout). Masked-out tokens
 * (mask 0) may hold anything; they get gradient 0.
 */
export interface GrpoMicroBatch {
  offsets: ArrayLike<number>;
  /** Log-prob of each completion token under the current policy (the values being differentiated). */
  logp: ArrayLike<number>;
  /**
   * Log-probs under the policy that sampled the completions (num_iterations > 1, or a rollout
   * that ran ahead). Absent: they equal logp, detached, so every ratio is exactly 1.
   */
  oldLogp?: ArrayLike<number>;
  /** Log-probs under the reference model (adapter off); needed when beta > 0. */
  refLogp?: ArrayLike<number>;
  /** 1 for completion tokens in the loss, 0 for padding and anything excluded. */
  mask: ArrayLike<number>;
  /** One advantage per sequence. */
  advantages: ArrayLike<number>;
  /**
   * dapo's normaliser: mask tokens in the whole generation batch, i.e. summed over every
   * micro-batch of the optimizer step (TRL's num_items_in_batch, gathered over processes).
   */
  numItemsInBatch?: number;
}

export interface GrpoMetrics {
  /** Masked tokens in this micro-batch. */
  tokens: number;
  /** TRL's `kl`: masked mean of the per-token KL; NaN without refLogp. */
  klMean: number;
  /** Masked mean of the ratio pi/pi_old (not a TRL metric; 1 when oldLogp is absent). */
  ratioMean: number;
  /** TRL's clip_ratio/{low_mean, high_mean, region_mean}: shares of masked tokens clipped. */
  clipLowMean: number;
  clipHighMean: number;
  clipRegionMean: number;
  /** TRL's clip_ratio/low_min and high_max: min / max over sequences of the per-sequence share. */
  clipLowMin: number;
  clipHighMax: number;
}

export interface GrpoLossResult {
  /** This micro-batch's contribution to the step's loss (already divided as TRL divides it). */
  loss: number;
  /** d loss / d logp per token. */
  dLogp: Float32Array;
  metrics: GrpoMetrics;
}

/** Offsets for B sequences of T tokens each, padded row-major [B, T]. */
export function paddedOffsets(numSequences: number, length: number): Int32Array {
  return Int32Array.from({ length: numSequences + 1 }, (_, s) => s * length);
}

/**
 * Per token: ratio r = exp(logp - oldLogp), loss = -min(r A, clip(r, 1 - eps, 1 + epsHigh) A)
 * + beta * (exp(ref - logp) - (ref - logp) - 1), aggregated by lossType:
 * - grpo:    mean over sequences of (sum over the sequence's tokens / its token count), / GA
 * - bnpo:    sum over tokens / tokens in this micro-batch, / GA
 * - dr_grpo: sum over tokens / (sequences * maxCompletionLength), / GA
 * - dapo:    sum over tokens / numItemsInBatch (tokens in the whole generation batch)
 * Token counts are clamped to at least 1, as in TRL. The derivative of the clipped term is
 * -A r where the unclipped branch is the min and 0 where the clipped one is (ties at the
 * clip boundaries pass the gradient, as torch's clamp and min do).
 */
export function grpoLoss(batch: GrpoMicroBatch, config: GrpoLossConfig): GrpoLossResult {
  const { offsets, logp, oldLogp, refLogp, mask, advantages } = batch;
  const B = offsets.length - 1;
  const n = logp.length;
  checkConfig(config);
  checkBatch(batch, B, n);
  const epsLow = config.epsilon;
  const epsHigh = config.epsilonHigh ?? config.epsilon;
  const beta = config.beta;
  if (beta !== 0 && refLogp === undefined) throw new Error('refLogp is required when beta is not 0');
  const accum = config.gradientAccumulationSteps ?? 1;

  let totalTokens = 0;
  for (let t = 0; t < n; t++) totalTokens += mask[t];
  if (config.lossType === 'dapo') {
    if (batch.numItemsInBatch === undefined) {
      throw new Error("numItemsInBatch is required for lossType 'dapo': the mask tokens of the whole generation batch");
    }
    if (batch.numItemsInBatch < totalTokens) {
      throw new Error(
        `numItemsInBatch ${batch.numItemsInBatch} is less than this micro-batch's ${totalTokens} mask tokens; ` +
          'it must count every micro-batch of the optimizer step',
      );
    }
  }

  // Per-sequence weight of sum(mask * per-token loss) in the final loss.
  const weightOf = (s: number): number => {
    switch (config.lossType) {
      case 'grpo': {
        let count = 0;
        for (let t = offsets[s]; t < offsets[s + 1]; t++) count += mask[t];
        return 1 / (B * Math.max(count, 1) * accum);
      }
      case 'bnpo':
        return 1 / (Math.max(totalTokens, 1) * accum);
      case 'dr_grpo':
        return 1 / (B * config.maxCompletionLength! * accum);
      case 'dapo':
        return 1 / Math.max(batch.numItemsInBatch!, 1);
    }
  };

  const dLogp = new Float32Array(n);
  let loss = 0;
  let klSum = 0;
  let ratioSum = 0;
  let lowSum = 0;
  let highSum = 0;
  let lowMin = NaN;
  let highMax = NaN;
  for (let s = 0; s < B; s++) {
    const A = advantages[s];
    const w = weightOf(s);
    let seqLoss = 0;
    let seqTokens = 0;
    let seqLow = 0;
    let seqHigh = 0;
    for (let t = offsets[s]; t < offsets[s + 1]; t++) {
      const m = mask[t];
      if (m === 0) continue;
      const ratio = oldLogp === undefined ? 1 : Math.exp(logp[t] - oldLogp[t]);
      const low = ratio < 1 - epsLow && A < 0;
      const high = ratio > 1 + epsHigh && A > 0;
      const clipped = Math.min(Math.max(ratio, 1 - epsLow), 1 + epsHigh);
      let tokenLoss = -Math.min(ratio * A, clipped * A);
      // d(ratio)/d(logp) = ratio, also when ratio is exp(logp - logp.detach()) = 1.
      let grad = low || high ? 0 : -A * ratio;
      if (refLogp !== undefined) {
        const diff = refLogp[t] - logp[t];
        const kl = Math.exp(diff) - diff - 1;
        klSum += m * kl;
        if (beta !== 0) {
          tokenLoss += beta * kl;
          grad += beta * (1 - Math.exp(diff));
        }
      }
      seqLoss += m * tokenLoss;
      dLogp[t] = w * m * grad;
      seqTokens += m;
      ratioSum += m * ratio;
      if (low) seqLow += m;
      if (high) seqHigh += m;
    }
    loss += w * seqLoss;
    lowSum += seqLow;
    highSum += seqHigh;
    // TRL's per-sequence means are 0/0 = NaN for empty sequences, which nanmin/nanmax skip.
    if (seqTokens > 0) {
      lowMin = Number.isNaN(lowMin) ? seqLow / seqTokens : Math.min(lowMin, seqLow / seqTokens);
      highMax = Number.isNaN(highMax) ? seqHigh / seqTokens : Math.max(highMax, seqHigh / seqTokens);
    }
  }

  const perToken = (x: number): number => x / Math.max(totalTokens, 1);
  return {
    loss,
    dLogp,
    metrics: {
      tokens: totalTokens,
      klMean: refLogp === undefined ? NaN : perToken(klSum),
      ratioMean: perToken(ratioSum),
      clipLowMean: perToken(lowSum),
      clipHighMean: perToken(highSum),
      // low and high never hold for the same token (they need opposite advantage signs).
      clipRegionMean: perToken(lowSum + highSum),
      clipLowMin: lowMin,
      clipHighMax: highMax,
    },
  };
}

function checkConfig(config: GrpoLossConfig): void {
  const { lossType, epsilon, epsilonHigh, beta, maxCompletionLength, gradientAccumulationSteps } = config;
  if (!['grpo', 'bnpo', 'dr_grpo', 'dapo'].includes(lossType)) {
    throw new Error(`lossType must be 'grpo', 'bnpo', 'dr_grpo' or 'dapo', got ${JSON.stringify(lossType)}`);
  }
  if (!(Number.isFinite(epsilon) && epsilon >= 0)) throw new Error(`epsilon must be a finite number >= 0, got ${epsilon}`);
  if (epsilonHigh !== undefined && !(Number.isFinite(epsilonHigh) && epsilonHigh >= 0)) {
    throw new Error(`epsilonHigh must be a finite number >= 0, got ${epsilonHigh}`);
  }
  if (!(Number.isFinite(beta) && beta >= 0)) throw new Error(`beta must be a finite number >= 0, got ${beta}`);
  if (lossType === 'dr_grpo' && !(Number.isInteger(maxCompletionLength) && maxCompletionLength! > 0)) {
    throw new Error(`maxCompletionLength must be a positive integer for lossType 'dr_grpo', got ${maxCompletionLength}`);
  }
  const ga = gradientAccumulationSteps;
  if (ga !== undefined && !(Number.isInteger(ga) && ga > 0)) {
    throw new Error(`gradientAccumulationSteps must be a positive integer, got ${ga}`);
  }
}

function checkBatch(batch: GrpoMicroBatch, B: number, n: number): void {
  const { offsets, oldLogp, refLogp, mask, advantages, numItemsInBatch } = batch;
  if (B < 1) throw new Error('offsets must hold at least 2 entries (one sequence)');
  if (offsets[0] !== 0 || offsets[B] !== n) {
    throw new Error(`offsets must run from 0 to logp.length (${n}); got ${offsets[0]} to ${offsets[B]}`);
  }
  for (let s = 0; s < B; s++) {
    if (!(offsets[s + 1] >= offsets[s])) throw new Error(`offsets must not decrease; offsets[${s + 1}] < offsets[${s}]`);
  }
  for (const [name, arr] of [['oldLogp', oldLogp], ['refLogp', refLogp], ['mask', mask]] as const) {
    if (arr !== undefined && arr.length !== n) throw new Error(`${name} has ${arr.length} entries; logp has ${n}`);
  }
  if (advantages.length !== B) throw new Error(`advantages has ${advantages.length} entries; offsets describe ${B} sequences`);
  for (let t = 0; t < n; t++) {
    if (mask[t] !== 0 && mask[t] !== 1) throw new Error(`mask[${t}] is ${mask[t]}; it must be 0 or 1`);
  }
  for (let s = 0; s < B; s++) {
    if (!Number.isFinite(advantages[s])) throw new Error(`advantages[${s}] is ${advantages[s]}; it must be finite`);
  }
  if (batch.numItemsInBatch !== undefined && !(Number.isFinite(numItemsInBatch) && numItemsInBatch! >= 0)) {
    throw new Error(`numItemsInBatch must be a finite number >= 0, got ${numItemsInBatch}`);
  }
}
