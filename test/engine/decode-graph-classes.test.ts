// Short-context decode graphs (DecodeGraphs.shortContexts, TANDEM_SHORT_CONTEXT_GRAPHS): contexts
// up to a bound replay a graph captured for the smallest such maximum, longer ones the graph for the whole
// table; the tokens are those of eager steps either way. On emulated graphs (the CPU backend),
// whose attention checks the stated maximum against every row at each replay, so a short graph
// replayed past its bound would fail here.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Metrics } from '../../src/metrics.ts';
import { metricSum, metricValue } from '../metrics-text.ts';
import { DecodeGraphs, DEFAULT_SHORT_CONTEXTS, shortContextFromEnv } from '../../src/engine/decode-graphs.ts';
import { loadModel } from '../../src/model/load.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { GraphCpuBackend } from './emulated-graphs.ts';
import { collect, generateIds, makeEngine, randomPrompt, request } from './helpers.ts';

describe('short-context decode graphs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-graph-classes-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  makeModel({ preset: 'tiny', out: dir, seed: 4 });

  it('a step replays the short graph while every row fits the bound, then the long one; tokens as eager', async () => {
    const be = new GraphCpuBackend();
    const loaded = loadModel(dir, be);
    const prompts = [randomPrompt(6, 1), randomPrompt(9, 2)];
    const run = async (cudaGraphs: boolean, short: string | undefined, metrics?: Metrics): Promise<number[][]> => {
      const saved = process.env.TANDEM_SHORT_CONTEXT_GRAPHS;
      if (short === undefined) delete process.env.TANDEM_SHORT_CONTEXT_GRAPHS;
      else process.env.TANDEM_SHORT_CONTEXT_GRAPHS = short;
      try {
        // 20 tokens each: contexts run from the prompts past 16 (the bound) to 26 and 29.
        return await generateIds(loaded, { cudaGraphs, blockSize: 4, maxModelLen: 64, maxNumSeqs: 2, metrics }, prompts, { maxTokens: 20 });
      } finally {
        if (saved === undefined) delete process.env.TANDEM_SHORT_CONTEXT_GRAPHS;
        else process.env.TANDEM_SHORT_CONTEXT_GRAPHS = saved;
      }
    };
    const eager = await run(false, undefined);
    const before = be.graphs.capturedRows.length;
    const metrics = new Metrics({ processMetrics: false });
    assert.deepEqual(await run(true, '0', metrics), eager);
    const oneClass = be.graphs.capturedRows.length - before;
    // Every step after the prompts' chunk replays a graph, and the step-time metric says so.
    const text = await metrics.metricsText();
    assert.ok(metricValue(text, 'tandem_engine_step_seconds_count{kind="graph"}') >= 19, text);
    assert.equal(metricSum(text, 'tandem_engine_step_seconds_count'), metricValue(text, 'tandem_engine_step_seconds_count{kind="graph"}') + metricValue(text, 'tandem_engine_step_seconds_count{kind="prefill"}'));
    assert.deepEqual(await run(true, '16'), eager);
    const twoClasses = be.graphs.capturedRows.length - before - oneClass;
    // Bucket 2 (both rows decoding) gets a short and a long graph; without the bound one.
    assert.equal(twoClasses, oneClass + 1, `captures with the bound ${twoClasses}, without ${oneClass}`);
    // Two bounds: steps whose longest context is 10-12, 13-16 and 17+ tokens replay graphs of their own.
    assert.deepEqual(await run(true, '12,16'), eager);
    const threeClasses = be.graphs.capturedRows.length - before - oneClass - twoClasses;
    assert.ok(threeClasses > twoClasses, `captures with two bounds ${threeClasses}, with one ${twoClasses}`);
  });

  it('captureGraphs() captures every bucket and class up front: no capture while serving, tokens as eager', async () => {
    const be = new GraphCpuBackend();
    const loaded = loadModel(dir, be);
    const prompts = [randomPrompt(6, 1), randomPrompt(9, 2), randomPrompt(3, 3)];
    const opts = { blockSize: 4, maxModelLen: 64, maxNumSeqs: 3 };
    const eager = await generateIds(loaded, { ...opts, cudaGraphs: false }, prompts, { maxTokens: 20 });
    const saved = process.env.TANDEM_SHORT_CONTEXT_GRAPHS;
    process.env.TANDEM_SHORT_CONTEXT_GRAPHS = '16';
    const engine = makeEngine(loaded, { ...opts, cudaGraphs: true });
    try {
      const before = be.graphs.capturedRows.length;
      // Buckets 1, 2 and 4 (maxNumSeqs 3), each for contexts <= 16 and for the whole table.
      assert.equal(await engine.captureGraphs(), 6);
      assert.deepEqual(be.graphs.capturedRows.slice(before), [1, 1, 2, 2, 4, 4]);
      assert.equal(await engine.captureGraphs(), 0, 'a second call has nothing left to capture');
      const ids = (await Promise.all(prompts.map((p) => collect(engine.add(request(p, { maxTokens: 20 })))))).map((c) => c.ids);
      assert.deepEqual(ids, eager);
      assert.equal(be.graphs.capturedRows.length, before + 6, 'no capture during generation');
    } finally {
      if (saved === undefined) delete process.env.TANDEM_SHORT_CONTEXT_GRAPHS;
      else process.env.TANDEM_SHORT_CONTEXT_GRAPHS = saved;
      await engine.close();
    }
    // A bucket whose capture fails runs its steps eagerly; the others keep their graphs.
    be.graphs.failRows.add(2);
    const failing = makeEngine(loaded, { ...opts, cudaGraphs: true });
    try {
      await assert.rejects(failing.captureGraphs(), /decode graph for 2 rows/);
      const ids = (await Promise.all(prompts.map((p) => collect(failing.add(request(p, { maxTokens: 20 })))))).map((c) => c.ids);
      assert.deepEqual(ids, eager);
    } finally {
      be.graphs.failRows.delete(2);
      await failing.close();
    }
    const plain = makeEngine(loaded, { cudaGraphs: false });
    assert.equal(await plain.captureGraphs(), 0, 'without cudaGraphs: nothing to capture');
    await plain.close();
  });

  it('DecodeGraphs: classes per bucket, a bound as long as the tables means one class, bad bounds are errors', () => {
    const be = new GraphCpuBackend();
    const loaded = loadModel(dir, be);
    const cache = be.allocKvCache(loaded.model.kvCacheSpec(16, 4));
    try {
      const graphs = new DecodeGraphs(loaded.model, cache, { blockSize: 4, numBlocks: 16, maxModelLen: 32, maxNumSeqs: 2, shortContexts: [8] });
      assert.deepEqual(graphs.shortContexts, [8]);
      const rows = (position: number) => [{ token: 3, position, blockTable: [0, 1, 2, 3, 4, 5, 6, 7] }];
      assert.equal(graphs.lastClass, null);
      graphs.run(rows(5));
      assert.deepEqual(graphs.classesCaptured(1), [8, 32], 'the bound, and with it the whole table (8 blocks of 4)');
      const replayed = [6, 8, 2].map((p) => (graphs.run(rows(p)), graphs.lastClass)); // contexts 7, 9, 3
      assert.deepEqual(replayed, [8, 32, 8]);
      assert.deepEqual(graphs.classesCaptured(1), [8, 32], 'no capture after the first step');
      graphs.free();
      // Several bounds: the smallest that covers the longest row; a bound as long as the tables, 0
      // and repeats add no class.
      const tiered = new DecodeGraphs(loaded.model, cache, { blockSize: 4, numBlocks: 16, maxModelLen: 32, maxNumSeqs: 2, shortContexts: [16, 8, 0, 32, 8] });
      assert.deepEqual(tiered.shortContexts, [8, 16]);
      assert.deepEqual([1, 8, 9, 16, 17, 32].map((c) => tiered.contextClass(c)), [8, 8, 16, 16, 32, 32]);
      const two = [
        { token: 3, position: 2, blockTable: [0, 1, 2, 3, 4, 5, 6, 7] },
        { token: 4, position: 12, blockTable: [8, 9, 10, 11, 12, 13, 14, 15] },
      ];
      tiered.run(two); // the longer row (context 13) picks the class; the larger ones come with it
      tiered.run([two[0]]);
      assert.deepEqual([tiered.classesCaptured(2), tiered.classesCaptured(1)], [[16, 32], [8, 16, 32]]);
      tiered.free();
      assert.deepEqual(new DecodeGraphs(loaded.model, cache, { blockSize: 4, numBlocks: 16, maxModelLen: 32, maxNumSeqs: 2, shortContexts: [32] }).shortContexts, []);
      assert.throws(() => new DecodeGraphs(loaded.model, cache, { blockSize: 4, numBlocks: 16, maxModelLen: 32, maxNumSeqs: 2, shortContexts: [-1] }), /shortContexts/);
      assert.throws(() => new DecodeGraphs(loaded.model, cache, { blockSize: 4, numBlocks: 16, maxModelLen: 32, maxNumSeqs: 2, shortContexts: [8, 2.5] }), /shortContexts/);
      assert.deepEqual(shortContextFromEnv({}), [...DEFAULT_SHORT_CONTEXTS]);
      assert.deepEqual(shortContextFromEnv({ TANDEM_SHORT_CONTEXT_GRAPHS: '' }), []);
      assert.deepEqual(new DecodeGraphs(loaded.model, cache, { blockSize: 4, numBlocks: 16, maxModelLen: 32, maxNumSeqs: 2, shortContexts: shortContextFromEnv({ TANDEM_SHORT_CONTEXT_GRAPHS: '0' }) }).shortContexts, []);
      assert.deepEqual(shortContextFromEnv({ TANDEM_SHORT_CONTEXT_GRAPHS: '256' }), [256]);
      assert.deepEqual(shortContextFromEnv({ TANDEM_SHORT_CONTEXT_GRAPHS: '128, 1024' }), [128, 1024]);
      for (const bad of ['short', '128,', '-1', '1e400'])
        assert.throws(() => shortContextFromEnv({ TANDEM_SHORT_CONTEXT_GRAPHS: bad }), /TANDEM_SHORT_CONTEXT_GRAPHS/, bad);
    } finally {
      be.freeKvCache(cache);
    }
  });
});
