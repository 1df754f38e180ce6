/**
 * The backend conformance suite: one set of cases, run against every Backend (cpu always, cuda
 * where its addon loads), each op checked against the float64 references in reference.ts.
 *
 * Written only against the Backend interface. Inputs are uploaded in `opts.floatDtype` and the
 * references are computed from what the backend then holds (downloaded back), so a bf16 backend
 * is judged on its arithmetic, not on the rounding of its inputs; `tol` covers the rest:
 * |got - ref| <= atol + rtol * |ref| elementwise, and a failure names the worst element.
 *
 * Usage (test/backend/cpu.test.ts):
 *   runBackendConformance('cpu', () => new CpuBackend(), { atol: 2e-6, rtol: 2e-6 });
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { AttnMeta, Backend, DType, KvCache, SamplingParams, Tensor } from '../../src/backend/backend.ts';
import { SeededRandom } from '../../src/util/random.ts';
import {
  addRef,
  argmaxRef,
  attentionRef,
  gatherRowsRef,
  keptSetRef,
  linearRef,
  logSoftmaxRef,
  ropeRef,
  rmsnormRef,
  sampleRef,
  swigluRef,
} from './reference.ts';
import type { DenseSequence } from './reference.ts';
import { expectClose } from './expect-close.ts';
import type { Tolerance } from './expect-close.ts';
import { runTrainingConformance } from './conformance-training.ts';
import { runFusedConformance } from './conformance-fused.ts';
import { runFeedConformance } from './conformance-feed.ts';

export { expectClose };
export type { Tolerance };

export interface ConformanceOptions {
  /** dtype float inputs (weights, activations) are uploaded as; default 'f32'. */
  floatDtype?: DType;
}

/** Fisher-Yates with a seeded generator. */
function shuffled(n: number, rng: SeededRandom): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** One sequence of an attention case: context length and how many of its last tokens are queries. */
interface SeqSpec {
  ctx: number;
  qlen: number;
}

interface AttnCase {
  H: number;
  Hkv: number;
  D: number;
  blockSize: number;
  seqs: SeqSpec[];
  /** Block-table width and stated maxContextLen as a decode graph has them (planned for long contexts). */
  tableBlocks?: number;
}

