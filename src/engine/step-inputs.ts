/**
 * One engine step's device work, its inputs read from the sequences when the step is launched.
 *
 * The engine renders step N's outputs while step N+1 runs (engine.ts), and rendering changes the
 * sequences: a stop string found then ends one and empties its block table. N+1's work may also
 * start later than its launch (a trainer's slice ahead of it in the device queue). So the tokens,
 * positions, block tables and sampling parameters are copied here, at launch, and the work reads
 * only the copies.
 */
import type { Backend, KvCache, PendingTokens, SampleResult, SamplingParams, Tensor } from '../backend/backend.ts';
import { packBatch, type TokenFeed, type Transformer } from '../model/transformer.ts';
import { GraphCaptureError, type DecodeGraphs } from './decode-graphs.ts';
import type { ScheduledSeq, StepPlan } from './scheduler.ts';
import type { StepKind } from './types.ts';

export interface StepDevice {
  model: Transformer;
  backend: Backend;
  cache: KvCache;
  graphs: DecodeGraphs | null;
  blockSize: number;
}

/** How a step's ids meet the device: a feed from the step before, a tensor to keep its own in. */
export interface StepIds {
  /** Tokens of this step that are the previous step's ids on the device (placeholders on the host). */
  feed?: TokenFeed;
  /** Keep this step's sampled ids here on the device (sample()'s keepIds), for a step launched after it. */
  keep?: Tensor;
  /** Penalised rows' last ids, still on the device (sample()'s pending). */
  pending?: PendingTokens;
}

/**
 * The step's queued work: what the device queue runs is only the queuing (forward, sample, the
 * ids' download), so the slice ends before the ids are back and the next step can be queued
 * behind it; `pending` resolves with the ids.
 */
export type StepWork = () => { pending: Promise<SampleResult | null> };

/** A step's queued work and what kind of step it is. */
export interface PreparedStep {
  run: StepWork;
  kind: StepKind;
}

/** The kind of an eager step: rows of one token are decodes, longer ones prefill chunks. */
function eagerKind(plan: StepPlan): StepKind {
  const decodes = plan.scheduled.filter((s) => s.numTokens === 1).length;
  return decodes === plan.scheduled.length ? 'decode' : decodes === 0 ? 'prefill' : 'mixed';
}

/**
 * The step's work for the device queue: one forward over the plan's batch, then sampling of the
 * rows in sampleAt under `params` (one per sampled row, read from the sequences at launch).
 */
export function prepareStep(
  d: StepDevice, plan: StepPlan, sampleAt: readonly number[], params: readonly SamplingParams[], ids: StepIds = {},
): PreparedStep {
  const { feed, keep, pending } = ids;
  const sample = (logits: Tensor): Promise<SampleResult> => d.backend.sample(logits, params, keep, pending);
  if (d.graphs !== null && graphable(d.graphs, plan, sampleAt)) {
    const graphs = d.graphs;
    const rows = plan.scheduled.map(({ seq }) => ({ token: seq.tokens[seq.numComputed], position: seq.numComputed, blockTable: [...seq.blockTable] }));
    const lora = plan.scheduled[0].seq.adapter?.lora ?? null;
    const run = (): ReturnType<StepWork> => {
      let logits;
      try {
        logits = graphs.run(rows, lora, feed);
      } catch (err) {
        if (!(err instanceof GraphCaptureError)) throw err;
        // Unexpected (the budget reserves the largest graph's scratch): say so once, run eagerly.
        process.emitWarning(`${err.message}; this bucket runs eagerly from now on`, 'TandemCudaGraphs');
        const batch = packBatch(rows.map((r) => ({ newTokens: [r.token], numCached: r.position, blockTable: r.blockTable, lora })), d.blockSize);
        if (feed) batch.feed = feed;
        logits = d.model.forward(batch, d.cache);
      }
      return { pending: sample(logits) };
    };
    // (A capture that fails falls back to eager above, once per bucket: still counted a graph step.)
    return { run, kind: 'graph' };
  }
  // packBatch copies into typed arrays (host memory): a snapshot already.
  const batch = packBatch(
    plan.scheduled.map(({ seq, numTokens }) => ({
      newTokens: seq.tokens.slice(seq.numComputed, seq.numComputed + numTokens),
      numCached: seq.numComputed,
      blockTable: seq.blockTable,
      lora: seq.adapter?.lora ?? null,
    })),
    d.blockSize,
  );
  // packBatch gives one logit row per sequence (its last new token); a prefill chunk that is
  // not the last needs none. With no row to sample, keep one so the lm head sees a batch.
  const rows = sampleAt.length > 0 ? sampleAt : [0];
  batch.logitRows = Int32Array.from(rows, (i) => batch.logitRows[i]);
  if (feed) batch.feed = feed;
  const run = (): ReturnType<StepWork> => {
    const logits = d.model.forward(batch, d.cache);
    return { pending: sampleAt.length === 0 ? Promise.resolve(null) : sample(logits) };
  };
  return { run, kind: eagerKind(plan) };
}

/**
 * A step a decode graph can run: one sampled token per sequence, within the buckets, every row
 * on one adapter version (or all on the base model).
 */
function graphable(graphs: DecodeGraphs, plan: StepPlan, sampleAt: readonly number[]): boolean {
  const n = plan.scheduled.length;
  const lora = plan.scheduled[0].seq.adapter?.lora ?? null;
  if (sampleAt.length !== n || !graphs.canRun(n, lora)) return false;
  return plan.scheduled.every(({ seq, numTokens }) => numTokens === 1 && (seq.adapter?.lora ?? null) === lora);
}

/**
 * The batch with the sequences of each adapter version side by side, base-model rows first: a
 * stable sort, so the scheduler's order holds within each group (which sequences run was
 * decided by the scheduler; the order inside a batch changes no output).
 */
export function groupByAdapter(scheduled: ScheduledSeq[]): ScheduledSeq[] {
  const key = (s: ScheduledSeq): string => s.seq.adapter?.id ?? '';
  return [...scheduled].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}
