/**
 * What one training job holds while it runs: the shared base model, the serving engine it
 * rolls out with, the device queue it takes turns on, the trainable model (training forward /
 * backward with its workspace) and the adapter's optimizer, plus the micro-batch runner that
 * both GRPO and SFT use.
 */
import type { DeviceQueue } from '../backend/device-queue.ts';
import type { Engine } from '../engine/engine.ts';
import type { LoadedModel } from '../model/load.ts';
import { packTrainBatch } from '../model/train-batch.ts';
import type { TrainBatch, TrainSequence } from '../model/train-batch.ts';
import type { SliceRunner, TrainableModel } from '../model/train-forward.ts';
import type { DeviceOptimizer } from './device-optimizer.ts';

export interface TrainContext {
  loaded: LoadedModel;
  engine: Engine;
  queue: DeviceQueue;
  trainable: TrainableModel;
  optimizer: DeviceOptimizer;
}

export function sliceRunner(ctx: TrainContext): SliceRunner {
  return <R>(work: () => R | Promise<R>) => ctx.queue.run(work);
}

/** Split items into consecutive groups of at most `size`. */
export function chunked<T>(items: readonly T[], size: number): T[][] {
  if (!Number.isInteger(size) || size < 1) throw new Error(`chunk size must be a positive integer, got ${size}`);
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Per-target log-probs of a packed micro-batch under the policy (lora) or the base model. */
export async function microBatchLogprobs(
  ctx: TrainContext,
  seqs: readonly TrainSequence[],
  withAdapter: boolean,
  opts: { temperature: number; forBackward: boolean },
): Promise<{ batch: TrainBatch; logp: Float32Array }> {
  const batch = packTrainBatch(seqs, ctx.loaded.config.vocabSize);
  const lora = withAdapter ? ctx.optimizer.lora : null;
  const logp = await ctx.trainable.forward(batch, lora, { ...opts, runSlice: sliceRunner(ctx) });
  return { batch, logp };
}

/** Backward of the last microBatchLogprobs(forBackward) given dLoss/dLogp per target. */
export function microBatchBackward(ctx: TrainContext, dLogp: Float32Array): Promise<void> {
  return ctx.trainable.backward(dLogp, ctx.optimizer.gradViews, sliceRunner(ctx));
}
