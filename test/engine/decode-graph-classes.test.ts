// Short-context decode graphs (DecodeGraphs.shortContext, TANDEM_SHORT_CONTEXT_GRAPHS): contexts
// up to the bound replay a graph captured for that maximum, longer ones the graph for the whole
// table; the tokens are those of eager steps either way. On emulated graphs (the CPU backend),
// whose attention checks the stated maximum against every row at each replay, so a short graph
// replayed past its bound would fail here.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DecodeGraphs, shortContextFromEnv } from '../../src/engine/decode-graphs.ts';
import { loadModel } from '../../src/model/load.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { GraphCpuBackend } from './emulated-graphs.ts';
import { generateIds, randomPrompt } from './helpers.ts';

describe('short-context decode graphs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-graph-classes-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  makeModel({ preset: 'tiny', out: dir, seed: 4 });

  it('a step replays the short graph while every row fits the bound, then the long one; tokens as eager', async () => {
    const be = new GraphCpuBackend();
    const loaded = loadModel(dir, be);
    const prompts = [randomPrompt(6, 1), randomPrompt(9, 2)];
    const run = async (cudaGraphs: boolean, short: string | undefined): Promise<number[][]> => {
      const saved = process.env.TANDEM_SHORT_CONTEXT_GRAPHS;
      if (short === undefined) delete process.env.TANDEM_SHORT_CONTEXT_GRAPHS;
      else process.env.TANDEM_SHORT_CONTEXT_GRAPHS = short;
      try {
        // 20 tokens each: contexts run from the prompts past 16 (the bound) to 26 and 29.
        return await generateIds(loaded, { cudaGraphs, blockSize: 4, maxModelLen: 64, maxNumSeqs: 2 }, prompts, { maxTokens: 20 });
      } finally {
        if (saved === undefined) delete process.env.TANDEM_SHORT_CONTEXT_GRAPHS;
        else process.env.TANDEM_SHORT_CONTEXT_GRAPHS = saved;
      }
    };
    const eager = await run(false, undefined);
    const before = be.graphs.capturedRows.length;
    assert.deepEqual(await run(true, undefined), eager);
    const oneClass = be.graphs.capturedRows.length - before;
    assert.deepEqual(await run(true, '16'), eager);
    const twoClasses = be.graphs.capturedRows.length - before - oneClass;
    // Bucket 2 (both rows decoding) gets a short and a long graph; without the bound one.
    assert.equal(twoClasses, oneClass + 1, `captures with the bound ${twoClasses}, without ${oneClass}`);
  });

  it('DecodeGraphs: classes per bucket, a bound as long as the tables means one class, bad bounds are errors', () => {
    const be = new GraphCpuBackend();
    const loaded = loadModel(dir, be);
    const cache = be.allocKvCache(loaded.model.kvCacheSpec(16, 4));
    try {
      const graphs = new DecodeGraphs(loaded.model, cache, { blockSize: 4, numBlocks: 16, maxModelLen: 32, maxNumSeqs: 2, shortContext: 8 });
      assert.equal(graphs.shortContext, 8);
      const rows = (position: number) => [{ token: 3, position, blockTable: [0, 1, 2, 3, 4, 5, 6, 7] }];
      graphs.run(rows(5));
      graphs.run(rows(6));
      assert.deepEqual(graphs.classesCaptured(1), ['short']);
      graphs.run(rows(8)); // context 9 > 8
      assert.deepEqual(graphs.classesCaptured(1), ['short', 'long']);
      graphs.run(rows(2));
      assert.deepEqual(graphs.classesCaptured(1), ['short', 'long'], 'no new capture going back');
      graphs.free();
      assert.equal(new DecodeGraphs(loaded.model, cache, { blockSize: 4, numBlocks: 16, maxModelLen: 32, maxNumSeqs: 2, shortContext: 32 }).shortContext, 0);
      assert.throws(() => new DecodeGraphs(loaded.model, cache, { blockSize: 4, numBlocks: 16, maxModelLen: 32, maxNumSeqs: 2, shortContext: -1 }), /shortContext/);
      assert.equal(shortContextFromEnv({}), 0);
      assert.equal(shortContextFromEnv({ TANDEM_SHORT_CONTEXT_GRAPHS: '256' }), 256);
      assert.throws(() => shortContextFromEnv({ TANDEM_SHORT_CONTEXT_GRAPHS: 'short' }), /TANDEM_SHORT_CONTEXT_GRAPHS/);
    } finally {
      be.freeKvCache(cache);
    }
  });
});
