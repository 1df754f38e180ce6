/**
 * Conformance of the fused forward ops (linearMany, linearSwiglu, normLinearMany, normLinearSwiglu,
 * ropeWriteKv, ropeAttentionDecode): each must give
 * what the plain ops it stands for give. Products are checked against the float64 references
 * (the fused path may round differently from the plain one, within `tol`); ropeWriteKv against
 * rope + writeKv on the same backend, bit for bit (q, k, and attention over the written cache);
 * ropeAttentionDecode against ropeWriteKv + attention, bit for bit (its output, and a later
 * query's attention over the cache it wrote).
 * Shapes cover the decode kernels' batch sizes (1-8 rows, K a multiple of 8, several packs per
 * lane) and what they decline (9 rows, K odd), so both paths of a backend with a fast path run.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttnMeta, Backend, DType, Tensor } from '../../src/backend/backend.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { expectClose, type Tolerance } from './expect-close.ts';
import { addRef, linearRef, rmsnormRef, ropeRef, swigluRef } from './reference.ts';

export function runFusedConformance(be: () => Backend, tol: Tolerance, floatDtype: DType): void {
  const randn = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);
  const size = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);
  const upF = (data: Float32Array, shape: number[]): Tensor => be().upload(data, shape, floatDtype);
  const upI = (data: readonly number[]): Tensor => be().upload(Int32Array.from(data), [data.length], 'i32', 'scratch');
  const down = async (t: Tensor): Promise<Float32Array> => (await be().download(t)) as Float32Array;
  const held = async (shape: number[], seed: number, std = 1): Promise<[Tensor, Float32Array]> => {
    const t = upF(randn(size(shape), seed, std), shape);
    return [t, await down(t)];
  };
  /** Values rounded as the backend rounds its activations (bf16 backends hold products in bf16). */
  const roundTrip = async (v: Float64Array, shape: number[]): Promise<Float32Array> => down(upF(Float32Array.from(v), shape));

  describe('fused: linearMany', () => {
    const cases: { T: number; K: number; Ns: number[]; bias: boolean }[] = [
      { T: 1, K: 64, Ns: [32, 8, 8], bias: true },
      { T: 3, K: 520, Ns: [24, 16, 16], bias: false },
      { T: 8, K: 1032, Ns: [16, 8], bias: true },
      { T: 5, K: 2056, Ns: [9], bias: true },
      { T: 2, K: 4104, Ns: [16, 8, 8], bias: true },
      { T: 9, K: 64, Ns: [16, 8, 8], bias: true },
      { T: 2, K: 13, Ns: [5, 3, 3], bias: false },
      { T: 4, K: 64, Ns: [8, 8, 8, 8], bias: false },
    ];
    for (const c of cases) {
      it(`x [${c.T}, ${c.K}] with ${c.Ns.length} parts of ${c.Ns.join('/')} rows${c.bias ? ' + bias' : ''}`, async () => {
        const [x, xs] = await held([c.T, c.K], 7 + c.T);
        const parts = await Promise.all(
          c.Ns.map(async (N, i) => {
            const [w, ws] = await held([N, c.K], 100 + 10 * i + N, 1 / Math.sqrt(c.K));
            const [b, bs] = await held([N], 200 + i);
            return { w, ws, b, bs, N };
          }),
        );
        const outs = be().linearMany(x, parts.map((p) => (c.bias ? { w: p.w, bias: p.b } : { w: p.w })));
        assert.equal(outs.length, parts.length);
        for (let i = 0; i < parts.length; i++) {
          const p = parts[i];
          assert.deepEqual(outs[i].shape, [c.T, p.N]);
          expectClose(`linearMany part ${i}`, await down(outs[i]), linearRef(xs, p.ws, c.bias ? p.bs : null, c.T, c.K, p.N), tol);
        }
      });
    }
    it('rejects an empty list and mismatched parts', async () => {
      const [x] = await held([2, 8], 1);
      const [w] = await held([4, 8], 2);
      const [bad] = await held([4, 6], 3);
      assert.throws(() => be().linearMany(x, []), /linearMany/);
      assert.throws(() => be().linearMany(x, [{ w }, { w: bad }]), /linearMany.*\[2, 8\].*\[4, 6\]/);
      assert.throws(() => be().linearMany(x, [{ w, bias: bad }]), /linearMany.*bias/);
    });
  });

  describe('fused: linearSwiglu', () => {
    const cases: { T: number; K: number; F: number; bias: boolean }[] = [
      { T: 1, K: 64, F: 40, bias: false },
      { T: 2, K: 1032, F: 17, bias: true },
      { T: 8, K: 264, F: 24, bias: false },
      { T: 12, K: 64, F: 16, bias: true },
      { T: 3, K: 7, F: 5, bias: false },
    ];
    for (const c of cases) {
      it(`x [${c.T}, ${c.K}] -> [${c.T}, ${c.F}]${c.bias ? ' + biases' : ''}`, async () => {
        const [x, xs] = await held([c.T, c.K], 30 + c.T, 2);
        const [wg, wgs] = await held([c.F, c.K], 31 + c.F, 1 / Math.sqrt(c.K));
        const [wu, wus] = await held([c.F, c.K], 32 + c.F, 1 / Math.sqrt(c.K));
        const [bg, bgs] = await held([c.F], 33);
        const [bu, bus] = await held([c.F], 34);
        const out = be().linearSwiglu(x, c.bias ? { w: wg, bias: bg } : { w: wg }, c.bias ? { w: wu, bias: bu } : { w: wu });
        assert.deepEqual(out.shape, [c.T, c.F]);
        const shape = [c.T, c.F];
        const g = await roundTrip(linearRef(xs, wgs, c.bias ? bgs : null, c.T, c.K, c.F), shape);
        const u = await roundTrip(linearRef(xs, wus, c.bias ? bus : null, c.T, c.K, c.F), shape);
        expectClose('linearSwiglu', await down(out), swigluRef(g, u), tol);
      });
    }
    it('rejects gate and up of different sizes', async () => {
      const [x] = await held([1, 8], 1);
      const [wg] = await held([4, 8], 2);
      const [wu] = await held([5, 8], 3);
      assert.throws(() => be().linearSwiglu(x, { w: wg }, { w: wu }), /linearSwiglu.*\[4, 8\].*\[5, 8\]/);
    });
  });

  describe('fused: normLinearMany and normLinearSwiglu', () => {
    const cases: { T: number; K: number; residual: boolean }[] = [
      { T: 1, K: 64, residual: true },
      { T: 3, K: 1032, residual: true },
      { T: 4, K: 256, residual: false },
      { T: 6, K: 64, residual: true },
      { T: 2, K: 4104, residual: true },
    ];
    for (const c of cases) {
      it(`x [${c.T}, ${c.K}]${c.residual ? ' + residual' : ''}: the norm's sum, q/k/v-like products and the SwiGLU`, async () => {
        const { T, K } = c;
        const [x, xs] = await held([T, K], 60 + T, 2);
        const [r, rs] = await held([T, K], 61 + T, 3);
        const [nw, nws] = await held([K], 62, 0.5);
        const eps = 1e-6;
        const norm = c.residual ? { w: nw, eps, residual: r } : { w: nw, eps };
        const sumRef = c.residual ? await roundTrip(addRef(xs, rs), [T, K]) : xs;
        const y = await roundTrip(rmsnormRef(sumRef, nws, eps, T, K), [T, K]);
        const Ns = [24, 8, 8];
        const ws = await Promise.all(Ns.map((N, i) => held([N, K], 63 + i, 1 / Math.sqrt(K))));
        const [b, bs] = await held([24], 66);
        const many = be().normLinearMany(x, norm, [{ w: ws[0][0], bias: b }, { w: ws[1][0] }, { w: ws[2][0] }]);
        expectClose('normLinearMany sum', await down(many.sum), sumRef, tol);
        for (let i = 0; i < 3; i++) {
          expectClose(`normLinearMany part ${i}`, await down(many.outs[i]), linearRef(y, ws[i][1], i === 0 ? bs : null, T, K, Ns[i]), tol);
        }
        const F = 40;
        const [wg, wgs] = await held([F, K], 67, 1 / Math.sqrt(K));
        const [wu, wus] = await held([F, K], 68, 1 / Math.sqrt(K));
        const mlp = be().normLinearSwiglu(x, norm, { w: wg }, { w: wu });
        expectClose('normLinearSwiglu sum', await down(mlp.sum), sumRef, tol);
        const g = await roundTrip(linearRef(y, wgs, null, T, K, F), [T, F]);
        const u = await roundTrip(linearRef(y, wus, null, T, K, F), [T, F]);
        expectClose('normLinearSwiglu', await down(mlp.out), swigluRef(g, u), tol);
      });
    }
    it('rejects a norm weight of the wrong size', async () => {
      const [x] = await held([1, 8], 1);
      const [w] = await held([4, 8], 2);
      const [nw] = await held([7], 3);
      assert.throws(() => be().normLinearMany(x, { w: nw, eps: 1e-6 }, [{ w }]), /rmsnorm.*\[7\]/);
      assert.throws(() => be().normLinearSwiglu(x, { w: nw, eps: 1e-6 }, { w }, { w }), /rmsnorm.*\[7\]/);
    });
  });

  describe('fused: ropeWriteKv', () => {
    const cases: { T: number; H: number; Hkv: number; D: number }[] = [
      { T: 1, H: 4, Hkv: 2, D: 64 },
      { T: 5, H: 7, Hkv: 1, D: 128 },
      { T: 3, H: 2, Hkv: 2, D: 32 },
    ];
    for (const c of cases) {
      it(`q [${c.T}, ${c.H}, ${c.D}], k / v [${c.T}, ${c.Hkv}, ${c.D}] equal rope + writeKv`, async () => {
        const { T, H, Hkv, D } = c;
        const blockSize = 4;
        const prefix = 40;
        const ctx = prefix + T;
        // One sequence: a cached prefix of 40 positions (written first, with writeKv), then the T
        // new tokens at positions 40..; its blocks in reverse order so slots are not positions.
        const needed = Math.ceil(ctx / blockSize);
        const blockTable = Array.from({ length: needed }, (_, b) => needed - b);
        const slotOf = (p: number): number => blockTable[Math.floor(p / blockSize)] * blockSize + (p % blockSize);
        const positions = Array.from({ length: T }, (_, t) => prefix + t);
        const slots = positions.map(slotOf);
        const prefixSlots = Array.from({ length: prefix }, (_, p) => slotOf(p));
        const spec = { numLayers: 2, numBlocks: needed + 1, blockSize, numKvHeads: Hkv, headDim: D, dtype: floatDtype };
        const invFreq = upF(Float32Array.from({ length: D / 2 }, (_, j) => 1 / Math.pow(1e6, (2 * j) / D)), [D / 2]);
        const [q0, qs] = await held([T, H, D], 50 + T);
        const [k0, ks] = await held([T, Hkv, D], 51 + T);
        const [v0] = await held([T, Hkv, D], 52 + T);
        const [pk] = await held([prefix, Hkv, D], 53);
        const [pv] = await held([prefix, Hkv, D], 54);
        const copyOf = async (t: Tensor, seedShape: number[]): Promise<Tensor> => upF(await down(t), seedShape);
        const run = async (fused: boolean): Promise<{ q: Float32Array; k: Float32Array; attn: Float32Array }> => {
          const cache = be().allocKvCache(spec);
          try {
            const q = await copyOf(q0, [T, H, D]);
            const k = await copyOf(k0, [T, Hkv, D]);
            be().writeKv(cache, 1, pk, pv, upI(prefixSlots));
            if (fused) be().ropeWriteKv(q, k, v0, upI(positions), invFreq, cache, 1, upI(slots));
            else {
              be().rope(q, k, upI(positions), invFreq);
              be().writeKv(cache, 1, k, v0, upI(slots));
            }
            const meta: AttnMeta = {
              cuSeqlensQ: upI([0, T]),
              contextLens: upI([ctx]),
              blockTables: be().upload(Int32Array.from(blockTable), [1, blockTable.length], 'i32', 'scratch'),
              maxSeqlenQ: T,
              maxContextLen: ctx,
            };
            const attn = be().attention(q, cache, 1, meta, 1 / Math.sqrt(D));
            return { q: await down(q), k: await down(k), attn: await down(attn) };
          } finally {
            be().freeKvCache(cache);
          }
        };
        const plain = await run(false);
        const fused = await run(true);
        expectClose('rotated q vs reference', fused.q, ropeRef(qs, Int32Array.from(positions), await down(invFreq), T, H, D), tol);
        expectClose('rotated k vs reference', fused.k, ropeRef(ks, Int32Array.from(positions), await down(invFreq), T, Hkv, D), tol);
        assert.deepEqual(fused.q, plain.q, 'q as rope rotates it');
        assert.deepEqual(fused.k, plain.k, 'k as rope rotates it');
        assert.deepEqual(fused.attn, plain.attn, 'attention over the cache as writeKv fills it');
      });
    }
  });

  describe('fused: ropeAttentionDecode', () => {
    // Decode batches (one new token per sequence) of several context lengths: 1 key (the new token
    // alone), a tile edge, a few tiles, and one long enough for split-K on a GPU (contexts >= 512
    // with few rows); shapes the tiled kernel takes (D 64 / 128, groups of 2, 7 and 8 heads) and
    // one it declines (D 32). A prefill-shaped batch checks the contract holds for any batch.
    const cases: { name: string; H: number; Hkv: number; D: number; qlens: number[]; ctxs: number[] }[] = [
      { name: 'Qwen2.5-3B heads, 4 sequences', H: 16, Hkv: 2, D: 128, qlens: [1, 1, 1, 1], ctxs: [1, 33, 130, 700] },
      { name: 'one sequence at a tile edge', H: 4, Hkv: 2, D: 64, qlens: [1], ctxs: [64] },
      { name: 'GQA 7:1', H: 7, Hkv: 1, D: 64, qlens: [1, 1], ctxs: [17, 520] },
      { name: 'head dim 32 (declined by the tiled kernel)', H: 4, Hkv: 2, D: 32, qlens: [1, 1], ctxs: [5, 40] },
      { name: 'a prefill chunk beside a decode row', H: 4, Hkv: 2, D: 64, qlens: [3, 1], ctxs: [10, 20] },
    ];
    for (const c of cases) {
      it(`${c.name}: output and cache equal ropeWriteKv + attention`, async () => {
        const { H, Hkv, D } = c;
        const blockSize = 16;
        const S = c.qlens.length;
        const T = c.qlens.reduce((a, b) => a + b, 0);
        const perSeq = Math.ceil(Math.max(...c.ctxs) / blockSize);
        // Sequence s's blocks, interleaved and reversed so that slots are not positions.
        const blockTables = Array.from({ length: S * perSeq }, (_, i) => {
          const s = Math.floor(i / perSeq);
          const b = i % perSeq;
          return b < Math.ceil(c.ctxs[s] / blockSize) ? 1 + (perSeq - 1 - b) * S + s : -1;
        });
        const slotOf = (s: number, p: number): number => blockTables[s * perSeq + Math.floor(p / blockSize)] * blockSize + (p % blockSize);
        const cu = [0];
        c.qlens.forEach((n) => cu.push(cu[cu.length - 1] + n));
        const rowSeq = Array.from({ length: T }, (_, t) => cu.findIndex((_, s) => t < cu[s + 1]));
        const positions = Array.from({ length: T }, (_, t) => c.ctxs[rowSeq[t]] - cu[rowSeq[t] + 1] + t);
        const slots = positions.map((p, t) => slotOf(rowSeq[t], p));
        // The cached prefix of every sequence (positions before its new tokens), written first.
        const prefixSlots = c.ctxs.flatMap((ctx, s) => Array.from({ length: ctx - c.qlens[s] }, (_, p) => slotOf(s, p)));
        const P = prefixSlots.length;
        const spec = { numLayers: 2, numBlocks: 1 + S * perSeq, blockSize, numKvHeads: Hkv, headDim: D, dtype: floatDtype };
        const invFreq = upF(Float32Array.from({ length: D / 2 }, (_, j) => 1 / Math.pow(1e6, (2 * j) / D)), [D / 2]);
        const [q0] = await held([T, H, D], 60 + T + D);
        const [k0] = await held([T, Hkv, D], 61 + T);
        const [v0] = await held([T, Hkv, D], 62 + T);
        const [pk] = await held([Math.max(P, 1), Hkv, D], 63);
        const [pv] = await held([Math.max(P, 1), Hkv, D], 64);
        const [probe] = await held([S, H, D], 65); // a later decode query per sequence, to read the cache back
        const meta = (qlens: number[]): AttnMeta => {
          const offsets = [0];
          qlens.forEach((n) => offsets.push(offsets[offsets.length - 1] + n));
          return {
            cuSeqlensQ: upI(offsets),
            contextLens: upI(c.ctxs),
            blockTables: be().upload(Int32Array.from(blockTables), [S, perSeq], 'i32', 'scratch'),
            maxSeqlenQ: Math.max(...qlens),
            maxContextLen: Math.max(...c.ctxs),
          };
        };
        const run = async (fused: boolean): Promise<{ attn: Float32Array; probe: Float32Array }> => {
          const cache = be().allocKvCache(spec);
          try {
            const q = upF(await down(q0), [T, H, D]);
            const k = upF(await down(k0), [T, Hkv, D]);
            if (P > 0) be().writeKv(cache, 1, be().view(pk, [P, Hkv, D]), be().view(pv, [P, Hkv, D]), upI(prefixSlots));
            const m = meta(c.qlens);
            let attn: Tensor;
            if (fused) attn = be().ropeAttentionDecode(q, k, v0, upI(positions), invFreq, cache, 1, upI(slots), m, 1 / Math.sqrt(D));
            else {
              be().ropeWriteKv(q, k, v0, upI(positions), invFreq, cache, 1, upI(slots));
              attn = be().attention(q, cache, 1, m, 1 / Math.sqrt(D));
            }
            // The probe attends over every position of every sequence: it sees each stored K and V.
            const seen = be().attention(probe, cache, 1, meta(c.qlens.map(() => 1)), 1 / Math.sqrt(D));
            return { attn: await down(attn), probe: await down(seen) };
          } finally {
            be().freeKvCache(cache);
          }
        };
        const plain = await run(false);
        const fused = await run(true);
        assert.equal(fused.attn.length, T * H * D);
        assert.ok(fused.attn.some((x) => x !== 0), 'the output is not all zeros');
        assert.deepEqual(fused.attn, plain.attn, 'attention output');
        assert.deepEqual(fused.probe, plain.probe, 'a later query over the cache: the stored K and V');
      });
    }
  });
}
