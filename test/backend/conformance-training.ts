/**
 * Conformance cases for the backward and training ops, run by runBackendConformance (so every
 * backend runs them, with its own tolerance). References are the float64 loops of
 * reference-training.ts, computed from the values the backend holds. Activations and weights
 * are uploaded in the suite's float dtype; accumulators (dw) and optimizer state are f32, as
 * the contract keeps them.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AdamWStep, Backend, DType, Tensor } from '../../src/backend/backend.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { expectClose } from './expect-close.ts';
import type { Tolerance } from './expect-close.ts';
import { ropeRef } from './reference.ts';
import {
  adamwRef,
  attentionPackedBackwardRef,
  attentionPackedRef,
  linearBackwardInputRef,
  linearBackwardWeightRef,
  rmsnormBackwardRef,
  ropeBackwardRef,
  scatterRowsRef,
  sumSquaresRef,
  swigluBackwardRef,
  tokenLogprobsBackwardRef,
  tokenLogprobsRef,
} from './reference-training.ts';

/** A packed attention case: heads, head dim and the sequences' lengths. */
interface PackedCase {
  H: number;
  Hkv: number;
  D: number;
  lens: number[];
}

export function runTrainingConformance(be: () => Backend, tol: Tolerance, floatDtype: DType): void {
  const randn = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);
  const size = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);
  const upF = (data: Float32Array, shape: number[], dtype: DType = floatDtype): Tensor => be().upload(data, shape, dtype);
  const upI = (data: readonly number[]): Tensor => be().upload(Int32Array.from(data), [data.length], 'i32', 'scratch');
  const down = async (t: Tensor): Promise<Float32Array> => {
    const d = await be().download(t);
    assert.ok(d instanceof Float32Array, `download of a ${t.dtype} tensor should give a Float32Array`);
    return d;
  };
  /** Random floats uploaded (in `dtype`), with the values the backend then holds. */
  const held = async (shape: number[], seed: number, std = 1, dtype: DType = floatDtype): Promise<[Tensor, Float32Array]> => {
    const t = upF(randn(size(shape), seed, std), shape, dtype);
    return [t, await down(t)];
  };
  const cuOf = (lens: number[]): number[] => lens.reduce((cu, n) => [...cu, cu[cu.length - 1] + n], [0]);
  const invFreqFor = (D: number, theta: number): Float32Array => Float32Array.from({ length: D / 2 }, (_, j) => 1 / Math.pow(theta, (2 * j) / D));

  describe('training: linear backward', () => {
    const shapes: [number, number, number][] = [
      [1, 1, 1],
      [1, 7, 5],
      [3, 5, 1],
      [5, 13, 9],
      [17, 33, 19],
      [70, 100, 130], // several row and column blocks
      [6, 50, 300], // a long reduction for dx (N > 256)
      [300, 10, 6], // a long reduction for dw (T > 256)
    ];
    for (const [T, K, N] of shapes) {
      it(`dx = dy [${T}, ${N}] @ w [${N}, ${K}]`, async () => {
        const [dy, dys] = await held([T, N], 100 + T);
        const [w, ws] = await held([N, K], 101 + N, 1 / Math.sqrt(N));
        const dx = be().linearBackwardInput(dy, w);
        assert.deepEqual(dx.shape, [T, K]);
        expectClose('linearBackwardInput', await down(dx), linearBackwardInputRef(dys, ws, T, K, N), tol);
      });
      it(`dw [${N}, ${K}] += alpha dy^T x, accumulating over two calls`, async () => {
        const [dy, dys] = await held([T, N], 102 + T);
        const [x, xs] = await held([T, K], 103 + K);
        const [dw, dw0] = await held([N, K], 104 + N, 1, 'f32');
        be().linearBackwardWeight(dy, x, dw, 0.7);
        const once = linearBackwardWeightRef(dys, xs, dw0, 0.7, T, K, N);
        expectClose('linearBackwardWeight (first call)', await down(dw), once, tol);
        be().linearBackwardWeight(dy, x, dw, -0.25);
        expectClose('linearBackwardWeight (second call)', await down(dw), linearBackwardWeightRef(dys, xs, once, -0.25, T, K, N), tol);
      });
    }
    it('writes into a view of a flat buffer (a LoRA matrix) and nothing around it', async () => {
      const [dy, dys] = await held([4, 3], 105);
      const [x, xs] = await held([4, 5], 106);
      const flat = be().alloc([40], 'f32', 'persistent');
      be().linearBackwardWeight(dy, x, be().viewAt(flat, 10, [3, 5]), 1);
      const all = await down(flat);
      expectClose('dw inside the view', all.subarray(10, 25), linearBackwardWeightRef(dys, xs, new Float32Array(15), 1, 4, 5, 3), tol);
      assert.deepEqual([...all.subarray(0, 10), ...all.subarray(25)], new Array(25).fill(0), 'outside the view stays 0');
      be().free(flat);
    });
    it('rejects mismatched shapes and a non-finite alpha', () => {
      const dy = upF(randn(6, 1), [2, 3]);
      assert.throws(() => be().linearBackwardInput(dy, upF(randn(8, 1), [4, 2])), /linearBackwardInput.*w/);
      assert.throws(() => be().linearBackwardInput(upF(randn(6, 1), [6]), upF(randn(6, 1), [3, 2])), /linearBackwardInput.*dy/);
      const dw = be().alloc([3, 4], 'f32', 'scratch');
      assert.throws(() => be().linearBackwardWeight(dy, upF(randn(12, 1), [3, 4]), dw, 1), /linearBackwardWeight.*same T/);
      assert.throws(() => be().linearBackwardWeight(dy, upF(randn(8, 1), [2, 4]), be().alloc([4, 3], 'f32', 'scratch'), 1), /linearBackwardWeight.*dw/);
      assert.throws(() => be().linearBackwardWeight(dy, upF(randn(8, 1), [2, 4]), dw, NaN), /linearBackwardWeight.*alpha/);
    });
  });

  describe('training: rmsnorm, rope, swiglu backward', () => {
    for (const shape of [[1, 1], [3, 7], [4, 64], [2, 3, 5], [1, 1000]]) {
      it(`rmsnormBackward on x ${JSON.stringify(shape)}`, async () => {
        const C = shape[shape.length - 1];
        const [x, xs] = await held(shape, 110 + C, 3);
        const [dy, dys] = await held(shape, 111 + C);
        const [w, ws] = await held([C], 112 + C);
        const dx = be().rmsnormBackward(dy, x, w, 1e-6);
        assert.deepEqual(dx.shape, shape);
        expectClose('rmsnormBackward', await down(dx), rmsnormBackwardRef(dys, xs, ws, 1e-6, size(shape) / C, C), tol);
      });
    }
    it('rmsnormBackward with rows as small as eps', async () => {
      const [x, xs] = await held([3, 16], 113, 2e-3);
      const [dy, dys] = await held([3, 16], 114);
      const [w, ws] = await held([16], 115);
      expectClose('rmsnormBackward', await down(be().rmsnormBackward(dy, x, w, 1e-5)), rmsnormBackwardRef(dys, xs, ws, 1e-5, 3, 16), tol);
    });

    const ropeCases = [
      { T: 1, H: 1, Hkv: 1, D: 2, theta: 10000, positions: [3] },
      { T: 5, H: 8, Hkv: 2, D: 8, theta: 10000, positions: [0, 1, 2, 17, 100] },
      { T: 3, H: 2, Hkv: 1, D: 64, theta: 1000000, positions: [0, 30000, 32767] },
    ];
    for (const c of ropeCases) {
      it(`ropeBackward in place on dq [${c.T}, ${c.H}, ${c.D}], dk [${c.T}, ${c.Hkv}, ${c.D}]`, async () => {
        const [dq, dqs] = await held([c.T, c.H, c.D], 120 + c.D, 1, 'f32');
        const [dk, dks] = await held([c.T, c.Hkv, c.D], 121 + c.D, 1, 'f32');
        const f = upF(invFreqFor(c.D, c.theta), [c.D / 2], 'f32');
        const fs = await down(f);
        be().ropeBackward(dq, dk, upI(c.positions), f);
        expectClose('ropeBackward dq', await down(dq), ropeBackwardRef(dqs, c.positions, fs, c.T, c.H, c.D), tol);
        expectClose('ropeBackward dk', await down(dk), ropeBackwardRef(dks, c.positions, fs, c.T, c.Hkv, c.D), tol);
        // rope after ropeBackward turns the gradient back: the two rotations are inverses.
        be().rope(dq, dk, upI(c.positions), f);
        expectClose('rope(ropeBackward(dq))', await down(dq), dqs, tol);
        expectClose('rope(ropeBackward(dk))', await down(dk), dks, tol);
      });
    }
    it('ropeBackward rejects mismatched shapes', () => {
      const dq = upF(randn(16, 1), [2, 1, 8], 'f32');
      const f = upF(invFreqFor(8, 10000), [4], 'f32');
      assert.throws(() => be().ropeBackward(dq, dq, upI([0, 1, 2]), f), /ropeBackward.*positions/);
      assert.throws(() => be().ropeBackward(dq, upF(randn(12, 1), [2, 1, 6], 'f32'), upI([0, 1]), f), /ropeBackward.*dk/);
    });

    for (const shape of [[1, 1], [3, 7], [2, 64]]) {
      it(`swigluBackward on ${JSON.stringify(shape)}`, async () => {
        const [g, gs] = await held(shape, 130, 4);
        const [u, us] = await held(shape, 131);
        const [dy, dys] = await held(shape, 132);
        const { dGate, dUp } = be().swigluBackward(dy, g, u);
        const ref = swigluBackwardRef(dys, gs, us);
        expectClose('swigluBackward dGate', await down(dGate), ref.dGate, tol);
        expectClose('swigluBackward dUp', await down(dUp), ref.dUp, tol);
      });
    }
    it('swigluBackward saturates cleanly at large |gate| and rejects mismatched shapes', async () => {
      const g = upF(Float32Array.from([-1000, -100, -20, 0, 20, 100, 1000]), [1, 7]);
      const [u, us] = await held([1, 7], 133);
      const [dy, dys] = await held([1, 7], 134);
      const ref = swigluBackwardRef(dys, await down(g), us);
      const { dGate, dUp } = be().swigluBackward(dy, g, u);
      const loose = { atol: Math.max(tol.atol, 1e-30), rtol: tol.rtol };
      expectClose('swigluBackward dGate', await down(dGate), ref.dGate, loose);
      expectClose('swigluBackward dUp', await down(dUp), ref.dUp, loose);
      assert.throws(() => be().swigluBackward(dy, g, upF(randn(7, 1), [7, 1])), /swigluBackward/);
      assert.throws(() => be().swigluBackward(upF(randn(6, 1), [1, 6]), g, u), /swigluBackward.*dy/);
    });
  });

  describe('training: packed attention', () => {
    const cases: [string, PackedCase][] = [
      ['one token (T = 1)', { H: 2, Hkv: 1, D: 8, lens: [1] }],
      ['one sequence, no GQA', { H: 2, Hkv: 2, D: 16, lens: [9] }],
      ['GQA H/Hkv = 4, sequences of lengths 5, 1, 3', { H: 8, Hkv: 2, D: 16, lens: [5, 1, 3] }],
      ['a single KV head for 4 query heads, lengths 1, 7, 2, 1', { H: 4, Hkv: 1, D: 32, lens: [1, 7, 2, 1] }],
      ['head dim 64, lengths 20 and 11', { H: 2, Hkv: 1, D: 64, lens: [20, 11] }],
    ];
    for (const [what, c] of cases) {
      it(`forward and backward: ${what}`, async () => {
        const { H, Hkv, D, lens } = c;
        const cu = cuOf(lens);
        const T = cu[cu.length - 1];
        const seed = 140 + D + T;
        const [q, qs] = await held([T, H, D], seed);
        const [k, ks] = await held([T, Hkv, D], seed + 1);
        const [v, vs] = await held([T, Hkv, D], seed + 2);
        const [dout, douts] = await held([T, H, D], seed + 3);
        const scale = 1 / Math.sqrt(D);
        const { out, lse } = be().attentionPacked(q, k, v, upI(cu), scale);
        assert.deepEqual(out.shape, [T, H, D]);
        assert.deepEqual(lse.shape, [T, H]);
        const ref = attentionPackedRef(qs, ks, vs, cu, H, Hkv, D, scale);
        expectClose('attentionPacked out', await down(out), ref.out, tol);
        expectClose('attentionPacked lse', await down(lse), ref.lse, tol);
        const g = be().attentionPackedBackward(dout, q, k, v, out, lse, upI(cu), scale);
        assert.deepEqual(g.dk.shape, [T, Hkv, D]);
        const gref = attentionPackedBackwardRef(douts, qs, ks, vs, cu, H, Hkv, D, scale);
        expectClose('attentionPackedBackward dq', await down(g.dq), gref.dq, tol);
        expectClose('attentionPackedBackward dk', await down(g.dk), gref.dk, tol);
        expectClose('attentionPackedBackward dv', await down(g.dv), gref.dv, tol);
      });
    }
    it('large scores stay finite (max subtraction)', async () => {
      const k = upF(new Float32Array(3 * 16).fill(30), [3, 1, 16]);
      const v = upF(Float32Array.from({ length: 3 * 16 }, (_, i) => Math.floor(i / 16)), [3, 1, 16]);
      const q = upF(new Float32Array(3 * 16).fill(30), [3, 1, 16]);
      const { out, lse } = be().attentionPacked(q, k, v, upI([0, 3]), 1); // scores 14400
      // Equal scores: row i averages v rows 0..i, i.e. i / 2; lse = 14400 + log(i + 1).
      expectClose('attentionPacked out', await down(out), Float64Array.from({ length: 48 }, (_, i) => Math.floor(i / 16) / 2), tol);
      expectClose('attentionPacked lse', await down(lse), [14400, 14400 + Math.log(2), 14400 + Math.log(3)], tol);
    });
    it('rejects mismatched shapes and a non-finite scale', () => {
      const q = upF(randn(24, 1), [2, 3, 4]);
      const k = upF(randn(16, 1), [2, 2, 4]);
      const cu = upI([0, 2]);
      assert.throws(() => be().attentionPacked(q, k, k, cu, 1), /attentionPacked.*heads/);
      const q4 = upF(randn(32, 1), [2, 4, 4]);
      assert.throws(() => be().attentionPacked(q4, k, upF(randn(8, 1), [2, 1, 4]), cu, 1), /attentionPacked.*v/);
      assert.throws(() => be().attentionPacked(q4, upF(randn(12, 1), [3, 1, 4]), upF(randn(12, 1), [3, 1, 4]), cu, 1), /attentionPacked/);
      assert.throws(() => be().attentionPacked(q4, k, k, cu, NaN), /attentionPacked.*scale/);
      const lseBad = upF(randn(6, 1), [2, 3], 'f32');
      assert.throws(() => be().attentionPackedBackward(q4, q4, k, k, q4, lseBad, cu, 1), /attentionPackedBackward.*lse/);
      assert.throws(() => be().attentionPackedBackward(q, q4, k, k, q4, upF(randn(8, 1), [2, 4], 'f32'), cu, 1), /attentionPackedBackward.*dout/);
    });
  });

  describe('training: token logprobs', () => {
    const cases: [string, number, number, number, number][] = [
      ['a single entry', 1, 1, 1, 1],
      ['random rows', 3, 17, 1, 3],
      ['V = 1009 (prime) at temperature 0.7', 4, 1009, 0.7, 2],
      ['temperature 1.5', 2, 50, 1.5, 5],
    ];
    for (const [what, R, V, temp, std] of cases) {
      it(`forward and backward: ${what}`, async () => {
        const [logits, ls] = await held([R, V], 150 + V, std);
        const targets = Array.from({ length: R }, (_, r) => (r * 7919 + 3) % V);
        const lp = be().tokenLogprobs(logits, upI(targets), temp);
        assert.deepEqual(lp.shape, [R]);
        expectClose('tokenLogprobs', await down(lp), tokenLogprobsRef(ls, targets, temp, R, V), tol);
        const dls = randn(R, 151 + V);
        dls[0] = 0; // a row outside the loss gets a zero gradient
        const g = be().tokenLogprobsBackward(logits, upI(targets), temp, upF(dls, [R], 'f32'));
        assert.deepEqual(g.shape, [R, V]);
        expectClose('tokenLogprobsBackward', await down(g), tokenLogprobsBackwardRef(ls, targets, temp, dls, R, V), tol);
      });
    }
    it('huge logits stay finite', async () => {
      const data = Float32Array.from([1e30, -1e30, 0, 5, 1e4, 1e4 - 1, -1e4, 0]);
      const logits = upF(data, [2, 4]);
      const ls = await down(logits);
      const lp = await down(be().tokenLogprobs(logits, upI([3, 1]), 0.7));
      for (const x of lp) assert.ok(Number.isFinite(x) || x === -Infinity, `tokenLogprobs gave ${x}`);
      expectClose('tokenLogprobs', lp, tokenLogprobsRef(ls, [3, 1], 0.7, 2, 4), tol);
      const g = await down(be().tokenLogprobsBackward(logits, upI([3, 1]), 0.7, upF(Float32Array.from([1, -2]), [2], 'f32')));
      expectClose('tokenLogprobsBackward', g, tokenLogprobsBackwardRef(ls, [3, 1], 0.7, [1, -2], 2, 4), tol);
    });
    it('rejects bad temperatures and shapes', () => {
      const logits = upF(randn(8, 1), [2, 4]);
      const t = upI([0, 1]);
      for (const temp of [0, -1, NaN, Infinity]) assert.throws(() => be().tokenLogprobs(logits, t, temp), /tokenLogprobs.*temperature/);
      assert.throws(() => be().tokenLogprobs(logits, upI([0, 1, 2]), 1), /tokenLogprobs.*targets/);
      assert.throws(() => be().tokenLogprobs(logits, upF(randn(2, 1), [2]), 1), /tokenLogprobs.*targets/);
      assert.throws(() => be().tokenLogprobsBackward(logits, t, 1, upF(randn(3, 1), [3], 'f32')), /tokenLogprobsBackward.*dlogp/);
      assert.throws(() => be().tokenLogprobsBackward(logits, t, 0, upF(randn(2, 1), [2], 'f32')), /tokenLogprobsBackward.*temperature/);
    });
  });

  describe('training: scatterRows, sumSquares, adamw', () => {
    it('scatterRows places rows, adds up repeated ones, leaves the rest 0', async () => {
      for (const [idx, T] of [[[5, 0, 2], 6], [[1, 1, 3, 1], 4], [[0], 1]] as [number[], number][]) {
        const [src, ss] = await held([idx.length, 5], 160 + T);
        const out = be().scatterRows(src, upI(idx), T);
        assert.deepEqual(out.shape, [T, 5]);
        expectClose('scatterRows', await down(out), scatterRowsRef(ss, idx, T, 5), tol);
      }
      const src = upF(randn(6, 1), [2, 3]);
      assert.throws(() => be().scatterRows(src, upI([0]), 4), /scatterRows.*idx/);
      assert.throws(() => be().scatterRows(src, upI([0, 1]), -1), /scatterRows.*T/);
      assert.throws(() => be().scatterRows(src, upI([0, 1]), 2.5), /scatterRows.*T/);
    });

    it('sumSquares sums every element; NaN and Inf come through', async () => {
      const [x, xs] = await held([3, 7, 5], 170, 2, 'f32');
      const s = be().sumSquares(x);
      assert.deepEqual(s.shape, [1]);
      expectClose('sumSquares', await down(s), [sumSquaresRef(xs)], tol);
      const nan = Float32Array.from([1, 2, NaN, 3]);
      assert.ok(Number.isNaN((await down(be().sumSquares(upF(nan, [4], 'f32'))))[0]), 'a NaN element gives NaN');
      const inf = Float32Array.from([1, -Infinity, 3]);
      assert.equal((await down(be().sumSquares(upF(inf, [3], 'f32'))))[0], Infinity, 'an infinite element gives Infinity');
    });

    it('adamw over three steps, with and without a gradient scale', async () => {
      const n = 37;
      const param = upF(randn(n, 180), [n], 'f32');
      const m = be().alloc([n], 'f32', 'persistent');
      const v = be().alloc([n], 'f32', 'persistent');
      for (let step = 1; step <= 3; step++) {
        const h: AdamWStep = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step, gradScale: step === 2 ? 0.37 : 1 };
        const [grad, gs] = await held([n], 181 + step, 1, 'f32');
        const [ps, ms, vs] = [await down(param), await down(m), await down(v)];
        be().adamw(param, grad, m, v, h);
        const ref = adamwRef(ps, gs, ms, vs, h);
        expectClose(`adamw param, step ${step}`, await down(param), ref.param, tol);
        expectClose(`adamw m, step ${step}`, await down(m), ref.m, tol);
        expectClose(`adamw v, step ${step}`, await down(v), ref.v, tol);
      }
      for (const t of [param, m, v]) be().free(t);
    });

    it('adamw rejects bad hyperparameters and sizes', () => {
      const p = upF(randn(4, 1), [4], 'f32');
      const z = (): Tensor => be().alloc([4], 'f32', 'scratch');
      const ok: AdamWStep = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 1 };
      assert.doesNotThrow(() => be().adamw(p, z(), z(), z(), ok));
      assert.throws(() => be().adamw(p, be().alloc([5], 'f32', 'scratch'), z(), z(), ok), /adamw.*grad/);
      assert.throws(() => be().adamw(p, z(), z(), be().alloc([2, 3], 'f32', 'scratch'), ok), /adamw.*v/);
      const bad: [keyof AdamWStep, number][] = [
        ['lr', NaN], ['lr', -1], ['beta1', 1], ['beta2', -0.1], ['eps', -1],
        ['weightDecay', Infinity], ['step', 0], ['step', 1.5], ['gradScale', NaN], ['gradScale', -1],
      ];
      for (const [field, value] of bad) {
        assert.throws(() => be().adamw(p, z(), z(), z(), { ...ok, [field]: value }), new RegExp(`adamw.*${field}`), `${field} = ${value}`);
      }
    });
  });
}
