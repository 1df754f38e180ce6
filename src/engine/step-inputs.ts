/**
 * One engine step's device work, its inputs read from the sequences when the step is launched.
 *
 * The engine renders step N's outputs while step N+1 runs (engine.ts), and rendering changes the
 * sequences: a stop string found then ends one and empties its block table. N+1's work may also
 * start later than its launch (a trainer's slice ahead of it in the device queue). So the tokens,
 * positions, block tables and sampling parameters are copied here, at launch, and the work reads
 * only the copies.
 */
import type { Backend, KvCache, SampleResult } from '../backend/backend.ts';
import { packBatch, type Transformer } from '../model/transformer.ts';
import { GraphCaptureError, type DecodeGraphs } from './decode-graphs.ts';
import type { ScheduledSeq, StepPlan } from './scheduler.ts';

export interface StepDevice {
  model: Transformer;
  backend: Backend;
  cache: KvCache;
  graphs: DecodeGraphs | null;
  blockSize: number;
}

/** The step's work for the device queue: one forward over the plan's batch, then sampling of the rows in sampleAt. */
export function prepareStep(d: StepDevice, plan: StepPlan, sampleAt: readonly number[]): () => Promise<SampleResult | null> {
  const params = sampleAt.map((i) => plan.scheduled[i].seq.samplingParams());
  if (d.graphs !== null && graphable(d.graphs, plan, sampleAt)) {
    const graphs = d.graphs;
    const rows = plan.scheduled.map(({ seq }) => ({ token: seq.tokens[seq.numComputed], position: seq.numComputed, blockTable: [...seq.blockTable] }));
    const lora = plan.scheduled[0].seq.adapter?.lora ?? null;
    return async () => {
      let logits;
      try {
        logits = graphs.run(rows, lora);
      } catch (err) {
        if (!(err instanceof GraphCaptureError)) throw err;
        // Unexpected (the budget reserves the largest graph's scratch): say so once, run eagerly.
        process.emitWarning(`${err.message}; this bucket runs eagerly from now on`, 'TandemCudaGraphs');
        const batch = packBatch(rows.map((r) => ({ newTokens: [r.token], numCached: r.position, blockTable: r.blockTable, lora })), d.blockSize);
        logits = d.model.forward(batch, d.cache);
      }
      return d.backend.sample(logits, params);
    };
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
  return async () => {
    const logits = d.model.forward(batch, d.cache);
    if (sampleAt.length === 0) return null;
    return d.backend.sample(logits, params);
  };
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
