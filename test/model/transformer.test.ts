import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import type { Backend, KvCache } from '../../src/backend/backend.ts';
import { Checkpoint } from '../../src/model/checkpoint.ts';
import { ropeInvFreq } from '../../src/model/config.ts';
import { loadModel, type LoadedModel } from '../../src/model/load.ts';
import { makeModel, type MakeModelOptions } from '../../src/model/make-model.ts';
import { packBatch, type SequenceSlice } from '../../src/model/transformer.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { referenceLogits, type WeightMap } from './reference-model.ts';

/** max |a - b| over max |b|: relative to the logits' scale. */
function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  assert.ok(scale > 0.1, 'logits are near zero: the comparison would prove nothing');
  return diff / scale;
}

function randomIds(n: number, vocab: number, seed: number): number[] {
  const rng = new SeededRandom(seed);
  return Array.from({ length: n }, () => Math.floor(rng.uniform() * vocab));
}

/** Blocks handed out in a shuffled order, so tables are never contiguous. */
function shuffledBlocks(count: number, seed: number): number[] {
  const rng = new SeededRandom(seed);
  const ids = Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [ids[i], ids[j]] = [ids[j], ids[i]];
  }
  return ids;
}

async function run(m: LoadedModel, cache: KvCache, seqs: SequenceSlice[], blockSize: number): Promise<Float32Array> {
  const be = m.model.backend;
  const logits = m.model.forward(packBatch(seqs, blockSize), cache);
  const out = (await be.download(logits)) as Float32Array;
  be.resetScratch();
  return out;
}

const VARIANTS: Record<string, Omit<MakeModelOptions, 'out'>> = {
  qwen2_gqa_tied: { preset: 'tiny', seed: 1 },
  qwen2_mha_untied: { preset: 'tiny', seed: 2, numKvHeads: 4, tieWordEmbeddings: false, dtype: 'F32' },
  llama_mqa: { preset: 'tiny', seed: 3, architecture: 'llama', numKvHeads: 1 },
  qwen3_head_dim_32: { preset: 'tiny', seed: 4, architecture: 'qwen3', headDim: 32 },
};

