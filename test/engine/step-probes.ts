/**
 * Probes the engine's step-order tests share (engine-overlap, engine-async): each wraps one method
 * to log or count its calls and returns a way to read the counts and undo the wrapping.
 */
import assert from 'node:assert/strict';
import type { Backend } from '../../src/backend/backend.ts';
import type { Engine } from '../../src/engine/engine.ts';
import type { GenerationRequest } from '../../src/engine/types.ts';
import { OutputProcessor } from '../../src/engine/output.ts';
import type { ForwardBatch } from '../../src/model/transformer.ts';
import { randomPrompt, request, seeded, type TinyModel } from './helpers.ts';

/** Log every OutputProcessor.push (the rendering of one token) until the returned undo is called. */
export function logRenders(log: string[], onPush: (n: number) => void = () => {}): () => void {
  const push = Object.getOwnPropertyDescriptor(OutputProcessor.prototype, 'push')!;
  let n = 0;
  OutputProcessor.prototype.push = function (this: OutputProcessor, sampled) {
    log.push('render');
    onPush(++n);
    return (push.value as OutputProcessor['push']).call(this, sampled);
  };
  return () => Object.defineProperty(OutputProcessor.prototype, 'push', push);
}

/**
 * Count forwards (eager steps), the rows they ran and those fed ids on the device (async
 * scheduling), until the returned undo is called.
 */
export function countForwards(m: TinyModel): { count: () => number; rows: () => number; fed: () => number; undo: () => void } {
  const model = m.loaded.model;
  const forward = model.forward.bind(model);
  let calls = 0;
  let rows = 0;
  let fed = 0;
  model.forward = (batch: ForwardBatch, cache) => {
    calls++;
    rows += batch.cuSeqlensQ.length - 1;
    if (batch.feed) fed++;
    return forward(batch, cache);
  };
  return { count: () => calls, rows: () => rows, fed: () => fed, undo: () => delete (model as { forward?: unknown }).forward };
}

/**
 * Count the steps queued ahead (each places the step before's ids into its tokens: one
 * placeRows) until the returned undo is called. Deterministic, unlike the order in which steps
 * start and land, which a loaded host can shift.
 */
export function countAhead(be: Backend): { count: () => number; undo: () => void } {
  const place = be.placeRows.bind(be);
  let n = 0;
  be.placeRows = (dst, src, slots) => {
    n++;
    place(dst, src, slots);
  };
  return { count: () => n, undo: () => delete (be as { placeRows?: unknown }).placeRows };
}

/** Nothing running or waiting, and every KV block back in the pool. */
export function assertIdle(engine: Engine): void {
  const s = engine.stats();
  assert.deepEqual([s.running, s.waiting, s.kvBlocksUsed], [0, 0, 0], 'every KV block is back in the pool');
}

/**
 * Four requests of different prompt lengths and priorities, greedy and seeded in turn, 24 tokens
 * each: the load the step-order tests run through chunked prefills and preemption.
 */
export function mixedRequests(): GenerationRequest[] {
  return [0, 1, 2, 3].map((i) => request(randomPrompt(10 + 3 * i, 300 + i), { maxTokens: 24, priority: i, sampling: i % 2 === 0 ? seeded(0, 0) : seeded(500 + i) }));
}
