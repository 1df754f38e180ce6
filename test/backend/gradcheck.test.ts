/**
 * Gradient checks of the CPU backend's backward ops against central finite differences of the
 * float64 forward references (reference.ts, reference-training.ts), so that the backward ops are
 * checked against the forward ops' definitions and not only against hand-derived formulas.
 *
 * For an op y = f(x) and a random upstream gradient dy, the loss is L(x) = sum(dy * f(x)); its
 * gradient by central differences (step h = 1e-4 on inputs of order 1, in float64: truncation
 * error ~h^2, rounding ~1e-16 / h, both far below f32's 6e-8) must match what the backward op
 * returns at the same (f32) inputs: max |got - fd| <= 1e-4 * max |fd|. The bound leaves room for
 * f32 outputs and nothing like a wrong term, sign or index, which is off by O(1).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Tensor } from '../../src/backend/backend.ts';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { gatherRowsRef, linearRef, rmsnormRef, ropeRef, swigluRef } from './reference.ts';
import { attentionPackedRef, tokenLogprobsRef } from './reference-training.ts';

const H_STEP = 1e-4;
const BOUND = 1e-4;

type Vec = ArrayLike<number>;

/** dL/dx by central differences, L evaluated in float64. */
function fdGrad(loss: (x: Float64Array) => number, x0: Vec): Float64Array {
  const x = Float64Array.from(x0);
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const xi = x[i];
    x[i] = xi + H_STEP;
    const up = loss(x);
    x[i] = xi - H_STEP;
    const down = loss(x);
    x[i] = xi;
    g[i] = (up - down) / (2 * H_STEP);
  }
  return g;
}

const dot = (a: Vec, b: Vec): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

function expectGrad(what: string, got: Vec, fd: Vec): void {
  assert.equal(got.length, fd.length, `${what}: ${got.length} gradient entries, expected ${fd.length}`);
  let scale = 0;
  let err = 0;
  let worst = 0;
  for (let i = 0; i < fd.length; i++) {
    scale = Math.max(scale, Math.abs(fd[i]));
    const e = Math.abs(got[i] - fd[i]);
    if (!(e <= err)) {
      err = e;
      worst = i;
    }
  }
  assert.ok(scale > 1e-3, `${what}: the finite-difference gradient is ~0 (max ${scale}); the check would prove nothing`);
  assert.ok(err <= BOUND * scale, `${what}: entry ${worst} is ${got[worst]}, finite differences give ${fd[worst]} (max |fd| ${scale})`);
}

