// Async scheduling (engine.ts): while step N runs, step N+1 is queued behind it with its tokens
// read from N's ids on the device. Checked by counting the steps that read their tokens that way;
// outputs must equal the sequential order's (overlapSteps: false) event for event, on eager and
// (emulated) graph steps; the wasted step after an eos/stop id drops its row and its blocks come
// back; max_tokens takes no extra step; penalised rows count the pending id on the device; waiting
// requests and full pools turn it off;
// prefix-cache hashes of generated blocks are those of the real ids.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../../src/engine/engine.ts';
import type { GenerationRequest } from '../../src/engine/types.ts';
import { loadModel } from '../../src/model/load.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { uploadLora } from '../../src/model/lora-device.ts';
import { GraphCpuBackend } from './emulated-graphs.ts';
import { assertIdle, countAhead, countForwards, mixedRequests } from './step-probes.ts';
import { collect, makeEngine as makeAnyEngine, randomPrompt, request, seeded, tinyModel, trainedAdapter, type Collected, type TinyModel } from './helpers.ts';
import { ProbeQueue } from './probe-queue.ts';

/** Async scheduling on, whatever the backend's default (the cpu backend's is off). */
function makeEngine(loaded: Parameters<typeof makeAnyEngine>[0], opts: Parameters<typeof makeAnyEngine>[1] = {}): Engine {
  return makeAnyEngine(loaded, { asyncScheduling: true, ...opts });
}

const PROMPT = randomPrompt(20, 1);

