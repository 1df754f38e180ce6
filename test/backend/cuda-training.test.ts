/**
 * What the CUDA training ops promise beyond the conformance suite (which cuda.test.ts runs with
 * bf16 inputs): mixed dtypes as the trainer uses them (bf16 activations, f32 LoRA matrices,
 * gradients and optimizer state), sizes that take the kernels' other paths (attention rows past
 * one 32-key chunk, head dims that are not a power of two, cuBLASLt-sized products, a Qwen
 * vocabulary), and determinism: the same bits on every run, and AdamW equal to the CPU backend's
 * bit for bit. References are float64 loops (reference-training.ts) over the values the GPU holds.
 * Skipped, with the reason, where the addon or a GPU is missing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AdamWStep, DType, Tensor } from '../../src/backend/backend.ts';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { cudaUnavailableReason } from '../../src/backend/cuda/available.ts';
import { CudaBackend } from '../../src/backend/cuda/cuda-backend.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { expectClose } from './expect-close.ts';
import {
  attentionPackedBackwardRef,
  attentionPackedRef,
  linearBackwardInputRef,
  linearBackwardWeightRef,
  rmsnormBackwardRef,
  scatterRowsRef,
  sumSquaresRef,
  swigluBackwardRef,
  tokenLogprobsRef,
} from './reference-training.ts';

const skipReason = cudaUnavailableReason();
/** One bf16 rounding of an output (2^-8 relative) plus f32 sums. */
const BF16_OUT = { atol: 1e-2, rtol: 1e-2 };
/** f32 outputs of f32 sums over bf16 inputs. */
const F32_OUT = { atol: 1e-4, rtol: 1e-4 };