describe('gradient checks (cpu backend vs finite differences of the float64 forward)', () => {
  const be = new CpuBackend({ threads: 1 });
  const randn = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);
  const up = (data: Float32Array, shape: number[]): Tensor => be.upload(data, shape, 'f32', 'scratch');
  const upI = (data: number[]): Tensor => be.upload(Int32Array.from(data), [data.length], 'i32', 'scratch');
  const down = async (t: Tensor): Promise<Float32Array> => (await be.download(t)) as Float32Array;

  it('linearBackwardInput and linearBackwardWeight', async () => {
    const [T, K, N] = [5, 7, 6];
    const x = randn(T * K, 1);
    const w = randn(N * K, 2, 0.5);
    const dy = randn(T * N, 3);
    const dx = await down(be.linearBackwardInput(up(dy, [T, N]), up(w, [N, K])));
    expectGrad('dx', dx, fdGrad((xv) => dot(dy, linearRef(xv, w, null, T, K, N)), x));
    const dw = be.alloc([N, K], 'f32', 'scratch');
    be.linearBackwardWeight(up(dy, [T, N]), up(x, [T, K]), dw, 1);
    expectGrad('dw', await down(dw), fdGrad((wv) => dot(dy, linearRef(x, wv, null, T, K, N)), w));
  });

  it('rmsnormBackward', async () => {
    const [R, C] = [3, 8];
    const x = randn(R * C, 4, 2);
    const w = randn(C, 5);
    const dy = randn(R * C, 6);
    const dx = await down(be.rmsnormBackward(up(dy, [R, C]), up(x, [R, C]), up(w, [C]), 1e-5));
    expectGrad('rmsnorm dx', dx, fdGrad((xv) => dot(dy, rmsnormRef(xv, w, 1e-5, R, C)), x));
  });

  it('ropeBackward is the gradient of rope and undoes it', async () => {
    const [T, H, Hkv, D] = [3, 4, 2, 8];
    const positions = [0, 5, 1000];
    const invFreq = Float32Array.from({ length: D / 2 }, (_, j) => 1 / Math.pow(10000, (2 * j) / D));
    const q = randn(T * H * D, 7);
    const k = randn(T * Hkv * D, 8);
    const dq = up(randn(T * H * D, 9), [T, H, D]);
    const dk = up(randn(T * Hkv * D, 10), [T, Hkv, D]);
    const dqs = await down(dq);
    const dks = await down(dk);
    be.ropeBackward(dq, dk, upI(positions), up(invFreq, [D / 2]));
    expectGrad('rope dq', await down(dq), fdGrad((qv) => dot(dqs, ropeRef(qv, positions, invFreq, T, H, D)), q));
    expectGrad('rope dk', await down(dk), fdGrad((kv) => dot(dks, ropeRef(kv, positions, invFreq, T, Hkv, D)), k));
    // rope then ropeBackward: back where it started, to f32 rounding.
    const qt = up(q, [T, H, D]);
    const kt = up(k, [T, Hkv, D]);
    be.rope(qt, kt, upI(positions), up(invFreq, [D / 2]));
    be.ropeBackward(qt, kt, upI(positions), up(invFreq, [D / 2]));
    const back = [...(await down(qt)), ...(await down(kt))];
    const orig = [...q, ...k];
    orig.forEach((v, i) => assert.ok(Math.abs(back[i] - v) <= 1e-6 * (1 + Math.abs(v)), `element ${i}: ${back[i]} after rope + ropeBackward, was ${v}`));
  });

  it('swigluBackward', async () => {
    const n = 24;
    const gate = randn(n, 11, 3); // includes saturated gates
    const upv = randn(n, 12);
    const dy = randn(n, 13);
    const { dGate, dUp } = be.swigluBackward(up(dy, [2, 12]), up(gate, [2, 12]), up(upv, [2, 12]));
    expectGrad('swiglu dGate', await down(dGate), fdGrad((g) => dot(dy, swigluRef(g, upv)), gate));
    expectGrad('swiglu dUp', await down(dUp), fdGrad((u) => dot(dy, swigluRef(gate, u)), upv));
  });

  for (const [H, Hkv] of [[4, 1], [4, 2]]) {
    it(`attentionPackedBackward: dq, dk, dv (H ${H}, Hkv ${Hkv}, sequences of 3, 1 and 4 tokens)`, async () => {
      const D = 6;
      const cu = [0, 3, 4, 8];
      const T = 8;
      const scale = 1 / Math.sqrt(D);
      const q = randn(T * H * D, 14 + H + Hkv);
      const k = randn(T * Hkv * D, 15 + H + Hkv);
      const v = randn(T * Hkv * D, 16 + H + Hkv);
      const dout = randn(T * H * D, 17 + H + Hkv);
      const [qt, kt, vt] = [up(q, [T, H, D]), up(k, [T, Hkv, D]), up(v, [T, Hkv, D])];
      const { out, lse } = be.attentionPacked(qt, kt, vt, upI(cu), scale);
      const g = be.attentionPackedBackward(up(dout, [T, H, D]), qt, kt, vt, out, lse, upI(cu), scale);
      const loss = (qv: Vec, kv: Vec, vv: Vec): number => dot(dout, attentionPackedRef(qv, kv, vv, cu, H, Hkv, D, scale).out);
      expectGrad('attention dq', await down(g.dq), fdGrad((x) => loss(x, k, v), q));
      expectGrad('attention dk', await down(g.dk), fdGrad((x) => loss(q, x, v), k));
      expectGrad('attention dv', await down(g.dv), fdGrad((x) => loss(q, k, x), v));
    });
  }

  for (const temperature of [1, 0.7]) {
    it(`tokenLogprobsBackward w.r.t. the logits at temperature ${temperature}`, async () => {
      const [R, V] = [3, 11];
      const logits = randn(R * V, 20, 2);
      const targets = [4, 0, 10];
      const dlogp = randn(R, 21);
      const g = await down(be.tokenLogprobsBackward(up(logits, [R, V]), upI(targets), temperature, up(dlogp, [R])));
      expectGrad('tokenLogprobs dlogits', g, fdGrad((l) => dot(dlogp, tokenLogprobsRef(l, targets, temperature, R, V)), logits));
    });
  }

  it('scatterRows is the gradient of gatherRows (repeated rows add up)', async () => {
    const [T, C] = [5, 3];
    const idx = [4, 1, 4, 0];
    const x = randn(T * C, 22);
    const dy = randn(idx.length * C, 23);
    const dx = await down(be.scatterRows(up(dy, [idx.length, C]), upI(idx), T));
    expectGrad('gatherRows dx', dx, fdGrad((xv) => dot(dy, gatherRowsRef(xv, idx, C)), x));
  });
});
