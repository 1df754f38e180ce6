/**
 * Async scheduling's rules (engine.ts): when the step after an in-flight one may be queued before
 * the in-flight step's ids are back, and how its tokens are fed from those ids on the device.
 */
import type { SamplingParams, Tensor } from '../backend/backend.ts';
import { hasPenalties } from '../backend/cpu/penalties.ts';
import type { KvBlockManager } from './kv-cache.ts';
import type { Scheduler, StepPlan } from './scheduler.ts';

/** A sampled id not back on the host yet (never a vocabulary id). */
export const PLACEHOLDER = -1;

/**
 * Top logprobs a row may ask for and still keep its ids on the device: every backend's device
 * sampler takes this many (the CUDA one up to 1024; OpenAI's API allows 20).
 */
export const KEEP_MAX_TOP_LOGPROBS = 20;

/** What the rules read of an in-flight step. */
export interface AheadStep {
  plan: StepPlan;
  /** Indices into plan.scheduled of the rows sampled, in the order of the result's rows. */
  sampleAt: readonly number[];
  /** Where the step keeps its ids on the device, or null. */
  keep: Tensor | null;
  /** Set once a step has been queued behind this one. */
  ahead: unknown;
}

/**
 * A row whose ids may stay on the device: the device sampler takes it. Penalised rows too (the
 * step after reads their last id from the device, pendingRows), where the backend samples
 * penalised rows of this vocabulary on the device (Backend.devicePenaltyVocab).
 */
export function keepable(p: SamplingParams, vocabSize: number, devicePenaltyVocab = Infinity): boolean {
  return (p.topLogprobs ?? 0) <= KEEP_MAX_TOP_LOGPROBS && (vocabSize <= devicePenaltyVocab || !hasPenalties(p));
}

/**
 * Whether the step after `prev` can be queued before prev's ids are back: prev keeps its ids on
 * the device, and every running sequence is one of prev's sampled rows and simply continues
 * (nothing waits to be admitted, so no prompt needs host tokens; none ends by length at prev;
 * each has its next block free, so nothing is preempted).
 */
export function canRunAhead(prev: AheadStep, scheduler: Scheduler, blocks: KvBlockManager): boolean {
  if (prev.keep === null || prev.ahead !== null) return false;
  if (scheduler.waiting.length > 0 || scheduler.running.length !== prev.sampleAt.length) return false;
  const bs = blocks.blockSize;
  let blocksNeeded = 0;
  for (const i of prev.sampleAt) {
    const { seq, numTokens } = prev.plan.scheduled[i];
    if (seq.status !== 'running' || seq.numOutputTokens + 1 >= seq.maxTokens) return false;
    // After prev: numComputed + numTokens computed, one more token (the placeholder) to run.
    blocksNeeded += Math.max(0, Math.ceil((seq.numComputed + numTokens + 1) / bs) - seq.blockTable.length);
  }
  return blocksNeeded <= blocks.numFree;
}

/**
 * Where each of prev's sampled rows feeds `plan`'s tokens: the index of its sequence's (single)
 * token in the packed batch, or -1 when the sequence is not in the plan.
 */
export function feedSlots(prev: AheadStep, plan: StepPlan): Int32Array {
  const at = new Map<object, number>();
  let offset = 0;
  for (const { seq, numTokens } of plan.scheduled) {
    at.set(seq, offset);
    offset += numTokens;
  }
  return Int32Array.from(prev.sampleAt, (i) => at.get(prev.plan.scheduled[i].seq) ?? -1);
}

/**
 * For a step queued behind `prev`: per sampled row (sampleAt order), the row of prev's kept ids
 * holding its sequence's last token, which the host has not seen yet (Backend.sample's pending),
 * or -1. Only penalised rows read it (their counts include every output token); null when no
 * sampled row has penalties, so the sampler gets nothing to look up.
 */
export function pendingRows(prev: AheadStep, plan: StepPlan, sampleAt: readonly number[]): Int32Array | null {
  if (!sampleAt.some((i) => hasPenalties(plan.scheduled[i].seq.sampling))) return null;
  const row = new Map<object, number>();
  prev.sampleAt.forEach((i, r) => row.set(prev.plan.scheduled[i].seq, r));
  return Int32Array.from(sampleAt, (i) => row.get(plan.scheduled[i].seq) ?? -1);
}
