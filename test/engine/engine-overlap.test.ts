// Step overlap (engine.ts): step N+1 runs on the device while step N's rows are rendered. The
// order is checked by logging, not by timing; outputs must equal those of the sequential order
// (overlapSteps: false) token for token, event for event; a stop string found late drops its
// extra row; ends known from the id take no extra step; aborts, failures and adapter unpins hold.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Engine } from '../../src/engine/engine.ts';
import type { GenerationRequest, TokenEvent } from '../../src/engine/types.ts';
import { loadModel } from '../../src/model/load.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { uploadLora } from '../../src/model/lora-device.ts';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { GraphCpuBackend } from './emulated-graphs.ts';
import { ProbeQueue } from './probe-queue.ts';
import { assertIdle, countAhead, countForwards, logRenders, mixedRequests } from './step-probes.ts';
import { collect, makeEngine as makeAnyEngine, randomPrompt, request, seeded, tinyModel, trainedAdapter, type Collected, type TinyModel } from './helpers.ts';

/** A greedy run of this prompt gives 8 distinct tokens on the tiny model with seed 2. */
const PROMPT = randomPrompt(20, 1);

/** A token k >= 2 whose clean text first occurs where it stands: as a stop string, it ends the output at k. */
function stopToken(plain: Collected): number {
  const pieces = plain.events.map((e) => e.text);
  for (let k = 2, offset = pieces[0].length + pieces[1].length; k < pieces.length; offset += pieces[k++].length) {
    if (pieces[k].length > 0 && !pieces[k].includes('\uFFFD') && plain.text.indexOf(pieces[k]) === offset) return k;
  }
  throw new Error(`no token's text can be the stop string in ${JSON.stringify(pieces)}`);
}

/** Step overlap alone: async scheduling (engine-async.test.ts) changes the order and adds steps. */
function makeEngine(loaded: Parameters<typeof makeAnyEngine>[0], opts: Parameters<typeof makeAnyEngine>[1] = {}): Engine {
  return makeAnyEngine(loaded, { asyncScheduling: false, ...opts });
}

