/** The conformance suite on the CPU backend, plus what only the CPU backend promises. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttnMeta, SamplingParams } from '../../src/backend/backend.ts';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { runBackendConformance } from './conformance.ts';
import { runSamplingExtrasConformance } from './conformance-sampling-extras.ts';
import { sampleRef } from './reference.ts';

// f32 storage and double-precision sums: only output rounding separates it from float64.
runBackendConformance('cpu', () => new CpuBackend(), { atol: 2e-6, rtol: 2e-6 });

describe('cpu backend specifics', () => {
  const i32 = (be: CpuBackend, xs: number[], shape?: number[]) => be.upload(Int32Array.from(xs), shape ?? [xs.length], 'i32', 'scratch');

  it('stores and reports every float dtype as f32', async () => {
    const be = new CpuBackend();
    for (const dtype of ['bf16', 'f16', 'f32'] as const) {
      const t = be.upload(Float32Array.from([1.1, -2.2]), [2], dtype);
      assert.equal(t.dtype, 'f32');
      assert.deepEqual(await be.download(t), Float32Array.from([1.1, -2.2]));
    }
    assert.equal(be.alloc([3], 'bf16', 'scratch').dtype, 'f32');
    assert.equal(be.memoryUsage().weights, 3 * 2 * 4);
  });

  it('reuses scratch buffers: a repeated step allocates nothing after the first', () => {
    const be = new CpuBackend();
    const w = be.upload(new SeededRandom(1).normals(64 * 32, 0.1), [64, 32], 'f32');
    const step = (T: number): void => {
      const x = be.upload(new Float32Array(T * 32).fill(1), [T, 32], 'f32', 'scratch');
      const y = be.linear(x, w);
      be.add(y, y);
      be.logSoftmax(y);
      be.resetScratch();
    };
    step(8);
    const after = be.scratchAllocations;
    const held = be.memoryUsage().scratch;
    for (let i = 0; i < 5; i++) step(8);
    step(3); // a smaller step fits the same buffers
    assert.equal(be.scratchAllocations, after);
    assert.equal(be.memoryUsage().scratch, held);
  });

  it('rejects ids, slots and block tables that point outside their tables', () => {
    const be = new CpuBackend();
    const table = be.upload(new Float32Array(12), [4, 3], 'f32');
    assert.throws(() => be.embedding(i32(be, [0, 4]), table), /embedding: token id 4 at row 1 is outside the table's 4 rows/);
    assert.throws(() => be.embedding(i32(be, [-1]), table), /embedding/);
    assert.throws(() => be.gatherRows(table, i32(be, [4])), /gatherRows: index 4/);
    const cache = be.allocKvCache({ numLayers: 1, numBlocks: 2, blockSize: 4, numKvHeads: 1, headDim: 4, dtype: 'f32' });
    const k = be.upload(new Float32Array(4), [1, 1, 4], 'f32');
    assert.throws(() => be.writeKv(cache, 0, k, k, i32(be, [8])), /writeKv: slot 8 of token 0 is outside the cache's 8 slots/);
    const q = be.upload(new Float32Array(8), [2, 1, 4], 'f32');
    const meta = (cu: number[], lens: number[], tables: number[], maxQ = 2, maxCtx = 8): AttnMeta => ({
      cuSeqlensQ: i32(be, cu),
      contextLens: i32(be, lens),
      blockTables: i32(be, tables, [lens.length, tables.length / lens.length]),
      maxSeqlenQ: maxQ,
      maxContextLen: maxCtx,
    });
    assert.doesNotThrow(() => be.attention(q, cache, 0, meta([0, 2], [5], [1, 0]), 1));
    assert.throws(() => be.attention(q, cache, 0, meta([0, 2], [5], [1, -1]), 1), /block table of sequence 0, entry 1: block -1/);
    assert.throws(() => be.attention(q, cache, 0, meta([0, 2], [5], [1, 2]), 1), /block 2 is outside/);
    assert.throws(() => be.attention(q, cache, 0, meta([0, 2], [1], [1, 0]), 1), /2 query rows but a context of 1/);
    assert.throws(() => be.attention(q, cache, 0, meta([0, 1], [5], [1, 0]), 1), /cuSeqlensQ must run from 0 to T = 2/);
    assert.throws(() => be.attention(q, cache, 0, meta([0, 2], [9], [1, 0]), 1), /context 9 but its block table holds 2 blocks of 4/);
    assert.throws(() => be.attention(q, cache, 0, meta([0, 2], [5], [1, 0], 1, 8), 1), /maxSeqlenQ 1/);
    // A -1 past the used blocks is fine (padding).
    assert.doesNotThrow(() => be.attention(q, cache, 0, meta([0, 2], [4], [1, -1]), 1));
  });

  it('frees only persistent, non-view tensors, once', () => {
    const be = new CpuBackend();
    const t = be.upload(new Float32Array(4), [4], 'f32');
    assert.throws(() => be.free(be.alloc([2], 'f32', 'scratch')), /scratch/);
    assert.throws(() => be.free(be.view(t, [2, 2])), /view/);
    be.free(t);
    assert.throws(() => be.free(t), /freed/);
    assert.throws(() => be.view(t, [2, 2]), /freed/);
  });

  it('rejects tensors and caches of another CpuBackend instance', () => {
    const a = new CpuBackend();
    const b = new CpuBackend();
    const t = a.upload(new Float32Array(4), [2, 2], 'f32');
    assert.throws(() => b.add(t, t), /another CpuBackend/);
    const cache = a.allocKvCache({ numLayers: 1, numBlocks: 1, blockSize: 1, numKvHeads: 1, headDim: 2, dtype: 'f32' });
    assert.throws(() => b.freeKvCache(cache), /another CpuBackend/);
    a.freeKvCache(cache);
    assert.throws(() => a.freeKvCache(cache), /freed/);
  });

  it('samples a Qwen-sized vocabulary exactly like the reference, with and without top-k', async () => {
    const be = new CpuBackend();
    const V = 151936;
    const logits = new SeededRandom(9).normals(V, 3);
    const x = be.upload(logits, [1, V], 'f32', 'scratch');
    const base = { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 0, step: 0 };
    const cases: SamplingParams[] = [
      base,
      { ...base, topK: 50, temperature: 0.7 },
      { ...base, topP: 0.9 },
      { ...base, topP: 0.95, minP: 0.01, temperature: 1.2 },
      { ...base, topK: 2000, topP: 0.8 },
    ];
    for (const p of cases) {
      for (let seed = 0; seed < 4; seed++) {
        const params = { ...p, seed, step: seed * 3 };
        const got = await be.sample(x, [params]);
        const ref = sampleRef(logits, params);
        if (!ref.ambiguous) assert.equal(got.ids[0], ref.id, JSON.stringify(params));
      }
    }
  });
});

runSamplingExtrasConformance('cpu', () => new CpuBackend(), 1e-5);