if (skipReason !== null) {
  describe('cuda training ops', () => {
    it('mixed dtypes, long sequences, determinism', { skip: skipReason }, () => {});
  });
} else {
  describe('cuda training ops', () => {
    const be = new CudaBackend();
    const randn = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);
    const size = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);
    const down = async (t: Tensor): Promise<Float32Array> => (await be.download(t)) as Float32Array;
    /** Random values uploaded as `dtype`, with what the GPU holds. */
    const held = async (shape: number[], seed: number, dtype: DType, std = 1): Promise<[Tensor, Float32Array]> => {
      const t = be.upload(randn(size(shape), seed, std), shape, dtype, 'scratch');
      return [t, await down(t)];
    };
    /** What a product sees of an f32 operand mixed with a bf16 one: its bf16 rounding. */
    const asBf16 = async (x: Float32Array): Promise<Float32Array> => down(be.upload(x, [x.length], 'bf16', 'scratch'));
    const i32 = (xs: readonly number[]): Tensor => be.upload(Int32Array.from(xs), [xs.length], 'i32', 'scratch');

    it('axpy and copy convert between bf16 and f32, rounding once in the destination', async () => {
      const [y, ys] = await held([1000], 1, 'bf16');
      const [x, xs] = await held([1000], 2, 'f32');
      be.axpy(y, x, 0.3);
      expectClose('axpy bf16 += f32', await down(y), Float64Array.from(ys, (v, i) => v + 0.3 * xs[i]), BF16_OUT);
      const f = be.alloc([1000], 'f32', 'scratch');
      be.copy(f, y);
      assert.deepEqual(await down(f), await down(y), 'bf16 -> f32 is exact');
      be.copy(y, x);
      assert.deepEqual(await down(y), await asBf16(xs), 'f32 -> bf16 rounds to nearest');
      be.resetScratch();
    });

    it('viewAt at any offset reads and writes only its window, and dies with its scratch tensor', async () => {
      const flat = be.alloc([37], 'f32', 'persistent');
      be.copy(be.viewAt(flat, 3, [2, 3]), be.upload(Float32Array.from([1, 2, 3, 4, 5, 6]), [6], 'bf16', 'scratch'));
      const all = await down(flat);
      assert.deepEqual([...all.subarray(0, 12)], [0, 0, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0]);
      assert.throws(() => be.viewAt(flat, 32, [6]), /viewAt: \[6\] \(6 elements\) at offset 32 does not fit/);
      const s = be.alloc([8], 'bf16', 'scratch');
      const v = be.viewAt(s, 1, [4]);
      be.resetScratch();
      assert.throws(() => be.zero(v), /scratch tensor used after resetScratch/);
      be.free(flat);
    });

    it('linear backward with mixed operands, a cuBLASLt-sized product and a misaligned dw view', async () => {
      const [T, K, N] = [257, 320, 192];
      const [dy, dys] = await held([T, N], 10, 'bf16');
      const [w, ws] = await held([N, K], 11, 'f32', 1 / Math.sqrt(N)); // an f32 LoRA-like matrix
      const dx = be.linearBackwardInput(dy, w);
      assert.equal(dx.dtype, 'bf16', 'dx has the incoming gradient dy\'s dtype');
      expectClose('dx = dy(bf16) @ w(f32)', await down(dx), linearBackwardInputRef(dys, await asBf16(ws), T, K, N), BF16_OUT);
      const [dyF, dyFs] = await held([T, N], 12, 'f32');
      const [wB, wBs] = await held([N, K], 13, 'bf16', 1 / Math.sqrt(N));
      const dxF = be.linearBackwardInput(dyF, wB);
      assert.equal(dxF.dtype, 'f32');
      expectClose('dx = dy(f32) @ w(bf16)', await down(dxF), linearBackwardInputRef(await asBf16(dyFs), wBs, T, K, N), F32_OUT);
      // dw [N, K] inside a flat f32 buffer at an odd element offset (4-byte alignment only).
      const [x, xs] = await held([T, K], 14, 'bf16');
      const flat = be.upload(randn(N * K + 7, 15), [N * K + 7], 'f32');
      const before = await down(flat);
      const dw = be.viewAt(flat, 5, [N, K]);
      be.linearBackwardWeight(dyF, x, dw, 0.5);
      const after = await down(flat);
      const ref = linearBackwardWeightRef(await asBf16(dyFs), xs, before.subarray(5, 5 + N * K), 0.5, T, K, N);
      expectClose('dw(f32 view) += 0.5 dy(f32)^T x(bf16)', after.subarray(5, 5 + N * K), ref, { atol: 1e-3, rtol: 1e-4 });
      assert.deepEqual([...after.subarray(0, 5), ...after.subarray(5 + N * K)], [...before.subarray(0, 5), ...before.subarray(5 + N * K)]);
      be.free(flat);
      be.resetScratch();
    });

    it('rmsnorm and swiglu backward take an f32 gradient over bf16 activations', async () => {
      const [R, C] = [5, 2048];
      const [dy, dys] = await held([R, C], 20, 'f32');
      const [x, xs] = await held([R, C], 21, 'bf16', 3);
      const [w, wsv] = await held([C], 22, 'bf16');
      const dx = be.rmsnormBackward(dy, x, w, 1e-6);
      assert.equal(dx.dtype, 'f32');
      expectClose('rmsnormBackward', await down(dx), rmsnormBackwardRef(dys, xs, wsv, 1e-6, R, C), F32_OUT);
      const [g, gs] = await held([R, C], 23, 'bf16', 4);
      const [u, us] = await held([R, C], 24, 'bf16');
      const { dGate, dUp } = be.swigluBackward(dy, g, u);
      const ref = swigluBackwardRef(dys, gs, us);
      expectClose('swigluBackward dGate', await down(dGate), ref.dGate, F32_OUT);
      expectClose('swigluBackward dUp', await down(dUp), ref.dUp, F32_OUT);
      be.resetScratch();
    });

    const attentionCases: [string, { H: number; Hkv: number; D: number; lens: number[]; dtype: DType; doutDtype: DType }][] = [
      ['rows past one 32-key chunk, D = 128, bf16, f32 dout', { H: 4, Hkv: 2, D: 128, lens: [70, 33, 1], dtype: 'bf16', doutDtype: 'f32' }],
      ['D = 80 (not a power of two), f32, GQA 3', { H: 3, Hkv: 1, D: 80, lens: [40, 65], dtype: 'f32', doutDtype: 'f32' }],
      ['D = 256, an empty sequence between two', { H: 2, Hkv: 2, D: 256, lens: [9, 0, 36], dtype: 'bf16', doutDtype: 'bf16' }],
    ];
    for (const [what, c] of attentionCases) {
      it(`packed attention: ${what}`, async () => {
        const cu = c.lens.reduce((acc, n) => [...acc, acc[acc.length - 1] + n], [0]);
        const T = cu[cu.length - 1];
        const [q, qs] = await held([T, c.H, c.D], 30, c.dtype);
        const [k, ks] = await held([T, c.Hkv, c.D], 31, c.dtype);
        const [v, vs] = await held([T, c.Hkv, c.D], 32, c.dtype);
        const [dout, douts] = await held([T, c.H, c.D], 33, c.doutDtype);
        const scale = 1 / Math.sqrt(c.D);
        const tol = c.dtype === 'bf16' ? BF16_OUT : F32_OUT;
        // The backward reads the forward's `out` as stored (bf16 when the activations are), while
        // the float64 reference recomputes it exactly; its rounding enters D_i = rowsum(dout * out).
        const gtol = c.doutDtype === 'bf16' || c.dtype === 'bf16' ? BF16_OUT : { atol: 1e-3, rtol: 1e-3 };
        const { out, lse } = be.attentionPacked(q, k, v, i32(cu), scale);
        const ref = attentionPackedRef(qs, ks, vs, cu, c.H, c.Hkv, c.D, scale);
        expectClose('out', await down(out), ref.out, tol);
        expectClose('lse', await down(lse), ref.lse, F32_OUT);
        const g = be.attentionPackedBackward(dout, q, k, v, out, lse, i32(cu), scale);
        assert.equal(g.dq.dtype, c.doutDtype === 'f32' ? 'f32' : 'bf16');
        const gref = attentionPackedBackwardRef(douts, qs, ks, vs, cu, c.H, c.Hkv, c.D, scale);
        expectClose('dq', await down(g.dq), gref.dq, gtol);
        expectClose('dk', await down(g.dk), gref.dk, gtol);
        expectClose('dv', await down(g.dv), gref.dv, gtol);
        be.resetScratch();
      });
    }

    it('tokenLogprobs over a Qwen-sized vocabulary of bf16 logits', async () => {
      const [R, V] = [3, 151936];
      const [logits, ls] = await held([R, V], 40, 'bf16', 3);
      const targets = [0, 77777, V - 1];
      expectClose('tokenLogprobs', await down(be.tokenLogprobs(logits, i32(targets), 0.9)), tokenLogprobsRef(ls, targets, 0.9, R, V), F32_OUT);
      be.resetScratch();
    });

    it('scatterRows sums many repeated rows the same way every run', async () => {
      const [R, T, C] = [200, 50, 300];
      const idx = Array.from({ length: R }, (_, r) => (r * 37) % T);
      const [src, ss] = await held([R, C], 50, 'f32');
      const a = await down(be.scatterRows(src, i32(idx), T));
      expectClose('scatterRows', a, scatterRowsRef(ss, idx, T, C), F32_OUT);
      assert.deepEqual(await down(be.scatterRows(src, i32(idx), T)), a);
      be.resetScratch();
    });

    it('sumSquares of 3 M values: double-precision sum, the same bits every run', async () => {
      const [x, xs] = await held([3_000_000], 60, 'f32');
      const a = await down(be.sumSquares(x));
      expectClose('sumSquares', a, [sumSquaresRef(xs)], { atol: 0, rtol: 1e-6 });
      assert.deepEqual(await down(be.sumSquares(x)), a);
      be.resetScratch();
    });

    it('adamw gives the CPU backend\'s floats bit for bit', async () => {
      const cpu = new CpuBackend({ threads: 1 });
      const n = 10_000;
      const start = randn(n, 70, 0.1);
      const p = [be.upload(start, [n], 'f32'), cpu.upload(start, [n], 'f32')];
      const m = [be.alloc([n], 'f32', 'persistent'), cpu.alloc([n], 'f32', 'persistent')];
      const v = [be.alloc([n], 'f32', 'persistent'), cpu.alloc([n], 'f32', 'persistent')];
      for (let step = 1; step <= 3; step++) {
        const h: AdamWStep = { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step, gradScale: step === 2 ? 0.3712 : 1 };
        const grad = randn(n, 70 + step, 1e-2);
        be.adamw(p[0], be.upload(grad, [n], 'f32', 'scratch'), m[0], v[0], h);
        cpu.adamw(p[1], cpu.upload(grad, [n], 'f32', 'scratch'), m[1], v[1], h);
        for (const [name, pair] of [['param', p], ['m', m], ['v', v]] as const) {
          expectClose(`adamw ${name}, step ${step}`, await be.download(pair[0]), await cpu.download(pair[1]), { atol: 0, rtol: 0 });
        }
      }
      for (const t of [p[0], m[0], v[0]]) be.free(t);
      cpu.dispose();
      be.resetScratch();
    });
  });
}