describe('engine step overlap', () => {
  let m: TinyModel;
  before(() => {
    m = tinyModel(2);
  });
  after(() => m.dispose());

  /** The same requests through an engine without overlap and one with it. */
  async function both(opts: Parameters<typeof makeEngine>[1], reqs: () => GenerationRequest[]): Promise<{ off: Collected[]; on: Collected[]; onEngine: Engine }> {
    const runWith = async (overlapSteps: boolean): Promise<{ got: Collected[]; engine: Engine }> => {
      const engine = makeEngine(m.loaded, { ...opts, overlapSteps });
      const got = await Promise.all(reqs().map((r) => collect(engine.add(r))));
      assertIdle(engine);
      return { got, engine };
    };
    const off = await runWith(false);
    await off.engine.close();
    const on = await runWith(true);
    await on.engine.close();
    return { off: off.got, on: on.got, onEngine: on.engine };
  }

  it("launches step N+1's device work before it renders step N's tokens (and not without overlap)", async () => {
    const orders: Record<string, string[]> = {};
    for (const overlapSteps of [false, true]) {
      const log: string[] = [];
      const engine = makeEngine(m.loaded, { overlapSteps, deviceQueue: new ProbeQueue(m.loaded.model.backend, log) });
      const undo = logRenders(log);
      try {
        const got = await collect(engine.add(request(PROMPT, { maxTokens: 4 })));
        assert.equal(got.ids.length, 4);
      } finally {
        undo();
      }
      orders[String(overlapSteps)] = log;
      await engine.close();
    }
    assert.deepEqual(orders.false, ['device 1', 'render', 'device 2', 'render', 'device 3', 'render', 'device 4', 'render']);
    // The 4th token ends the request by max_tokens: rendered at once, no 5th step.
    assert.deepEqual(orders.true, ['device 1', 'device 2', 'render', 'device 3', 'render', 'device 4', 'render', 'render']);
  });

  it('async scheduling is on by default only where the backend queues work; step overlap everywhere', async () => {
    // A cpu backend that claims to queue its work stands in for cuda (whose ops return at once).
    class QueuingCpuBackend extends CpuBackend {
      override readonly queuesWork: boolean = true;
    }
    const dir = mkdtempSync(join(tmpdir(), 'tandem-overlap-default-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    makeModel({ preset: 'tiny', out: dir, seed: 3 });
    const run = async (be: CpuBackend): Promise<{ log: string[]; ahead: number }> => {
      const loaded = loadModel(dir, be);
      const log: string[] = [];
      const ahead = countAhead(be);
      // No overlapSteps and no asyncScheduling: the defaults are under test.
      const engine = makeAnyEngine(loaded, { deviceQueue: new ProbeQueue(be, log) });
      const undo = logRenders(log);
      try {
        assert.equal((await collect(engine.add(request(PROMPT, { maxTokens: 4 })))).ids.length, 4);
      } finally {
        undo();
        await engine.close();
      }
      return { log, ahead: ahead.count() };
    };
    assert.equal(new CpuBackend().queuesWork, false);
    const cpu = await run(new CpuBackend());
    assert.deepEqual(cpu.log, ['device 1', 'device 2', 'render', 'device 3', 'render', 'device 4', 'render', 'render']);
    assert.equal(cpu.ahead, 0);
    const queued = await run(new QueuingCpuBackend());
    assert.deepEqual(queued.log.slice(0, 2), ['device 1', 'device 2'], queued.log.join(', '));
    assert.equal(queued.ahead, 3, 'each decode step queued behind the one before');
  });

  it('overlaps decode steps replayed as (emulated) CUDA graphs too, with the same tokens', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tandem-overlap-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    makeModel({ preset: 'tiny', out: dir, seed: 2 });
    const be = new GraphCpuBackend();
    const loaded = loadModel(dir, be);
    const run = async (cudaGraphs: boolean): Promise<{ log: string[]; ids: number[][] }> => {
      const log: string[] = [];
      const engine = makeEngine(loaded, { cudaGraphs, maxModelLen: 128, maxNumSeqs: 4, deviceQueue: new ProbeQueue(be, log, 1) });
      const undo = logRenders(log);
      try {
        const got = await Promise.all([PROMPT, randomPrompt(9, 3)].map((p) => collect(engine.add(request(p, { maxTokens: 5 })))));
        return { log, ids: got.map((g) => g.ids) };
      } finally {
        undo();
        await engine.close();
      }
    };
    const eager = await run(false);
    const graphed = await run(true);
    assert.deepEqual(be.graphs.capturedRows, [2], 'the decode steps ran as the batch-2 graph');
    assert.deepEqual(graphed.ids, eager.ids);
    const twoRenders = ['render', 'render'];
    assert.deepEqual(graphed.log, ['device 1', 'device 2', ...twoRenders, 'device 3', ...twoRenders, 'device 4', ...twoRenders, 'device 5', ...twoRenders, ...twoRenders]);
  });

  it("a step's work that starts after the rendering reads its inputs as they were at launch (graphs and eager)", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tandem-overlap-'));
    after(() => rmSync(dir, { recursive: true, force: true }));
    makeModel({ preset: 'tiny', out: dir, seed: 2 });
    const be = new GraphCpuBackend();
    const loaded = loadModel(dir, be);
    const plainEngine = makeEngine(loaded);
    const plain = await collect(plainEngine.add(request(PROMPT, { maxTokens: 12 })));
    await plainEngine.close();
    const stop = plain.events[stopToken(plain)].text;
    const reqs = (): GenerationRequest[] => [
      request(PROMPT, { maxTokens: 12, stop: { strings: [stop], tokenIds: [], ignoreEos: true } }),
      request(randomPrompt(9, 3), { maxTokens: 12, sampling: { ...seeded(7), repetitionPenalty: 1.3 } }),
      request(randomPrompt(5, 4), { maxTokens: 12, sampling: seeded(8) }),
    ];
    const run = async (cudaGraphs: boolean, overlapSteps: boolean): Promise<TokenEvent[][]> => {
      // Blocks of 1 token: every step grows each block table.
      const engine = makeEngine(loaded, { cudaGraphs, overlapSteps, blockSize: 1, maxModelLen: 64, maxNumSeqs: 4, deviceQueue: new ProbeQueue(be, [], 0, 1) });
      try {
        return (await Promise.all(reqs().map((r) => collect(engine.add(r))))).map((c) => c.events);
      } finally {
        assertIdle(engine);
        await engine.close();
      }
    };
    const expected = await run(false, false);
    assert.equal(expected[0].at(-1)!.stopReason, stop);
    assert.deepEqual(await run(false, true), expected);
    assert.deepEqual(await run(true, true), expected);
    assert.ok(be.graphs.capturedRows.length > 0);
  });

  it('gives the same events with and without overlap: greedy, seeded, logprobs, penalties, stop strings, eos', async () => {
    const plain = await collect(makeEngine(m.loaded).add(request(PROMPT, { maxTokens: 12 })));
    const stopText = plain.text.slice(6, 8);
    assert.equal(stopText.length, 2);
    const reqs = (): GenerationRequest[] => [
      request(PROMPT, { maxTokens: 12 }),
      request(randomPrompt(7, 2), { maxTokens: 16, sampling: seeded(11), logprobs: 2 }),
      request(randomPrompt(30, 3), { maxTokens: 9, sampling: { ...seeded(12, 0.8), topK: 20, topP: 0.9, presencePenalty: 0.5, repetitionPenalty: 1.2 } }),
      request(PROMPT, { maxTokens: 12, stop: { strings: [stopText], tokenIds: [], ignoreEos: true } }),
      request(randomPrompt(12, 4), { maxTokens: 40, sampling: seeded(13, 1.5), stop: { strings: [], tokenIds: [], ignoreEos: false } }),
      request(randomPrompt(3, 5), { maxTokens: 1 }),
    ];
    const { off, on } = await both({}, reqs);
    assert.deepEqual(on.map((c) => c.events), off.map((c) => c.events));
    // The non-streamed view (what a non-stream response sends) follows; check the runs meant something.
    assert.equal(on[3].final.stopReason, stopText);
    assert.ok(on[3].ids.length < 12);
    assert.deepEqual(on.map((c) => c.final.usage!.completionTokens), off.map((c) => c.ids.length));
  });

  it('gives the same events with chunked prefills and with preemption', async () => {
    const reqs = mixedRequests;
    const chunked = await both({ blockSize: 4, maxNumBatchedTokens: 8 }, reqs);
    assert.deepEqual(chunked.on.map((c) => c.events), chunked.off.map((c) => c.events));
    // 14 blocks of 4 hold about one request: they keep preempting each other.
    const tight = await both({ blockSize: 4, numBlocks: 14 }, reqs);
    assert.deepEqual(tight.on.map((c) => c.events), tight.off.map((c) => c.events));
    assert.deepEqual(tight.on.map((c) => c.ids), chunked.on.map((c) => c.ids));
    const preemptions = (await tight.onEngine.metrics.preemptions.get()).values[0].value;
    assert.ok(preemptions > 0, 'the tiny pool should have forced preemption');
  });

  it('a stop string found one step late: same text and usage, the extra token never sent, its blocks freed', async () => {
    const plain = await collect(makeEngine(m.loaded).add(request(PROMPT, { maxTokens: 16 })));
    const pieces = plain.events.map((e) => e.text);
    const k = stopToken(plain);
    const cut = pieces.slice(0, k).join('').length;
    const stopped = (): GenerationRequest => request(PROMPT, { maxTokens: 16, stop: { strings: [pieces[k]], tokenIds: [], ignoreEos: true } });
    const other = randomPrompt(13, 9);
    const alone = await collect(makeEngine(m.loaded).add(request(other, { maxTokens: 16 })));

    const forwards: Record<string, number> = {};
    const results: Record<string, Collected[]> = {};
    for (const overlapSteps of [false, true]) {
      // Blocks of 1 token: the late step takes a block of its own, which must come back.
      const engine = makeEngine(m.loaded, { blockSize: 1, numBlocks: 128, overlapSteps });
      const count = countForwards(m);
      try {
        results[String(overlapSteps)] = [await collect(engine.add(stopped()))];
        forwards[String(overlapSteps)] = count.count();
        assertIdle(engine);
        // Beside a request that goes on: it is not disturbed by the dropped row.
        results[String(overlapSteps)].push(...(await Promise.all([collect(engine.add(stopped())), collect(engine.add(request(other, { maxTokens: 16 })))])));
        assertIdle(engine);
      } finally {
        count.undo();
      }
      await engine.close();
    }
    const got = results.true[0];
    assert.equal(got.text, plain.text.slice(0, cut));
    assert.deepEqual(got.ids, plain.ids.slice(0, k + 1));
    assert.equal(got.final.finishReason, 'stop');
    assert.equal(got.final.usage!.completionTokens, k + 1);
    assert.deepEqual(results.true.map((c) => c.events), results.false.map((c) => c.events));
    assert.deepEqual(results.true[2].ids, alone.ids);
    assert.equal(forwards.false, k + 1);
    assert.equal(forwards.true, k + 2, 'with overlap the step after the stop ran, and its row was dropped');
  });

  it('max_tokens, stop token ids and eos end without an extra step', async () => {
    const plain = await collect(makeEngine(m.loaded).add(request(PROMPT, { maxTokens: 12 })));
    const j = plain.ids.findIndex((id, i) => i >= 3 && plain.ids.indexOf(id) === i);
    const engine = makeEngine(m.loaded);
    const count = countForwards(m);
    const tokenizer = m.loaded.tokenizer as { eosTokenIds: readonly number[] };
    const eos = tokenizer.eosTokenIds;
    try {
      const byLength = await collect(engine.add(request(PROMPT, { maxTokens: 5 })));
      assert.equal(byLength.final.finishReason, 'length');
      assert.equal(count.count(), 5, 'max_tokens 5: the prefill and 4 decodes');

      const byStopId = await collect(engine.add(request(PROMPT, { maxTokens: 12, stop: { strings: [], tokenIds: [plain.ids[j]], ignoreEos: true } })));
      assert.deepEqual([byStopId.final.finishReason, byStopId.final.stopReason, byStopId.ids.length], ['stop', plain.ids[j], j + 1]);
      assert.equal(count.count(), 5 + j + 1);

      tokenizer.eosTokenIds = [plain.ids[j]]; // read by add(): this request's eos
      const byEos = await collect(engine.add(request(PROMPT, { maxTokens: 12, stop: { strings: [], tokenIds: [], ignoreEos: false } })));
      assert.deepEqual([byEos.final.finishReason, byEos.final.stopReason, byEos.ids.length], ['stop', null, j + 1]);
      assert.equal(count.count(), 5 + 2 * (j + 1));
    } finally {
      tokenizer.eosTokenIds = eos;
      count.undo();
    }
    assertIdle(engine);
    await engine.close();
  });

  it('an abort while the next step is in flight: nothing more is sent, usage counts what was sent', async () => {
    const engine = makeEngine(m.loaded, { deviceQueue: new ProbeQueue(m.loaded.model.backend, [], 2) });
    const plain = await collect(makeEngine(m.loaded).add(request(PROMPT, { maxTokens: 40 })));
    const req = request(PROMPT, { maxTokens: 40 });
    const events: TokenEvent[] = [];
    for await (const e of engine.add(req)) {
      events.push(e);
      if (events.length === 3) {
        engine.abort(req.requestId);
        assertIdle(engine);
      }
    }
    assert.equal(events.length, 4);
    assert.deepEqual(events[3], { tokenIds: [], text: '', finishReason: 'abort', stopReason: null, usage: { promptTokens: 20, completionTokens: 3, cachedPromptTokens: 0 } });
    assert.deepEqual(events.flatMap((e) => e.tokenIds), plain.ids.slice(0, 3));
    const next = await collect(engine.add(request(PROMPT, { maxTokens: 6 })));
    assert.deepEqual(next.ids, plain.ids.slice(0, 6), 'the engine goes on');
    assertIdle(engine);
    await engine.close();
  });

  it('an abort between a token landing and its rendering: that token is never sent nor counted', async () => {
    const queue = new ProbeQueue(m.loaded.model.backend);
    const engine = makeEngine(m.loaded, { deviceQueue: queue });
    const plain = await collect(makeEngine(m.loaded).add(request(PROMPT, { maxTokens: 40 })));
    const req = request(PROMPT, { maxTokens: 40 });
    // Step 5 starts when step 4's token has landed and before it is rendered.
    queue.onStart = (step) => step === 5 && engine.abort(req.requestId);
    const got = await collect(engine.add(req));
    assert.deepEqual(got.ids, plain.ids.slice(0, 3));
    assert.deepEqual(got.final, { tokenIds: [], text: '', finishReason: 'abort', stopReason: null, usage: { promptTokens: 20, completionTokens: 3, cachedPromptTokens: 0 } });
    await engine.drain(); // the loop has rendered what it had landed
    assert.equal((await engine.metrics.generationTokens.get()).values[0].value, 3, 'nor rendered after the abort');
    assertIdle(engine);
    await engine.close();
  });

  it('a failing step fails its requests after the previous step was rendered; the engine goes on', async () => {
    const engine = makeEngine(m.loaded, { deviceQueue: new ProbeQueue(m.loaded.model.backend, [], 1) });
    const model = m.loaded.model;
    const forward = model.forward.bind(model);
    let calls = 0;
    model.forward = (batch, cache) => {
      if (++calls === 3) throw new Error('injected forward failure');
      return forward(batch, cache);
    };
    const events: TokenEvent[] = [];
    try {
      await assert.rejects(async () => {
        for await (const e of engine.add(request(PROMPT, { maxTokens: 8 }))) events.push(e);
      }, /injected forward failure/);
    } finally {
      delete (model as { forward?: unknown }).forward;
    }
    assert.equal(events.length, 2, "the tokens of steps 1 and 2 were sent, then step 3's failure");
    assertIdle(engine);
    // A failure while rendering fails that request too; a request beside it goes on.
    const undo = logRenders([], (n) => {
      if (n === 5) throw new Error('injected render failure');
    });
    try {
      const [a, b] = [engine.add(request(PROMPT, { maxTokens: 8 })), engine.add(request(randomPrompt(9, 3), { maxTokens: 8 }))];
      const results = await Promise.allSettled([collect(a), collect(b)]);
      assert.equal(results.filter((r) => r.status === 'rejected').length, 1);
      assert.match(String((results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason), /injected render failure/);
      const ok = results.find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<Collected>;
      assert.equal(ok.value.ids.length, 8);
    } finally {
      undo();
    }
    assertIdle(engine);
    await engine.close();
  });

  it('an adapter version let go by a stop string found late is unpinned only once the step in flight is over', async () => {
    const queue = new ProbeQueue(m.loaded.model.backend, [], 2);
    const engine = makeEngine(m.loaded, { deviceQueue: queue });
    const publish = (seed: number) => engine.adapters.publish('x', uploadLora(m.loaded.model.backend, m.loaded.config, trainedAdapter(m.loaded.config, seed)));
    const v1 = publish(5);
    const prompt = randomPrompt(20, 2);
    const plain = await collect(engine.add(request(prompt, { maxTokens: 12, adapter: 'x' })));
    const k = stopToken(plain);
    const it_ = engine.add(request(prompt, { maxTokens: 12, adapter: 'x', stop: { strings: [plain.events[k].text], tokenIds: [], ignoreEos: true } }))[Symbol.asyncIterator]();
    const first = await it_.next();
    assert.equal(first.done, false);
    publish(6); // v1 is retired, pinned by the running request only
    assert.equal(v1.state, 'retired');
    let final: TokenEvent | undefined;
    for (let r = await it_.next(); !r.done; r = await it_.next()) {
      if (r.value.finishReason) {
        final = r.value;
        // The step after the stop (launched before the stop was seen) is still in flight.
        assert.equal(v1.state, 'retired', 'not freed while a launched step may read it');
      }
    }
    assert.equal(final?.stopReason, plain.events[k].text);
    await engine.drain();
    assert.equal(v1.state, 'freed');
    assert.equal(v1.refs, 0);
    await engine.close();
  });
});