export function runBackendConformance(name: string, make: () => Backend, tol: Tolerance, opts: ConformanceOptions = {}): void {
  const floatDtype = opts.floatDtype ?? 'f32';

  describe(`backend conformance: ${name}`, () => {
    let backend: Backend | undefined;
    const be = (): Backend => (backend ??= make());
    afterEach(() => backend?.resetScratch());

    // ---- helpers (closures over the backend under test) ----
    const randn = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);
    const upF = (data: Float32Array, shape: number[]): Tensor => be().upload(data, shape, floatDtype);
    const upI = (data: number[] | Int32Array, shape?: number[], lifetime: 'persistent' | 'scratch' = 'scratch'): Tensor =>
      be().upload(Int32Array.from(data), shape ?? [data.length], 'i32', lifetime);
    const down = async (t: Tensor): Promise<Float32Array> => {
      const d = await be().download(t);
      assert.ok(d instanceof Float32Array, `download of a ${t.dtype} tensor should give a Float32Array`);
      return d;
    };
    const downI = async (t: Tensor): Promise<Int32Array> => {
      const d = await be().download(t);
      assert.ok(d instanceof Int32Array, `download of an i32 tensor should give an Int32Array`);
      return d;
    };
    /** Upload random floats and return the tensor with the values the backend holds. */
    const held = async (shape: number[], seed: number, std = 1): Promise<[Tensor, Float32Array]> => {
      const t = upF(randn(shape.reduce((a, b) => a * b, 1), seed, std), shape);
      return [t, await down(t)];
    };
    const foreign: Tensor = { shape: [2, 2], dtype: 'f32', backend: 'not-a-backend' };

    describe('memory', () => {
      it('uploads and downloads f32 and i32 unchanged', async () => {
        const f = Float32Array.from([1, -2.5, 0, 3.25, 1e-3, -7]);
        const t = be().upload(f, [2, 3], 'f32');
        assert.deepEqual(t.shape, [2, 3]);
        assert.equal(t.dtype, 'f32');
        assert.equal(t.backend, be().name);
        assert.deepEqual(await down(t), f);
        const i = Int32Array.from([0, -1, 2147483647, -2147483648, 42]);
        assert.deepEqual(await downI(be().upload(i, [5], 'i32')), i);
        assert.deepEqual(await downI(be().upload(i, [5], 'i32', 'scratch')), i);
      });

      it('write replaces a tensor\'s contents, whole or through a viewAt window', async () => {
        const ids = be().alloc([10], 'i32', 'persistent');
        be().write(ids, Int32Array.from({ length: 10 }, (_, i) => i));
        be().write(be().viewAt(ids, 3, [4]), Int32Array.from([-1, -2, -3, -4]));
        be().write(be().viewAt(ids, 9, [1]), Int32Array.from([99]));
        assert.deepEqual(await downI(ids), Int32Array.from([0, 1, 2, -1, -2, -3, -4, 7, 8, 99]));
        const f = be().alloc([2, 3], 'f32', 'persistent');
        be().write(f, Float32Array.from([1, 2, 3, 4, 5, 6]));
        be().write(be().viewAt(f, 2, [2]), Float32Array.from([-0.5, 0.25]));
        assert.deepEqual(await down(f), Float32Array.from([1, 2, -0.5, 0.25, 5, 6]));
        assert.throws(() => be().write(ids, new Int32Array(3)), /write.*10 elements/);
        assert.throws(() => be().write(ids, new Float32Array(10)), /write/);
        be().free(ids);
        be().free(f);
      });

      it('alloc gives zeros, persistent and scratch', async () => {
        for (const lifetime of ['persistent', 'scratch'] as const) {
          // Dirty scratch memory, then recycle it, so a scratch alloc cannot pass by luck.
          be().add(upF(randn(12, 1), [3, 4]), upF(randn(12, 2), [3, 4]));
          be().upload(Int32Array.from([1, 2, 3, 4, 5]), [5], 'i32', 'scratch');
          be().resetScratch();
          assert.deepEqual(await down(be().alloc([3, 4], 'f32', lifetime)), new Float32Array(12));
          assert.deepEqual(await downI(be().alloc([5], 'i32', lifetime)), new Int32Array(5));
        }
      });

      it('view shares data under another shape and rejects a different element count', async () => {
        const data = randn(24, 3);
        const t = be().upload(data, [2, 3, 4], 'f32');
        const v = be().view(t, [6, 4]);
        assert.deepEqual(v.shape, [6, 4]);
        assert.deepEqual(await down(v), await down(t));
        assert.throws(() => be().view(t, [5, 5]), /view/);
      });

      it('rejects upload with a shape that does not match the data', () => {
        assert.throws(() => be().upload(new Float32Array(5), [2, 3], 'f32'), /upload/);
      });

      it('memoryUsage tracks weights and KV cache', () => {
        const before = be().memoryUsage();
        for (const k of ['weights', 'kv_cache', 'scratch']) assert.equal(typeof before[k], 'number', `memoryUsage().${k}`);
        const w = be().upload(new Float32Array(1024), [1024], 'f32');
        assert.ok(be().memoryUsage().weights >= before.weights + 1024 * 2, 'an upload adds to weights');
        be().free(w);
        assert.equal(be().memoryUsage().weights, before.weights, 'free gives it back');
        const cache = be().allocKvCache({ numLayers: 2, numBlocks: 4, blockSize: 8, numKvHeads: 2, headDim: 16, dtype: floatDtype });
        assert.ok(be().memoryUsage().kv_cache >= before.kv_cache + 2 * 2 * 4 * 8 * 2 * 16 * 2, 'the cache adds to kv_cache');
        be().freeKvCache(cache);
        assert.equal(be().memoryUsage().kv_cache, before.kv_cache);
      });

      it('rejects a freed tensor', async () => {
        const w = be().upload(new Float32Array(4), [4], 'f32');
        be().free(w);
        assert.throws(() => be().add(w, w), /freed/);
        await assert.rejects(be().download(w), /freed/);
      });

      it('rejects tensors of another backend', () => {
        const mine = upF(randn(4, 4), [2, 2]);
        assert.throws(() => be().add(mine, foreign), /backend/);
        assert.throws(() => be().add(foreign, mine), /backend/);
      });
    });

    describe('scratch lifetime', () => {
      it('an op output used after resetScratch throws, in ops and download', async () => {
        const a = upF(randn(6, 5), [2, 3]);
        const out = be().add(a, a);
        const v = be().view(out, [3, 2]);
        be().resetScratch();
        assert.throws(() => be().add(out, a), /resetScratch/);
        assert.throws(() => be().add(a, be().view(v, [2, 3])), /resetScratch/);
        await assert.rejects(be().download(out), /resetScratch/);
      });

      it('a scratch upload dies at resetScratch; persistent tensors survive', async () => {
        const ids = upI([1, 2], [2], 'scratch');
        const [table, before] = await held([4, 3], 6);
        be().resetScratch();
        assert.throws(() => be().embedding(ids, table), /resetScratch/);
        assert.deepEqual(await down(table), before);
      });
    });

    describe('linear', () => {
      const shapes: [number, number, number][] = [
        [1, 1, 1],
        [1, 7, 5],
        [3, 5, 1],
        [4, 8, 4],
        [5, 13, 9],
        [17, 33, 19],
        [64, 64, 48],
        [1, 256, 130],
        [9, 130, 67],
        [2, 64, 33],
        [8, 520, 33],
        [6, 1032, 21],
        // Thin products at 5-8 rows (a LoRA shrink and expand of a GRPO rollout's 8-row steps).
        [8, 2048, 32],
        [7, 32, 512],
        [1, 2056, 12],
        // Rows of K >= 4096 (the MLP's down projection): the decode kernels split each over 4 warps.
        [1, 4104, 20],
        [4, 11008, 9],
      ];
      for (const [T, K, N] of shapes) {
        for (const withBias of [false, true]) {
          it(`[${T}, ${K}] x [${N}, ${K}]^T ${withBias ? '+ bias' : ''}`, async () => {
            const [x, xs] = await held([T, K], 10 + T);
            const [w, ws] = await held([N, K], 20 + N, 1 / Math.sqrt(K));
            const [b, bs] = await held([N], 30 + N);
            const out = be().linear(x, w, withBias ? b : undefined);
            assert.deepEqual(out.shape, [T, N]);
            expectClose('linear', await down(out), linearRef(xs, ws, withBias ? bs : null, T, K, N), tol);
          });
        }
      }
      it('rejects mismatched shapes', () => {
        const x = upF(randn(12, 1), [3, 4]);
        assert.throws(() => be().linear(x, upF(randn(10, 2), [2, 5])), /linear.*\[3, 4\].*\[2, 5\]/);
        assert.throws(() => be().linear(x, upF(randn(8, 2), [2, 4]), upF(randn(3, 3), [3])), /linear.*bias/);
        assert.throws(() => be().linear(upF(randn(12, 1), [1, 3, 4]), upF(randn(8, 2), [2, 4])), /linear/);
      });
    });

    describe('linearAdd (y += alpha * x w^T in place)', () => {
      // LoRA expands (K = the rank) at decode and prefill sizes, and a wider product; w in the
      // float dtype and in f32 (an adapter's matrices without their compute copy).
      const shapes: [number, number, number][] = [
        [1, 32, 64],
        [3, 16, 40],
        [4, 32, 2048],
        [6, 32, 256],
        [8, 32, 2048],
        [5, 128, 96],
        [8, 136, 40],
        [33, 8, 48],
        [2, 72, 20],
      ];
      for (const [T, K, N] of shapes) {
        for (const wDtype of new Set<DType>([floatDtype, 'f32'])) {
          it(`y [${T}, ${N}] += 0.75 * [${T}, ${K}] x [${N}, ${K}]^T, w ${wDtype}`, async () => {
            const [x, xs] = await held([T, K], 50 + T);
            const w = be().upload(randn(N * K, 51 + N, 1 / Math.sqrt(K)), [N, K], wDtype);
            const ws = (await down(w));
            const [y, y0] = await held([T, N], 52 + K, 2);
            be().linearAdd(y, x, w, 0.75);
            const prod = linearRef(xs, ws, null, T, K, N);
            const want = Float64Array.from(y0, (v, i) => v + 0.75 * prod[i]);
            expectClose('linearAdd', await down(y), want, tol);
            // Twice more into the same y: it accumulates (in place), nothing else changes.
            be().linearAdd(y, x, w, -0.25);
            expectClose('linearAdd again', await down(y), Float64Array.from(want, (v, i) => v - 0.25 * prod[i]), tol);
            expectClose('x unchanged', await down(x), xs, tol);
          });
        }
      }
      it('adds into a window of rows (a LoRA segment of a packed batch) and leaves the others', async () => {
        const [T, K, N] = [7, 32, 40];
        const [x, xs] = await held([T, K], 60);
        const [w, ws] = await held([N, K], 61, 1 / Math.sqrt(K));
        const [y, y0] = await held([T, N], 62);
        const [start, n] = [2, 3];
        be().linearAdd(be().viewAt(y, start * N, [n, N]), be().viewAt(x, start * K, [n, K]), w, 1.5);
        const prod = linearRef(xs.subarray(start * K, (start + n) * K), ws, null, n, K, N);
        const want = Float64Array.from(y0, (v, i) => (i >= start * N && i < (start + n) * N ? v + 1.5 * prod[i - start * N] : v));
        expectClose('linearAdd on a window', await down(y), want, tol);
      });
      it('rejects mismatched shapes and a non-finite alpha', () => {
        const x = upF(randn(12, 1), [3, 4]);
        const w = upF(randn(8, 2), [2, 4]);
        assert.throws(() => be().linearAdd(upF(randn(9, 3), [3, 3]), x, w, 1), /linearAdd.*\[3, 3\]/);
        assert.throws(() => be().linearAdd(upF(randn(6, 3), [3, 2]), x, upF(randn(10, 2), [2, 5]), 1), /linearAdd.*\[3, 4\].*\[2, 5\]/);
        assert.throws(() => be().linearAdd(upF(randn(6, 3), [3, 2]), x, w, Number.NaN), /linearAdd: alpha/);
      });
    });

    describe('rmsnorm', () => {
      const shapes: number[][] = [[1, 1], [3, 7], [4, 64], [2, 3, 5], [1, 1000]];
      for (const shape of shapes) {
        const C = shape[shape.length - 1];
        const R = shape.reduce((a, b) => a * b, 1) / C;
        it(`x ${JSON.stringify(shape)} without residual`, async () => {
          const [x, xs] = await held(shape, 40 + C, 3);
          const [w, ws] = await held([C], 41 + C);
          const { y, sum } = be().rmsnorm(x, w, 1e-6);
          assert.deepEqual(y.shape, shape);
          expectClose('rmsnorm y', await down(y), rmsnormRef(xs, ws, 1e-6, R, C), tol);
          expectClose('rmsnorm sum (= x)', await down(sum), xs, tol);
        });
        it(`x ${JSON.stringify(shape)} with residual`, async () => {
          const [x, xs] = await held(shape, 42 + C);
          const [r, rs] = await held(shape, 43 + C, 10);
          const [w, ws] = await held([C], 44 + C);
          const { y, sum } = be().rmsnorm(x, w, 1e-5, r);
          const sumRef = addRef(xs, rs);
          expectClose('rmsnorm sum', await down(sum), sumRef, tol);
          expectClose('rmsnorm y', await down(y), rmsnormRef(sumRef, ws, 1e-5, R, C), tol);
        });
      }
      it('adds eps inside the square root (rows as small as eps)', async () => {
        const [x, xs] = await held([3, 16], 45, 2e-3);
        const [w, ws] = await held([16], 46);
        expectClose('rmsnorm y', await down(be().rmsnorm(x, w, 1e-5).y), rmsnormRef(xs, ws, 1e-5, 3, 16), tol);
      });
      it('keeps zero rows finite and rejects mismatched shapes', async () => {
        const { y } = be().rmsnorm(upF(new Float32Array(4), [1, 4]), upF(Float32Array.from([1, 1, 1, 1]), [4]), 1e-6);
        assert.deepEqual(await down(y), new Float32Array(4));
        const x = upF(randn(12, 1), [3, 4]);
        assert.throws(() => be().rmsnorm(x, upF(randn(5, 1), [5]), 1e-6), /rmsnorm.*\[5\]/);
        assert.throws(() => be().rmsnorm(x, upF(randn(4, 1), [4]), 1e-6, upF(randn(8, 1), [2, 4])), /rmsnorm.*residual/);
      });
    });

    describe('rope', () => {
      const invFreqFor = (D: number, theta: number): Float32Array =>
        Float32Array.from({ length: D / 2 }, (_, j) => 1 / Math.pow(theta, (2 * j) / D));
      const cases: { T: number; H: number; Hkv: number; D: number; theta: number; positions: number[] }[] = [
        { T: 1, H: 1, Hkv: 1, D: 2, theta: 10000, positions: [3] },
        { T: 5, H: 4, Hkv: 2, D: 8, theta: 10000, positions: [0, 1, 2, 17, 100] },
        { T: 4, H: 2, Hkv: 1, D: 64, theta: 1000000, positions: [0, 4095, 30000, 32767] },
        { T: 3, H: 3, Hkv: 3, D: 128, theta: 1000000, positions: [30000, 7, 29999] },
      ];
      for (const c of cases) {
        it(`q [${c.T}, ${c.H}, ${c.D}], k [${c.T}, ${c.Hkv}, ${c.D}] at positions ${c.positions.join(',')}`, async () => {
          const [q, qs] = await held([c.T, c.H, c.D], 50 + c.D);
          const [k, ks] = await held([c.T, c.Hkv, c.D], 51 + c.D);
          const f = upF(invFreqFor(c.D, c.theta), [c.D / 2]);
          const fs = await down(f);
          be().rope(q, k, upI(c.positions), f);
          expectClose('rope q', await down(q), ropeRef(qs, c.positions, fs, c.T, c.H, c.D), tol);
          expectClose('rope k', await down(k), ropeRef(ks, c.positions, fs, c.T, c.Hkv, c.D), tol);
        });
      }
      it('rejects mismatched shapes', () => {
        const q = upF(randn(16, 1), [2, 1, 8]);
        const k = upF(randn(16, 1), [2, 1, 8]);
        const f = upF(invFreqFor(8, 10000), [4]);
        assert.throws(() => be().rope(q, k, upI([0, 1, 2]), f), /rope.*positions/);
        assert.throws(() => be().rope(q, k, upI([0, 1]), upF(invFreqFor(4, 10000), [2])), /rope.*invFreq/);
        assert.throws(() => be().rope(q, upF(randn(12, 1), [2, 1, 6]), upI([0, 1]), f), /rope/);
      });
    });

    describe('attention over the paged cache', () => {
      /**
       * Lay the sequences out in shuffled, non-contiguous blocks; write each one's cached prefix
       * with one writeKv call and its query tokens with a second (as a forward does); run
       * attention on layer 1 (layer 0 holds other data) and compare with the dense reference.
       */
      const runCase = async (c: AttnCase, seed: number): Promise<void> => {
        const { H, Hkv, D, blockSize, seqs } = c;
        const rng = new SeededRandom(seed);
        const S = seqs.length;
        const needed = seqs.map((s) => Math.ceil(s.ctx / blockSize));
        const maxBlocks = Math.max(Math.max(...needed) + 1, c.tableBlocks ?? 0);
        const numBlocks = needed.reduce((a, b) => a + b, 0) + 3;
        const perm = shuffled(numBlocks, rng);
        const tables: number[][] = [];
        let next = 0;
        for (const n of needed) tables.push(perm.slice(next, (next += n)));
        const slotOf = (s: number, p: number): number => tables[s][Math.floor(p / blockSize)] * blockSize + (p % blockSize);

        const cache = be().allocKvCache({ numLayers: 2, numBlocks, blockSize, numKvHeads: Hkv, headDim: D, dtype: floatDtype });
        try {
          const dense: DenseSequence[] = [];
          const queries: Float32Array[] = [];
          const kvRow = Hkv * D;
          for (let s = 0; s < S; s++) {
            const { ctx, qlen } = seqs[s];
            const [, k] = await held([ctx, Hkv, D], seed * 100 + s * 3);
            const [, v] = await held([ctx, Hkv, D], seed * 100 + s * 3 + 1);
            const [, q] = await held([qlen, H, D], seed * 100 + s * 3 + 2);
            dense.push({ k, v, q, ctx, qlen });
            queries.push(q);
          }
          // Write the same slots of layer 0 with other values: layers must not alias.
          const write = (layer: number, part: 'prefix' | 'new', junk: boolean): void => {
            const slots: number[] = [];
            const kData: number[] = [];
            const vData: number[] = [];
            dense.forEach((d, s) => {
              const [from, to] = part === 'prefix' ? [0, d.ctx - d.qlen] : [d.ctx - d.qlen, d.ctx];
              for (let p = from; p < to; p++) {
                slots.push(slotOf(s, p));
                for (let j = 0; j < kvRow; j++) {
                  kData.push(junk ? 100 + j : d.k[p * kvRow + j]);
                  vData.push(junk ? -100 - j : d.v[p * kvRow + j]);
                }
              }
            });
            if (slots.length === 0) return;
            const shape = [slots.length, Hkv, D];
            be().writeKv(cache, layer, upF(Float32Array.from(kData), shape), upF(Float32Array.from(vData), shape), upI(slots));
          };
          write(1, 'new', true); // junk first, overwritten below: writeKv must overwrite
          write(0, 'prefix', true);
          write(1, 'prefix', false);
          write(0, 'new', true);
          write(1, 'new', false);

          const cu = [0];
          for (const s of seqs) cu.push(cu[cu.length - 1] + s.qlen);
          const T = cu[S];
          const qAll = new Float32Array(T * H * D);
          queries.forEach((q, s) => qAll.set(q, cu[s] * H * D));
          const tableData = new Int32Array(S * maxBlocks).fill(-1);
          tables.forEach((t, s) => tableData.set(t, s * maxBlocks));
          const meta: AttnMeta = {
            cuSeqlensQ: upI(cu),
            contextLens: upI(seqs.map((s) => s.ctx)),
            blockTables: upI(tableData, [S, maxBlocks]),
            maxSeqlenQ: Math.max(...seqs.map((s) => s.qlen)),
            maxContextLen: c.tableBlocks ? c.tableBlocks * blockSize : Math.max(...seqs.map((s) => s.ctx)),
          };
          const scale = 1 / Math.sqrt(D);
          const out = be().attention(upF(qAll, [T, H, D]), cache, 1, meta, scale);
          assert.deepEqual(out.shape, [T, H, D]);
          expectClose('attention', await down(out), attentionRef(dense, H, Hkv, D, scale), tol);
        } finally {
          be().freeKvCache(cache);
        }
      };

      const decode = (ctxs: number[]): SeqSpec[] => ctxs.map((ctx) => ({ ctx, qlen: 1 }));
      const prefill = (ctxs: number[]): SeqSpec[] => ctxs.map((ctx) => ({ ctx, qlen: ctx }));

      it('decode: one query per sequence, contexts 1, 5, 16, 40', () =>
        runCase({ H: 4, Hkv: 2, D: 64, blockSize: 16, seqs: decode([1, 5, 16, 40]) }, 1));
      it('packed prefill of 3 sequences of lengths 1, 7, 33 in shuffled blocks', () =>
        runCase({ H: 4, Hkv: 2, D: 64, blockSize: 16, seqs: prefill([1, 7, 33]) }, 2));
      it('prefill of new tokens after a cached prefix, mixed with decode', () =>
        runCase({ H: 4, Hkv: 2, D: 64, blockSize: 4, seqs: [{ ctx: 20, qlen: 5 }, { ctx: 33, qlen: 17 }, { ctx: 16, qlen: 1 }, { ctx: 9, qlen: 9 }] }, 3));
      for (const ratio of [1, 2, 7]) {
        for (const D of [64, 128]) {
          it(`GQA ratio ${ratio}, head dim ${D}`, () =>
            runCase({ H: 2 * ratio, Hkv: 2, D, blockSize: 16, seqs: [{ ctx: 19, qlen: 19 }, { ctx: 24, qlen: 6 }, { ctx: 40, qlen: 1 }] }, 10 + ratio + D));
        }
      }
      for (const blockSize of [1, 16]) {
        it(`block size ${blockSize}, sequences crossing block edges`, () =>
          runCase({ H: 2, Hkv: 1, D: 64, blockSize, seqs: [{ ctx: 17, qlen: 17 }, { ctx: 32, qlen: 3 }, { ctx: 33, qlen: 2 }, { ctx: 15, qlen: 1 }] }, 30 + blockSize));
      }
      // Long contexts at a small batch: backends may split each context over several blocks (split-K).
      it('decode of long contexts (1000, 600, 129, 1), GQA 8:1, head dim 128', () =>
        runCase({ H: 16, Hkv: 2, D: 128, blockSize: 16, seqs: decode([1000, 600, 129, 1]) }, 50));
      it('decode with block tables planned for 32k tokens (as in a graph): contexts 700, 130, 3', () =>
        runCase({ H: 14, Hkv: 2, D: 64, blockSize: 16, seqs: decode([700, 130, 3]), tableBlocks: 2048 }, 51));
      it('a single head, a single token', () => runCase({ H: 1, Hkv: 1, D: 64, blockSize: 16, seqs: prefill([1]) }, 40));
      it('large scores stay finite (max subtraction)', async () => {
        const cache = be().allocKvCache({ numLayers: 1, numBlocks: 2, blockSize: 4, numKvHeads: 1, headDim: 64, dtype: floatDtype });
        try {
          const k = new Float32Array(5 * 64).fill(30);
          const v = Float32Array.from({ length: 5 * 64 }, (_, i) => Math.floor(i / 64));
          be().writeKv(cache, 0, upF(k, [5, 1, 64]), upF(v, [5, 1, 64]), upI([4, 5, 6, 7, 0]));
          const q = upF(new Float32Array(64).fill(30), [1, 1, 64]);
          const meta: AttnMeta = { cuSeqlensQ: upI([0, 1]), contextLens: upI([5]), blockTables: upI([1, 0], [1, 2]), maxSeqlenQ: 1, maxContextLen: 5 };
          const out = await down(be().attention(q, cache, 0, meta, 1)); // scores 57600: exp overflows without the max
          expectClose('attention', out, new Float32Array(64).fill(2), tol); // equal scores: the mean of 0..4
        } finally {
          be().freeKvCache(cache);
        }
      });
      it('rejects mismatched shapes', () => {
        const cache: KvCache = be().allocKvCache({ numLayers: 1, numBlocks: 2, blockSize: 4, numKvHeads: 2, headDim: 8, dtype: floatDtype });
        try {
          const meta: AttnMeta = { cuSeqlensQ: upI([0, 1]), contextLens: upI([1]), blockTables: upI([0], [1, 1]), maxSeqlenQ: 1, maxContextLen: 1 };
          assert.throws(() => be().attention(upF(randn(24, 1), [1, 3, 8]), cache, 0, meta, 1), /attention.*heads/);
          assert.throws(() => be().attention(upF(randn(16, 1), [1, 4, 4]), cache, 0, meta, 1), /attention.*head dim/);
          const bad: AttnMeta = { ...meta, cuSeqlensQ: upI([0, 1, 1]) };
          assert.throws(() => be().attention(upF(randn(32, 1), [1, 4, 8]), cache, 0, bad, 1), /attention/);
          assert.throws(() => be().attention(upF(randn(32, 1), [1, 4, 8]), cache, 3, meta, 1), /attention.*layer/);
          const k = upF(randn(16, 1), [1, 2, 8]);
          assert.throws(() => be().writeKv(cache, 0, k, upF(randn(8, 1), [1, 1, 8]), upI([0])), /writeKv/);
          assert.throws(() => be().writeKv(cache, 0, upF(randn(16, 1), [1, 4, 4]), upF(randn(16, 1), [1, 4, 4]), upI([0])), /writeKv/);
          assert.throws(() => be().writeKv(cache, 0, k, k, upI([0, 1])), /writeKv.*slots/);
        } finally {
          be().freeKvCache(cache);
        }
      });
    });

    describe('embedding, gatherRows, swiglu, add', () => {
      it('embedding gathers table rows', async () => {
        const [table, ts] = await held([11, 5], 60);
        for (const ids of [[3, 0, 10, 3], [7]]) {
          const out = be().embedding(upI(ids), table);
          assert.deepEqual(out.shape, [ids.length, 5]);
          expectClose('embedding', await down(out), gatherRowsRef(ts, ids, 5), { atol: 0, rtol: 0 });
        }
        assert.throws(() => be().embedding(upF(randn(2, 1), [2]), table), /embedding.*ids/);
      });

      it('gatherRows picks rows, repeats allowed', async () => {
        const [x, xs] = await held([6, 5], 61);
        for (const idx of [[5, 0, 5, 2], [1]]) {
          const out = be().gatherRows(x, upI(idx));
          assert.deepEqual(out.shape, [idx.length, 5]);
          expectClose('gatherRows', await down(out), gatherRowsRef(xs, idx, 5), { atol: 0, rtol: 0 });
        }
      });

      for (const shape of [[1, 1], [3, 7], [2, 64]]) {
        it(`swiglu and add on ${JSON.stringify(shape)}`, async () => {
          const [g, gs] = await held(shape, 62, 4);
          const [u, us] = await held(shape, 63);
          expectClose('swiglu', await down(be().swiglu(g, u)), swigluRef(gs, us), tol);
          expectClose('add', await down(be().add(g, u)), addRef(gs, us), tol);
        });
      }

      it('swiglu saturates cleanly at large |gate|', async () => {
        const gs = Float32Array.from([-100, -50, -20, 0, 20, 50, 100]);
        const us = Float32Array.from([1, 2, 3, 4, 5, 6, 7]);
        const out = await down(be().swiglu(upF(gs, [1, 7]), upF(us, [1, 7])));
        expectClose('swiglu', out, swigluRef(await down(upF(gs, [1, 7])), await down(upF(us, [1, 7]))), { atol: Math.max(tol.atol, 1e-30), rtol: tol.rtol });
      });

      it('rejects mismatched shapes', () => {
        const a = upF(randn(6, 1), [2, 3]);
        const b = upF(randn(6, 1), [3, 2]);
        assert.throws(() => be().add(a, b), /add.*\[2, 3\].*\[3, 2\]/);
        assert.throws(() => be().swiglu(a, b), /swiglu/);
        assert.throws(() => be().gatherRows(a, upF(randn(2, 1), [2])), /gatherRows/);
      });
    });

    describe('logSoftmax', () => {
      const cases: [string, number[], number, number][] = [
        ['a single entry', [3.5], 1, 1],
        ['random rows', Array.from(randn(3 * 17, 70, 3)), 3, 17],
        ['huge magnitudes', [1e30, -1e30, 0, 5, 1e4, 1e4 - 1, -1e4, 0], 2, 4],
        ['equal entries', [7, 7, 7, 7, -3e38, -3e38, -3e38, -3e38], 2, 4],
        ['a large vocabulary', Array.from(randn(2 * 5000, 71, 5)), 2, 5000],
      ];
      for (const [what, data, S, V] of cases) {
        it(what, async () => {
          const x = upF(Float32Array.from(data), [S, V]);
          const xs = await down(x);
          const out = await down(be().logSoftmax(x));
          for (const v of out) assert.ok(Number.isFinite(v), `logSoftmax gave ${v}`);
          expectClose('logSoftmax', out, logSoftmaxRef(xs, S, V), tol);
        });
      }
      it('rejects a non-2D input', () => {
        assert.throws(() => be().logSoftmax(upF(randn(4, 1), [4])), /logSoftmax/);
      });
    });

    describe('sampling', () => {
      const params = (p: Partial<SamplingParams>): SamplingParams => ({ temperature: 1, topK: 0, topP: 1, minP: 0, seed: 0, step: 0, ...p });
      /** Sample `rows` copies of one logits row, row i with seed `seed0 + i`. */
      const drawMany = async (logits: number[], rows: number, p: Partial<SamplingParams>, seed0 = 0): Promise<Int32Array> => {
        const V = logits.length;
        const data = new Float32Array(rows * V);
        for (let r = 0; r < rows; r++) data.set(logits, r * V);
        const res = await be().sample(upF(data, [rows, V]), Array.from({ length: rows }, (_, r) => params({ ...p, seed: seed0 + r })));
        assert.equal(res.ids.length, rows);
        return res.ids;
      };
      const seen = (ids: Int32Array): number[] => [...new Set(ids)].sort((a, b) => a - b);
      const logOf = (probs: number[]): number[] => probs.map(Math.log);

      it('temperature 0 is argmax, lowest id on ties, whatever the filters', async () => {
        const S = 6;
        const V = 50;
        const data = randn(S * V, 80, 2);
        data.fill(-10, 0, V);
        data.set([1, 3, 3, 2, -1], 0); // row 0: a tie between ids 1 and 2
        const x = upF(data, [S, V]);
        const xs = await down(x);
        const res = await be().sample(x, Array.from({ length: S }, (_, s) => params({ temperature: 0, topK: s, topP: 0.5, minP: 0.2, seed: s })));
        for (let s = 0; s < S; s++) assert.equal(res.ids[s], argmaxRef(xs.subarray(s * V, (s + 1) * V)), `row ${s}`);
        assert.equal(res.ids[0], 1);
      });

      it('top-k 1 is argmax', async () => {
        const logits = Array.from(randn(40, 81));
        assert.deepEqual(seen(await drawMany(logits, 50, { topK: 1, temperature: 1.5 })), [argmaxRef(logits)]);
      });

      it('logprobs are log_softmax of the raw logits at the chosen ids', async () => {
        const S = 5;
        const V = 64;
        const x = upF(randn(S * V, 82, 3), [S, V]);
        const xs = await down(x);
        const ps = [
          params({ temperature: 0 }),
          params({ temperature: 0.7, seed: 1 }),
          params({ temperature: 1.3, topK: 5, seed: 2 }),
          params({ temperature: 1, topP: 0.6, seed: 3 }),
          params({ temperature: 2, minP: 0.1, seed: 4 }),
        ];
        const res = await be().sample(x, ps);
        const ls = logSoftmaxRef(xs, S, V);
        expectClose('logprobs', res.logprobs, Array.from(res.ids, (id, s) => ls[s * V + id]), tol);
      });

      it('the same seed and step give the same token, whatever shares the batch', async () => {
        const V = 30;
        const row = randn(V, 83, 0.5);
        const other = randn(3 * V, 84, 0.5);
        const p = params({ seed: 1234, step: 9, temperature: 1.1, topP: 0.95 });
        const alone = await be().sample(upF(row, [1, V]), [p]);
        const data = new Float32Array(4 * V);
        data.set(other.subarray(0, 2 * V), 0);
        data.set(row, 2 * V);
        data.set(other.subarray(2 * V), 3 * V);
        const ps = [params({ seed: 1 }), params({ seed: 2, temperature: 0 }), p, params({ seed: 1234, step: 10 })];
        const batched = await be().sample(upF(data, [4, V]), ps);
        assert.equal(batched.ids[2], alone.ids[0]);
        assert.equal((await be().sample(upF(row, [1, V]), [p])).ids[0], alone.ids[0]);
      });

      it('different seeds and different steps give varied tokens', async () => {
        const flat = new Array(16).fill(0);
        assert.ok(seen(await drawMany(flat, 200, {})).length >= 14, 'seeds 0..199 over 16 equal tokens');
        const V = 16;
        const res = await be().sample(upF(new Float32Array(200 * V), [200, V]), Array.from({ length: 200 }, (_, i) => params({ seed: 7, step: i })));
        assert.ok(seen(res.ids).length >= 14, 'steps 0..199 of one seed');
      });

      it('tokens match the reference draw u = uniformAt(seed, step) over the kept set', async () => {
        const V = 12;
        const logits = Array.from(randn(V, 85, 1.5));
        const cases = [params({}), params({ temperature: 0.6, topK: 7 }), params({ topP: 0.8 }), params({ minP: 0.15, temperature: 1.4 }), params({ topK: 9, topP: 0.9, minP: 0.05 })];
        for (const base of cases) {
          const rows = 300;
          const ps = Array.from({ length: rows }, (_, r) => ({ ...base, seed: 1000 + r, step: r % 5 }));
          const data = new Float32Array(rows * V);
          for (let r = 0; r < rows; r++) data.set(logits, r * V);
          const x = upF(data, [rows, V]);
          const xs = await down(x);
          const res = await be().sample(x, ps);
          let compared = 0;
          for (let r = 0; r < rows; r++) {
            const ref = sampleRef(xs.subarray(r * V, (r + 1) * V), ps[r]);
            if (ref.ambiguous) continue;
            compared++;
            assert.equal(res.ids[r], ref.id, `row ${r} under ${JSON.stringify(base)}`);
          }
          assert.ok(compared > rows * 0.95);
        }
      });

      it('tied probabilities are drawn in id order, like the reference', async () => {
        const logits = [0.5, 1, 1, 0.2, 1, 0.5, 0.5, -1];
        for (const base of [params({}), params({ topK: 4 }), params({ topP: 0.7 })]) {
          const rows = 300;
          const ps = Array.from({ length: rows }, (_, r) => ({ ...base, seed: 77 + r, step: 1 }));
          const data = new Float32Array(rows * logits.length);
          for (let r = 0; r < rows; r++) data.set(logits, r * logits.length);
          const res = await be().sample(upF(data, [rows, logits.length]), ps);
          for (let r = 0; r < rows; r++) {
            const ref = sampleRef(logits, ps[r]);
            if (!ref.ambiguous) assert.equal(res.ids[r], ref.id, `row ${r} under ${JSON.stringify(base)}`);
          }
        }
      });

      it('top-k keeps exactly the k most likely tokens', async () => {
        const logits = Array.from(randn(20, 86, 0.3)); // others in about [-1, 1]
        const allowed = [2, 5, 11, 13, 17];
        [2.0, 2.3, 2.1, 1.9, 2.2].forEach((v, i) => (logits[allowed[i]] = v));
        assert.deepEqual(seen(await drawMany(logits, 400, { topK: 5 })), allowed);
        // Without top-k the others do appear, so the check above can fail.
        assert.ok(seen(await drawMany(logits, 400, {})).length > 5);
      });

      it('top-k breaks ties at the boundary by lower id', async () => {
        assert.deepEqual(seen(await drawMany([1, 5, 5, 5, 0], 200, { topK: 2 })), [1, 2]);
      });

      it('top-p keeps exactly the smallest prefix reaching topP', async () => {
        const probs = [0.06, 0.4, 0.04, 0.2, 0.3];
        const logits = logOf(probs);
        assert.deepEqual(seen(await drawMany(logits, 400, { topP: 0.85 })), [1, 3, 4]);
        assert.deepEqual(seen(await drawMany(logits, 400, { topP: 0.5 })), [1, 4]);
        assert.deepEqual(seen(await drawMany(logits, 400, { topP: 0.3 })), [1]);
        assert.deepEqual(seen(await drawMany(logits, 400, { topP: 0.99 })), [0, 1, 2, 3, 4]);
      });

      it('top-p on the top-k set renormalises over that set', async () => {
        // Top-3 set {1: 0.4, 4: 0.3, 3: 0.2}, renormalised 0.444, 0.333, 0.222: top-p 0.75 -> {1, 4};
        // on the full distribution 0.4 + 0.3 = 0.7 < 0.75 would keep id 3 as well.
        const logits = logOf([0.06, 0.4, 0.04, 0.2, 0.3]);
        assert.deepEqual(seen(await drawMany(logits, 400, { topK: 3, topP: 0.75 })), [1, 4]);
        assert.deepEqual(seen(await drawMany(logits, 400, { topP: 0.75 })), [1, 3, 4]);
      });

      it('min-p keeps exactly the tokens with p >= minP * pmax', async () => {
        const probs = [0.08, 0.3, 0.07, 0.2, 0.25, 0.1];
        const logits = logOf(probs);
        assert.deepEqual(seen(await drawMany(logits, 400, { minP: 0.5 })), [1, 3, 4]); // p >= 0.15
        assert.deepEqual(seen(await drawMany(logits, 400, { minP: 0.3 })), [1, 3, 4, 5]); // p >= 0.09
        assert.deepEqual(seen(await drawMany(logits, 400, { minP: 1 })), [1]);
      });

      it('combined temperature, top-k, top-p and min-p keep the reference set', async () => {
        const logits = [0.5, 2.0, -1.0, 1.6, 0.9, 1.75, 1.2, -3, 1.0, 0.0, 1.45, -0.5];
        const p = params({ temperature: 0.8, topK: 7, topP: 0.9, minP: 0.12 });
        const kept = keptSetRef(logits, p);
        assert.ok(kept.margin > 0.005, `the case must not sit on a boundary (margin ${kept.margin})`);
        assert.ok(Math.min(...kept.probs) > 0.03 && kept.ids.length >= 3 && kept.ids.length < 7, `kept ${kept.ids}`);
        assert.deepEqual(seen(await drawMany(logits, 1500, p)), [...kept.ids].sort((a, b) => a - b));
      });

      it('frequencies over 4000 seeds match the renormalised probabilities', async () => {
        const logits = [0.1, 1.2, -0.4, 0.8, 0.3, -2, 1.0, 0.5];
        for (const p of [params({}), params({ temperature: 0.7, topK: 6, topP: 0.9 }), params({ temperature: 1.5, minP: 0.2 })]) {
          const n = 4000;
          const ids = await drawMany(logits, n, { ...p, step: 3 });
          const kept = keptSetRef(logits, p);
          const counts = new Map<number, number>();
          for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
          for (const id of counts.keys()) assert.ok(kept.ids.includes(id), `token ${id} is outside the kept set ${kept.ids}`);
          kept.ids.forEach((id, j) => {
            const f = (counts.get(id) ?? 0) / n;
            // sd of a frequency is at most sqrt(0.25 / 4000) = 0.008: allow ~4 sd.
            assert.ok(Math.abs(f - kept.probs[j]) < 0.03, `token ${id}: frequency ${f}, probability ${kept.probs[j]} under ${JSON.stringify(p)}`);
          });
        }
      });

      it('huge logits give the top token and finite logprobs', async () => {
        // 0.99e30 stays distinct from 1e30 in bf16 (0.999e30 would round onto it: a true tie).
        const ids = await drawMany([-1e30, 1e30, 0, 1e30 * 0.99], 50, { temperature: 1 });
        assert.deepEqual(seen(ids), [1]);
        const res = await be().sample(upF(Float32Array.from([-1e30, 1e30, 0]), [1, 3]), [params({ temperature: 0.5, topP: 0.9 })]);
        assert.equal(res.ids[0], 1);
        assert.equal(res.logprobs[0], 0);
      });

      it('rejects bad params and shapes', async () => {
        const x = upF(randn(8, 1), [2, 4]);
        await assert.rejects(be().sample(x, [params({})]), /sample/);
        await assert.rejects(be().sample(x, [params({}), params({ topP: 0 })]), /topP/);
        await assert.rejects(be().sample(x, [params({ temperature: -1 }), params({})]), /temperature/);
        await assert.rejects(be().sample(x, [params({ minP: 2 }), params({})]), /minP/);
        await assert.rejects(be().sample(upF(randn(8, 1), [8]), [params({})]), /sample/);
      });
    });

    // Backward and training ops (conformance-training.ts), with the same backend and tolerance.
    runFusedConformance(be, tol, floatDtype);
    runFeedConformance(be, floatDtype);
    runTrainingConformance(be, tol, floatDtype);
  });
}
