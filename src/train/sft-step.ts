/**
 * Supervised LoRA fine-tuning, as TRL's SFTTrainer steps: a batch of perDeviceTrainBatchSize x
 * gradientAccumulationSteps conversations, micro-batches of perDeviceTrainBatchSize, the loss
 * being the mean negative log-likelihood over every assistant token of the step (each
 * micro-batch divides by the step's token count, so the accumulated gradient is that mean's).
 */
import type { TrainSequence } from '../model/train-batch.ts';
import { sftLoss } from './sft-data.ts';
import type { SftSequence } from './sft-data.ts';
import { chunked, microBatchBackward, microBatchLogprobs } from './train-context.ts';
import type { TrainContext } from './train-context.ts';

function asTrainSequence(s: SftSequence): TrainSequence {
  return { tokens: Array.from(s.tokens), targets: s.lossMask };
}

export interface SftStepResult {
  loss: number;
  tokens: number;
  finite: boolean;
}

/** Forward, loss and backward of every micro-batch: gradients accumulate into the optimizer. */
export async function accumulateSft(ctx: TrainContext, batch: readonly SftSequence[], perDevice: number): Promise<SftStepResult> {
  const numLossTokens = batch.reduce((n, s) => n + s.lossTokens, 0);
  let loss = 0;
  for (const micro of chunked(batch, perDevice)) {
    const { logp } = await microBatchLogprobs(ctx, micro.map(asTrainSequence), true, { temperature: 1, forBackward: true });
    if (!logp.every(Number.isFinite)) {
      ctx.trainable.discard();
      return { loss: NaN, tokens: numLossTokens, finite: false };
    }
    const r = sftLoss(logp, new Uint8Array(logp.length).fill(1), numLossTokens);
    await microBatchBackward(ctx, r.dLogp);
    loss += r.loss;
  }
  return { loss, tokens: numLossTokens, finite: true };
}

/** Mean NLL per assistant token over `data` with the current adapter (no gradients). */
export async function evaluateSft(ctx: TrainContext, data: readonly SftSequence[], perDevice: number): Promise<number> {
  let nll = 0;
  let tokens = 0;
  for (const micro of chunked(data, perDevice)) {
    const { logp } = await microBatchLogprobs(ctx, micro.map(asTrainSequence), true, { temperature: 1, forBackward: false });
    for (const x of logp) nll -= x;
    tokens += logp.length;
  }
  return tokens === 0 ? NaN : nll / tokens;
}
