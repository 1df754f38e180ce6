/**
 * What only the CPU backend promises about the training ops: its fused AdamW gives exactly the
 * floats of the host optimizer (src/train/optimizer.ts), and index contents are checked with
 * errors that name the row. (The shared cases are in conformance-training.ts.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AdamWStep, Tensor } from '../../src/backend/backend.ts';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { adamwStep, clipGradNorm, learningRate, newAdamWState } from '../../src/train/optimizer.ts';
import type { AdamWConfig } from '../../src/train/optimizer.ts';
import { SeededRandom } from '../../src/util/random.ts';

const bits = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

describe('cpu backend training ops', () => {
  const be = new CpuBackend({ threads: 1 });
  const f32 = async (t: Tensor): Promise<Float32Array> => (await be.download(t)) as Float32Array;

  it('adamw gives the same floats as optimizer.ts adamwStep, step after step', async () => {
    const n = 1001;
    const cfg: AdamWConfig = { lr: 2e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.05 };
    const hostParam = new SeededRandom(1).normals(n, 0.5);
    const hostState = newAdamWState(n);
    const param = be.upload(hostParam, [n]);
    const m = be.alloc([n], 'f32', 'persistent');
    const v = be.alloc([n], 'f32', 'persistent');
    for (let step = 1; step <= 6; step++) {
      const grad = new SeededRandom(100 + step).normals(n, step === 3 ? 1e-6 : 1); // tiny grads too
      grad[7] = 0; // a zero gradient: v may stay tiny, eps matters
      const lr = learningRate({ lr: cfg.lr, warmupSteps: 2, totalSteps: 6, kind: 'cosine' }, step - 1);
      adamwStep(hostParam, grad, hostState, cfg, lr, step);
      be.adamw(param, be.upload(grad, [n], 'f32', 'scratch'), m, v, { ...cfg, lr, step, gradScale: 1 });
      assert.deepEqual(bits(await f32(param)), bits(hostParam), `param after step ${step}`);
      assert.deepEqual(bits(await f32(m)), bits(hostState.m), `m after step ${step}`);
      assert.deepEqual(bits(await f32(v)), bits(hostState.v), `v after step ${step}`);
      be.resetScratch();
    }
  });

  it('adamw with gradScale matches clipGradNorm then adamwStep on the host, bit for bit', async () => {
    const n = 300;
    const cfg: AdamWConfig = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
    const hostParam = new SeededRandom(2).normals(n, 0.5);
    const hostState = newAdamWState(n);
    const param = be.upload(hostParam, [n]);
    const m = be.alloc([n], 'f32', 'persistent');
    const v = be.alloc([n], 'f32', 'persistent');
    for (let step = 1; step <= 3; step++) {
      const grad = new SeededRandom(200 + step).normals(n, 3);
      const deviceGrad = be.upload(grad, [n], 'f32', 'scratch');
      // The host clips its f32 grads in place; the device keeps them and passes the coefficient.
      const maxNorm = 1;
      const norm = clipGradNorm([grad], maxNorm);
      assert.ok(norm > maxNorm, 'the case must clip');
      const gradScale = maxNorm / (norm + 1e-6);
      adamwStep(hostParam, grad, hostState, cfg, cfg.lr, step);
      const h: AdamWStep = { ...cfg, step, gradScale };
      be.adamw(param, deviceGrad, m, v, h);
      assert.deepEqual(bits(await f32(param)), bits(hostParam), `param after step ${step}`);
      assert.deepEqual(bits(await f32(m)), bits(hostState.m), `m after step ${step}`);
      be.resetScratch();
    }
  });

  it('sumSquares of the grads gives the norm clipGradNorm sees', async () => {
    const g = new SeededRandom(3).normals(5000, 2);
    const s = (await f32(be.sumSquares(be.upload(g, [50, 100], 'f32', 'scratch'))))[0];
    const norm = clipGradNorm([g.slice()], Infinity);
    // Only the f32 rounding of the sum of squares (relative 6e-8) separates the two.
    assert.ok(Math.abs(Math.sqrt(s) - norm) <= 4e-8 * norm, `sqrt(sumSquares) ${Math.sqrt(s)}, clipGradNorm ${norm}`);
    be.resetScratch();
  });

  it('rejects targets, indices and sequence boundaries outside their ranges', () => {
    const i32 = (xs: number[]): Tensor => be.upload(Int32Array.from(xs), [xs.length], 'i32', 'scratch');
    const logits = be.upload(new Float32Array(8), [2, 4], 'f32', 'scratch');
    const dlogp = be.upload(new Float32Array(2), [2], 'f32', 'scratch');
    assert.throws(() => be.tokenLogprobs(logits, i32([0, 4]), 1), /tokenLogprobs: target 4 of row 1 is outside the vocabulary of 4/);
    assert.throws(() => be.tokenLogprobsBackward(logits, i32([-1, 0]), 1, dlogp), /tokenLogprobsBackward: target -1 of row 0/);
    const src = be.upload(new Float32Array(6), [2, 3], 'f32', 'scratch');
    assert.throws(() => be.scatterRows(src, i32([0, 3]), 3), /scatterRows: index 3 at 1 is outside the output's 3 rows/);
    const q = be.upload(new Float32Array(3 * 2 * 4), [3, 2, 4], 'f32', 'scratch');
    const k = be.upload(new Float32Array(3 * 1 * 4), [3, 1, 4], 'f32', 'scratch');
    assert.throws(() => be.attentionPacked(q, k, k, i32([0, 2]), 1), /attentionPacked: cuSeqlens must run from 0 to T = 3/);
    assert.throws(() => be.attentionPacked(q, k, k, i32([1, 3]), 1), /cuSeqlens must run from 0/);
    assert.throws(() => be.attentionPacked(q, k, k, i32([0, 2, 1, 3]), 1), /attentionPacked: cuSeqlens decreases at sequence 1/);
    const { out, lse } = be.attentionPacked(q, k, k, i32([0, 1, 3]), 1);
    assert.throws(() => be.attentionPackedBackward(q, q, k, k, out, lse, i32([0, 3, 2, 3]), 1), /attentionPackedBackward: cuSeqlens decreases/);
    be.resetScratch();
  });
});
