import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ADAMW_DEFAULTS, adamwStep, clipGradNorm, learningRate, newAdamWState } from '../../src/train/optimizer.ts';

describe('AdamW', () => {
  it('matches the closed form of torch.optim.AdamW over three steps (float64 by hand)', () => {
    const cfg = { ...ADAMW_DEFAULTS, lr: 0.1, weightDecay: 0.1 };
    const p = Float32Array.from([1, -2]);
    const state = newAdamWState(2);
    const grads = [[0.5, -1], [0.25, 2], [-1, 0.5]];
    // Reference in float64, written out from torch's documented algorithm.
    let rp = [1, -2];
    let m = [0, 0];
    let v = [0, 0];
    grads.forEach((g, t) => {
      const step = t + 1;
      adamwStep(p, Float32Array.from(g), state, cfg, cfg.lr, step);
      rp = rp.map((x, i) => {
        const y = x - cfg.lr * cfg.weightDecay * x;
        m[i] = 0.9 * m[i] + 0.1 * g[i];
        v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
        const mh = m[i] / (1 - 0.9 ** step);
        const vh = v[i] / (1 - 0.999 ** step);
        return y - (cfg.lr * mh) / (Math.sqrt(vh) + cfg.eps);
      });
      m = [...m];
      v = [...v];
    });
    for (let i = 0; i < 2; i++) assert.ok(Math.abs(p[i] - rp[i]) < 1e-6, `param ${i}: ${p[i]} vs ${rp[i]}`);
  });

  it('the first step moves each parameter by about lr against the gradient sign', () => {
    const p = Float32Array.from([0, 0, 0]);
    adamwStep(p, Float32Array.from([3, -0.001, 0]), newAdamWState(3), { ...ADAMW_DEFAULTS, weightDecay: 0 }, 0.01, 1);
    assert.ok(Math.abs(p[0] + 0.01) < 1e-6);
    assert.ok(Math.abs(p[1] - 0.01) < 1e-4);
    assert.equal(p[2], 0);
  });

  it('rejects mismatched sizes and step 0', () => {
    assert.throws(() => adamwStep(new Float32Array(2), new Float32Array(3), newAdamWState(2), ADAMW_DEFAULTS, 0.1, 1), /grad 3/);
    assert.throws(() => adamwStep(new Float32Array(2), new Float32Array(2), newAdamWState(2), ADAMW_DEFAULTS, 0.1, 0), /step counts from 1/);
  });
});

describe('learning-rate schedule', () => {
  const s = { lr: 1e-4, warmupSteps: 10, totalSteps: 110, kind: 'cosine' as const };
  it('warms up linearly, peaks, then follows half a cosine to zero', () => {
    assert.equal(learningRate(s, 0), 0);
    assert.ok(Math.abs(learningRate(s, 5) - 5e-5) < 1e-12);
    assert.ok(Math.abs(learningRate(s, 10) - 1e-4) < 1e-12);
    assert.ok(Math.abs(learningRate(s, 60) - 5e-5) < 1e-12);
    assert.ok(Math.abs(learningRate(s, 110)) < 1e-12);
  });
  it('linear decays to zero, constant stays', () => {
    assert.ok(Math.abs(learningRate({ ...s, kind: 'linear' }, 60) - 5e-5) < 1e-12);
    assert.equal(learningRate({ ...s, kind: 'constant' }, 100), 1e-4);
  });
});

describe('gradient clipping', () => {
  it('scales all grads by maxNorm / (norm + 1e-6) when over, and reports the norm before', () => {
    const a = Float32Array.from([3, 0]);
    const b = Float32Array.from([0, 4]);
    const norm = clipGradNorm([a, b], 1);
    assert.equal(norm, 5);
    const scale = 1 / (5 + 1e-6);
    assert.ok(Math.abs(a[0] - 3 * scale) < 1e-7 && Math.abs(b[1] - 4 * scale) < 1e-7);
  });
  it('leaves grads under the limit alone and reports non-finite norms without touching them', () => {
    const a = Float32Array.from([0.3, 0.4]);
    assert.ok(Math.abs(clipGradNorm([a], 1) - 0.5) < 1e-7);
    assert.deepEqual(Array.from(a), [Math.fround(0.3), Math.fround(0.4)]);
    const bad = Float32Array.from([NaN, 1]);
    assert.ok(Number.isNaN(clipGradNorm([bad], 1)));
    assert.equal(bad[1], 1);
  });
});