describe('transformer', () => {
  let root: string;
  let backend: Backend;
  const models = new Map<string, LoadedModel>();

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'tandem-transformer-'));
    backend = new CpuBackend();
    for (const [name, opts] of Object.entries(VARIANTS)) {
      makeModel({ ...opts, out: join(root, name) });
      models.set(name, loadModel(join(root, name), backend));
    }
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  for (const name of Object.keys(VARIANTS)) {
    it(`${name}: prefill logits match a float64 dense reference`, async () => {
      const m = models.get(name)!;
      const ckpt = Checkpoint.open(m.dir);
      const weights: WeightMap = new Map(ckpt.names().map((n) => [n, Float64Array.from(ckpt.read(n))]));
      ckpt.close();
      const ids = randomIds(21, m.config.vocabSize, 5);
      const ref = referenceLogits(m.config, weights, ropeInvFreq(m.config), ids);
      const blockSize = 16;
      const cache = backend.allocKvCache(m.model.kvCacheSpec(2, blockSize));
      const got = await run(m, cache, [{ newTokens: ids, numCached: 0, blockTable: [1, 0], allLogits: true }], blockSize);
      backend.freeKvCache(cache);
      assert.ok(relErr(got, ref) < 1e-4, `relative error ${relErr(got, ref)}`);
    });
  }

  for (const blockSize of [1, 3, 16]) {
    it(`paged decode gives the logits of a full re-prefill (block size ${blockSize})`, async () => {
      const m = models.get('qwen2_gqa_tied')!;
      const V = m.config.vocabSize;
      const ids = randomIds(37, V, 9);
      const numBlocks = Math.ceil(ids.length / blockSize) + 3;
      const table = shuffledBlocks(numBlocks, blockSize).slice(0, Math.ceil(ids.length / blockSize));
      const cache = backend.allocKvCache(m.model.kvCacheSpec(numBlocks, blockSize));
      const full = await run(m, cache, [{ newTokens: ids, numCached: 0, blockTable: table, allLogits: true }], blockSize);

      const cache2 = backend.allocKvCache(m.model.kvCacheSpec(numBlocks, blockSize));
      const prefix = 5;
      const first = await run(m, cache2, [{ newTokens: ids.slice(0, prefix), numCached: 0, blockTable: table }], blockSize);
      assert.ok(relErr(first, full.subarray((prefix - 1) * V, prefix * V)) < 1e-5);
      for (let t = prefix; t < ids.length; t++) {
        const step = await run(m, cache2, [{ newTokens: [ids[t]], numCached: t, blockTable: table }], blockSize);
        const err = relErr(step, full.subarray(t * V, (t + 1) * V));
        assert.ok(err < 1e-5, `position ${t}: relative error ${err}`);
      }
      backend.freeKvCache(cache);
      backend.freeKvCache(cache2);
    });
  }

  it('a packed prefill of several sequences equals each sequence alone', async () => {
    const m = models.get('llama_mqa')!;
    const V = m.config.vocabSize;
    const blockSize = 4;
    const lens = [1, 9, 20];
    const seqs = lens.map((n, i) => randomIds(n, V, 20 + i));
    const order = shuffledBlocks(16, 3);
    const tables: number[][] = [];
    let next = 0;
    for (const s of seqs) {
      const need = Math.ceil(s.length / blockSize);
      tables.push(order.slice(next, next + need));
      next += need;
    }
    const cache = backend.allocKvCache(m.model.kvCacheSpec(16, blockSize));
    const packed = await run(
      m,
      cache,
      seqs.map((s, i) => ({ newTokens: s, numCached: 0, blockTable: tables[i] })),
      blockSize,
    );
    for (let i = 0; i < seqs.length; i++) {
      const alone = backend.allocKvCache(m.model.kvCacheSpec(16, blockSize));
      const single = await run(m, alone, [{ newTokens: seqs[i], numCached: 0, blockTable: tables[i] }], blockSize);
      backend.freeKvCache(alone);
      assert.ok(relErr(packed.subarray(i * V, (i + 1) * V), single) < 1e-5, `sequence ${i}`);
    }
    backend.freeKvCache(cache);
  });

  it('prefill of new tokens after a cached prefix, batched with a decode, matches a full prefill', async () => {
    const m = models.get('qwen3_head_dim_32')!;
    const V = m.config.vocabSize;
    const blockSize = 8;
    const a = randomIds(30, V, 31);
    const b = randomIds(12, V, 32);
    const cache = backend.allocKvCache(m.model.kvCacheSpec(12, blockSize));
    const tableA = [7, 2, 9, 0];
    const tableB = [5, 11];
    // Cache the first 19 tokens of a and 11 of b, then one pass: a's next 11 tokens + b's last.
    await run(m, cache, [{ newTokens: a.slice(0, 19), numCached: 0, blockTable: tableA }, { newTokens: b.slice(0, 11), numCached: 0, blockTable: tableB }], blockSize);
    const mixed = await run(
      m,
      cache,
      [{ newTokens: a.slice(19), numCached: 19, blockTable: tableA, allLogits: true }, { newTokens: b.slice(11), numCached: 11, blockTable: tableB }],
      blockSize,
    );
    const fresh = backend.allocKvCache(m.model.kvCacheSpec(12, blockSize));
    const fullA = await run(m, fresh, [{ newTokens: a, numCached: 0, blockTable: tableA, allLogits: true }], blockSize);
    const fullB = await run(m, fresh, [{ newTokens: b, numCached: 0, blockTable: tableB }], blockSize);
    assert.ok(relErr(mixed.subarray(0, 11 * V), fullA.subarray(19 * V)) < 1e-5);
    assert.ok(relErr(mixed.subarray(11 * V), fullB) < 1e-5);
    backend.freeKvCache(cache);
    backend.freeKvCache(fresh);
  });

  it('rejects a batch whose block table is too short', () => {
    assert.throws(() => packBatch([{ newTokens: [1, 2, 3], numCached: 14, blockTable: [0] }], 16), /17 tokens need 2 blocks/);
  });
});
