/** The conformance suite on the CPU backend, plus what only the CPU backend promises. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import type { AttnMeta, SamplingParams, Tensor } from '../../src/backend/backend.ts';
import { CpuBackend, cpuThreadsDefault } from '../../src/backend/cpu/cpu-backend.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { runBackendConformance } from './conformance.ts';
import { runSamplingExtrasConformance } from './conformance-sampling-extras.ts';
import { sampleRef } from './reference.ts';

// f32 storage and double-precision sums: only output rounding separates it from float64.
runBackendConformance('cpu', () => new CpuBackend(), { atol: 2e-6, rtol: 2e-6 });
// The same cases on one thread, and with every linear / attention call shared by 3 threads.
runBackendConformance('cpu, 1 thread', () => new CpuBackend({ threads: 1 }), { atol: 2e-6, rtol: 2e-6 });
const sharing: CpuBackend[] = [];
after(() => sharing.forEach((be) => be.dispose()));
runBackendConformance('cpu, 3 threads sharing every op', () => {
  const be = new CpuBackend({ threads: 3, shareAll: true });
  sharing.push(be);
  return be;
}, { atol: 2e-6, rtol: 2e-6 });

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

describe('cpu backend threads', () => {
  const rand = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);

  /** Run `op` on each backend until the multi-threaded ones' workers have taken part; return the outputs. */
  const onAll = async (backends: CpuBackend[], op: (be: CpuBackend) => Tensor): Promise<Float32Array[]> => {
    const outs: Float32Array[] = [];
    for (const be of backends) {
      const before = be.workerTasks;
      const start = performance.now();
      let out: Float32Array | undefined;
      // Workers join by claiming tasks as they wake, and small calls stay on the main thread for
      // a while after a worker was late (a busy machine): repeat until a worker has taken part
      // (every run must agree), for up to 20 s.
      while (out === undefined || (be.threads > 1 && be.workerTasks === before && performance.now() - start < 20_000)) {
        const y = (await be.download(op(be))) as Float32Array;
        if (out !== undefined) assert.deepEqual(y, out, 'the same call twice on one backend');
        out = y;
        be.resetScratch();
        await new Promise((r) => setTimeout(r, 1));
      }
      if (be.threads > 1) assert.ok(be.workerTasks > before, `threads: ${be.threads}: no worker took a task`);
      outs.push(out!);
    }
    return outs;
  };

  const sameBits = (outs: Float32Array[], what: string): void => {
    for (let i = 1; i < outs.length; i++) {
      const a = new Uint32Array(outs[0].buffer);
      const b = new Uint32Array(outs[i].buffer);
      const bad = a.findIndex((v, j) => v !== b[j]);
      assert.equal(bad, -1, `${what}: element ${bad} differs between 1 and ${[1, 2, 3][i]} threads (${outs[0][bad]} vs ${outs[i][bad]})`);
    }
  };

  it('gives bitwise identical linear and attention outputs with 1, 2 and 3 threads', async () => {
    const backends = [1, 2, 3].map((threads) => new CpuBackend({ threads }));
    try {
      assert.deepEqual(await Promise.all(backends.map((be) => be.startThreads())), [0, 1, 2], 'workers serving');
      // Prefill-like (rows and columns left over past the 4 x 3 tiles), decode-like, narrow.
      for (const [T, K, N] of [[70, 256, 203], [1, 256, 2048], [32, 700, 130]]) {
        const x = rand(T * K, T);
        const w = rand(N * K, N, 0.05);
        const b = rand(N, 7, 0.1);
        const weights = new Map(backends.map((be) => [be, [be.upload(w, [N, K]), be.upload(b, [N])]]));
        const outs = await onAll(backends, (be) => {
          const [wt, bt] = weights.get(be)!;
          return be.linear(be.upload(x, [T, K], 'f32', 'scratch'), wt, bt);
        });
        sameBits(outs, `linear ${T}x${K}x${N}`);
      }

      // Attention: a packed prefill (one sequence after a cached prefix) and a decode batch, GQA 4 and 3,
      // head dims 32 and 20, shuffled blocks of 16.
      for (const [H, Hkv, D] of [[8, 2, 32], [6, 2, 20]]) {
        const seqs = [{ ctx: 130, qlen: 130 }, { ctx: 90, qlen: 41 }, ...Array.from({ length: 12 }, (_, i) => ({ ctx: 40 + 23 * i, qlen: 1 }))];
        const blockSize = 16;
        const perSeq = Math.max(...seqs.map((s) => Math.ceil(s.ctx / blockSize)));
        const numBlocks = seqs.length * perSeq;
        const order = Array.from({ length: numBlocks }, (_, i) => (i * 37) % numBlocks); // 37 is coprime with numBlocks
        const S = seqs.length;
        const tables = new Int32Array(S * perSeq).fill(-1);
        const slots: number[] = [];
        seqs.forEach((s, i) => {
          for (let p = 0; p < s.ctx; p++) {
            const block = order[i * perSeq + Math.floor(p / blockSize)];
            tables[i * perSeq + Math.floor(p / blockSize)] = block;
            slots.push(block * blockSize + (p % blockSize));
          }
        });
        const cu = [0];
        for (const s of seqs) cu.push(cu[cu.length - 1] + s.qlen);
        const T = cu[S];
        const kData = rand(slots.length * Hkv * D, 11, 1.5);
        const vData = rand(slots.length * Hkv * D, 12);
        const qData = rand(T * H * D, 13, 1.5);
        const caches = new Map<CpuBackend, ReturnType<CpuBackend['allocKvCache']>>();
        for (const be of backends) {
          const cache = be.allocKvCache({ numLayers: 1, numBlocks, blockSize, numKvHeads: Hkv, headDim: D, dtype: 'f32' });
          const shape = [slots.length, Hkv, D];
          be.writeKv(cache, 0, be.upload(kData, shape, 'f32', 'scratch'), be.upload(vData, shape, 'f32', 'scratch'), be.upload(Int32Array.from(slots), [slots.length], 'i32', 'scratch'));
          be.resetScratch();
          caches.set(be, cache);
        }
        const outs = await onAll(backends, (be) => {
          const meta: AttnMeta = {
            cuSeqlensQ: be.upload(Int32Array.from(cu), [S + 1], 'i32', 'scratch'),
            contextLens: be.upload(Int32Array.from(seqs.map((s) => s.ctx)), [S], 'i32', 'scratch'),
            blockTables: be.upload(tables, [S, perSeq], 'i32', 'scratch'),
            maxSeqlenQ: 130,
            maxContextLen: Math.max(...seqs.map((s) => s.ctx)),
          };
          return be.attention(be.upload(qData, [T, H, D], 'f32', 'scratch'), caches.get(be)!, 0, meta, 1 / Math.sqrt(D));
        });
        sameBits(outs, `attention H=${H} Hkv=${Hkv} D=${D}`);
      }
    } finally {
      backends.forEach((be) => be.dispose());
    }
  });

  it('gives bitwise identical linear backward products (dx and accumulated dw) with 1, 2 and 3 threads', async () => {
    const backends = [1, 2, 3].map((threads) => new CpuBackend({ threads }));
    try {
      await Promise.all(backends.map((be) => be.startThreads()));
      // Leftover rows and columns past the tiles, reductions over several depth blocks, T = 1.
      for (const [T, K, N] of [[70, 256, 203], [300, 100, 130], [1, 256, 2048]]) {
        const dy = rand(T * N, T + 1);
        const x = rand(T * K, T + 2);
        const w = rand(N * K, N, 0.05);
        const dw0 = rand(N * K, 5, 0.1);
        const weights = new Map(backends.map((be) => [be, be.upload(w, [N, K])]));
        const dx = await onAll(backends, (be) => be.linearBackwardInput(be.upload(dy, [T, N], 'f32', 'scratch'), weights.get(be)!));
        sameBits(dx, `linearBackwardInput ${T}x${K}x${N}`);
        const dw = await onAll(backends, (be) => {
          const acc = be.upload(dw0, [N, K], 'f32', 'scratch');
          be.linearBackwardWeight(be.upload(dy, [T, N], 'f32', 'scratch'), be.upload(x, [T, K], 'f32', 'scratch'), acc, 0.3);
          return acc;
        });
        sameBits(dw, `linearBackwardWeight ${T}x${K}x${N}`);
      }
    } finally {
      backends.forEach((be) => be.dispose());
    }
  });

  it('reads the thread count from TANDEM_CPU_THREADS, and 1 means no workers', async () => {
    assert.equal(cpuThreadsDefault({ TANDEM_CPU_THREADS: '3' }), 3);
    assert.ok(cpuThreadsDefault({}) >= 1);
    assert.throws(() => cpuThreadsDefault({ TANDEM_CPU_THREADS: '0' }), /TANDEM_CPU_THREADS/);
    assert.throws(() => cpuThreadsDefault({ TANDEM_CPU_THREADS: 'two' }), /TANDEM_CPU_THREADS/);
    assert.throws(() => new CpuBackend({ threads: 0 }), /threads/);
    const one = new CpuBackend({ threads: 1, shareAll: true });
    assert.equal(await one.startThreads(), 0);
    const w = one.upload(rand(256 * 256, 1), [256, 256]);
    one.linear(one.upload(rand(64 * 256, 2), [64, 256], 'f32', 'scratch'), w);
    assert.equal(one.workerTasks, 0);
  });

  it('keeps working on the calling thread after dispose()', async () => {
    const be = new CpuBackend({ threads: 2, shareAll: true });
    await be.startThreads();
    const w = be.upload(rand(64 * 32, 1), [64, 32]);
    const x = rand(16 * 32, 2);
    const first = await be.download(be.linear(be.upload(x, [16, 32], 'f32', 'scratch'), w));
    be.dispose();
    be.dispose();
    const again = await be.download(be.linear(be.upload(x, [16, 32], 'f32', 'scratch'), w));
    assert.deepEqual(again, first);
  });

  it('lets the process exit without dispose() while workers idle', () => {
    const backendUrl = new URL('../../src/backend/cpu/cpu-backend.ts', import.meta.url).href;
    const code = `
      const { CpuBackend } = await import(${JSON.stringify(backendUrl)});
      const be = new CpuBackend({ threads: 2, shareAll: true });
      await be.startThreads();
      const w = be.upload(new Float32Array(64 * 64).fill(0.5), [64, 64]);
      be.linear(be.upload(new Float32Array(64 * 64).fill(1), [64, 64], 'f32', 'scratch'), w);
      console.log('done');
    `;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.error, undefined, 'the child did not exit on its own');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /done/);
  });
});

runSamplingExtrasConformance('cpu', () => new CpuBackend(), 1e-5);