describe('engine async scheduling', () => {
  let m: TinyModel;
  before(() => {
    m = tinyModel(2);
  });
  after(() => m.dispose());

  /** The same requests one step after the other (no overlap) and with async scheduling. */
  async function both(opts: Parameters<typeof makeEngine>[1], reqs: () => GenerationRequest[]): Promise<{ off: Collected[]; on: Collected[]; log: string[]; ahead: number }> {
    const run = async (overlapSteps: boolean, log: string[]): Promise<Collected[]> => {
      const engine = makeEngine(m.loaded, { ...opts, overlapSteps, deviceQueue: new ProbeQueue(m.loaded.model.backend, log, 1) });
      try {
        const got = await Promise.all(reqs().map((r) => collect(engine.add(r))));
        assertIdle(engine);
        return got;
      } finally {
        await engine.close();
      }
    };
    const log: string[] = [];
    const off = await run(false, []);
    const ahead = countAhead(m.loaded.model.backend);
    try {
      const on = await run(true, log);
      return { off, on, log, ahead: ahead.count() };
    } finally {
      ahead.undo();
    }
  }

  it('queues each decode step before the one ahead of it has landed, with the same tokens', async () => {
    const { off, on, log, ahead } = await both({}, () => [request(PROMPT, { maxTokens: 12 })]);
    assert.deepEqual(on.map((c) => c.events), off.map((c) => c.events));
    assert.equal(on[0].ids.length, 12);
    // 12 tokens: the prefill and 11 decodes, each decode queued while the step before it ran.
    assert.ok(log.includes('device 12') && !log.includes('device 13'), `max_tokens takes no extra step: ${log.join(', ')}`);
    assert.equal(ahead, 11);
  });

  it('gives the same events as the sequential order: greedy, seeded, logprobs, stop strings, eos, max_tokens 1, penalties', async () => {
    const plain = await collect(makeEngine(m.loaded).add(request(PROMPT, { maxTokens: 12 })));
    const stopText = plain.text.slice(6, 8);
    const reqs = (): GenerationRequest[] => [
      request(PROMPT, { maxTokens: 12 }),
      request(randomPrompt(7, 2), { maxTokens: 16, sampling: seeded(11), logprobs: 2 }),
      request(PROMPT, { maxTokens: 12, stop: { strings: [stopText], tokenIds: [], ignoreEos: true } }),
      request(randomPrompt(12, 4), { maxTokens: 40, sampling: seeded(13, 1.5), stop: { strings: [], tokenIds: [], ignoreEos: false } }),
      request(randomPrompt(3, 5), { maxTokens: 1 }),
    ];
    const plainRun = await both({}, reqs);
    assert.deepEqual(plainRun.on.map((c) => c.events), plainRun.off.map((c) => c.events));
    assert.ok(plainRun.ahead > 5, `${plainRun.ahead} steps queued ahead`);
    assert.equal(plainRun.on[2].final.stopReason, stopText);
    assert.deepEqual(plainRun.on.map((c) => c.final.usage!.completionTokens), plainRun.off.map((c) => c.ids.length));
    // A penalised request beside them: its tokens depend on every output id, the last one read
    // on the device (sample()'s pending), so its steps are queued ahead too, with the same tokens.
    const penalised = (): GenerationRequest[] => [
      ...reqs(),
      request(randomPrompt(30, 3), { maxTokens: 30, sampling: { ...seeded(12, 0.8), topK: 20, topP: 0.9, presencePenalty: 0.5, repetitionPenalty: 1.2 } }),
    ];
    const withPenalty = await both({}, penalised);
    assert.deepEqual(withPenalty.on.map((c) => c.events), withPenalty.off.map((c) => c.events));
    const alone = await both({}, () => [penalised()[5]]);
    assert.deepEqual(alone.on[0].events, alone.off[0].events);
    assert.equal(alone.ahead, 29, 'every step after the first queued ahead');
  });

  it('gives the same events with chunked prefills, a token budget below the running count, and preemption', async () => {
    const reqs = mixedRequests;
    const chunked = await both({ blockSize: 4, maxNumBatchedTokens: 8 }, reqs);
    assert.deepEqual(chunked.on.map((c) => c.events), chunked.off.map((c) => c.events));
    // 3 tokens a step for 4 running sequences: one of them waits each step, its id placed late.
    const budget = await both({ blockSize: 4, maxNumBatchedTokens: 3 }, reqs);
    assert.deepEqual(budget.on.map((c) => c.events), chunked.off.map((c) => c.events));
    // 14 blocks of 4 hold about one request: they keep preempting each other.
    const tight = await both({ blockSize: 4, numBlocks: 14 }, reqs);
    assert.deepEqual(tight.on.map((c) => c.events), chunked.off.map((c) => c.events));
    for (const run of [chunked, budget]) assert.ok(run.ahead > 10, `${run.ahead} steps queued ahead`);
  });

  it('eos and stop ids waste one step whose row is dropped; max_tokens wastes none; blocks come back', async () => {
    const plain = await collect(makeEngine(m.loaded).add(request(PROMPT, { maxTokens: 12 })));
    const j = plain.ids.findIndex((id, i) => i >= 3 && plain.ids.indexOf(id) === i);
    // Blocks of 1 token: the wasted step takes a block of its own, which must come back.
    const engine = makeEngine(m.loaded, { blockSize: 1, numBlocks: 128 });
    const count = countForwards(m);
    try {
      const byLength = await collect(engine.add(request(PROMPT, { maxTokens: 5 })));
      assert.deepEqual(byLength.ids, plain.ids.slice(0, 5));
      assert.equal(count.count(), 5, 'max_tokens 5: the prefill and 4 decodes');
      assert.equal(count.fed(), 4, 'each decode read its token on the device');
      assertIdle(engine);
      const byStopId = await collect(engine.add(request(PROMPT, { maxTokens: 12, stop: { strings: [], tokenIds: [plain.ids[j]], ignoreEos: true } })));
      assert.deepEqual([byStopId.final.finishReason, byStopId.final.stopReason, byStopId.ids], ['stop', plain.ids[j], plain.ids.slice(0, j + 1)]);
      assert.equal(byStopId.final.usage!.completionTokens, j + 1);
      assert.equal(count.count(), 5 + j + 2, 'the step after the stop id ran, and its row was dropped');
      assertIdle(engine);
    } finally {
      count.undo();
    }
    await engine.close();
  });

  it('decode steps replayed as (emulated) CUDA graphs read the fed ids too', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tandem-async-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    makeModel({ preset: 'tiny', out: dir, seed: 2 });
    const be = new GraphCpuBackend();
    const loaded = loadModel(dir, be);
    const reqs = (): GenerationRequest[] => [
      request(PROMPT, { maxTokens: 9 }),
      request(randomPrompt(9, 3), { maxTokens: 14, sampling: seeded(4) }),
      request(randomPrompt(5, 4), { maxTokens: 11, sampling: seeded(5, 0.7), logprobs: 1 }),
    ];
    const run = async (cudaGraphs: boolean, overlapSteps: boolean): Promise<{ got: Collected[]; log: string[] }> => {
      const log: string[] = [];
      // Blocks of 2 tokens: block tables grow while steps are queued ahead.
      const engine = makeEngine(loaded, { cudaGraphs, overlapSteps, blockSize: 2, maxModelLen: 64, maxNumSeqs: 4, deviceQueue: new ProbeQueue(be, log, 1) });
      try {
        const got = await Promise.all(reqs().map((r) => collect(engine.add(r))));
        assertIdle(engine);
        return { got, log };
      } finally {
        await engine.close();
      }
    };
    const expected = (await run(false, false)).got.map((c) => c.events);
    const ahead = countAhead(be);
    const graphed = await run(true, true);
    ahead.undo();
    assert.deepEqual(graphed.got.map((c) => c.events), expected);
    assert.ok(be.graphs.capturedRows.length > 0, 'decode steps ran as graphs');
    assert.ok(ahead.count() > 8, `${ahead.count()} steps queued ahead`);
  });

  it('generated blocks enter the prefix cache under their real ids', async () => {
    const engine = makeEngine(m.loaded, { blockSize: 4 });
    const first = await collect(engine.add(request(PROMPT, { maxTokens: 24 })));
    // A follow-up whose prompt is the first prompt and 16 of its tokens: 36 tokens, 9 full blocks cached.
    const followUp = await collect(engine.add(request([...PROMPT, ...first.ids.slice(0, 16)], { maxTokens: 4 })));
    assert.equal(followUp.final.usage!.cachedPromptTokens, 32, 'the last block is recomputed (its last token must run)');
    const sequential = makeEngine(m.loaded, { blockSize: 4, overlapSteps: false });
    const want = await collect(sequential.add(request([...PROMPT, ...first.ids.slice(0, 16)], { maxTokens: 4 })));
    assert.deepEqual(followUp.ids, want.ids);
    assertIdle(engine);
    await Promise.all([engine.close(), sequential.close()]);
  });

  it('an abort with two steps queued: nothing more is sent, the engine goes on', async () => {
    const engine = makeEngine(m.loaded, { deviceQueue: new ProbeQueue(m.loaded.model.backend, [], 2) });
    const plain = await collect(makeEngine(m.loaded).add(request(PROMPT, { maxTokens: 40 })));
    const req = request(PROMPT, { maxTokens: 40 });
    const ids: number[] = [];
    let final;
    for await (const e of engine.add(req)) {
      ids.push(...e.tokenIds);
      if (ids.length === 3 && !e.finishReason) engine.abort(req.requestId);
      if (e.finishReason) final = e;
    }
    assert.deepEqual(ids, plain.ids.slice(0, 3));
    assert.equal(final?.finishReason, 'abort');
    assert.equal(final?.usage?.completionTokens, 3);
    const next = await collect(engine.add(request(PROMPT, { maxTokens: 6 })));
    assert.deepEqual(next.ids, plain.ids.slice(0, 6), 'the engine goes on');
    await engine.drain();
    assertIdle(engine);
    await engine.close();
  });

  it('steps on an adapter are queued ahead too, with the same tokens', async () => {
    const run = async (overlapSteps: boolean, log: string[]): Promise<Collected[]> => {
      const engine = makeEngine(m.loaded, { overlapSteps, deviceQueue: new ProbeQueue(m.loaded.model.backend, log, 1) });
      engine.adapters.publish('x', uploadLora(m.loaded.model.backend, m.loaded.config, trainedAdapter(m.loaded.config, 5)));
      try {
        return await Promise.all([
          collect(engine.add(request(PROMPT, { maxTokens: 10, adapter: 'x' }))),
          collect(engine.add(request(randomPrompt(8, 6), { maxTokens: 10, adapter: 'x', sampling: seeded(9) }))),
          collect(engine.add(request(randomPrompt(8, 7), { maxTokens: 10 }))),
        ]);
      } finally {
        await engine.close();
      }
    };
    const off = await run(false, []);
    const ahead = countAhead(m.loaded.model.backend);
    const on = await run(true, []);
    ahead.undo();
    assert.deepEqual(on.map((c) => c.events), off.map((c) => c.events));
    assert.ok(ahead.count() > 5, `${ahead.count()} steps queued ahead`);
  });
});
