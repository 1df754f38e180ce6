/**
 * The CUDA backend's host side for products over adjacent weights (fused-ops.ts, qkvOneGemm):
 * which addon calls linearMany / normLinearMany make, driven through a recording stand-in addon
 * (no GPU). The kernels themselves (cuBLASLt, gather.cu's splitColumns) run in the CUDA suite.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CudaBackend } from '../../src/backend/cuda/cuda-backend.ts';
import type { LinearPart, Tensor } from '../../src/backend/backend.ts';
import { recordingBackend } from './fake-native.ts';
import type { Call } from './fake-native.ts';

const [K, NQ, NKV] = [256, 256, 128];

/** q, k, v weights (and biases) one after another in one allocation, as weights.ts places them. */
function adjacentParts(be: CudaBackend, bias: boolean): LinearPart[] {
  const ns = [NQ, NKV, NKV];
  const w = be.alloc([(NQ + 2 * NKV) * K], 'bf16', 'persistent');
  const b = be.alloc([NQ + 2 * NKV], 'bf16', 'persistent');
  let at = 0;
  return ns.map((n) => {
    const part: LinearPart = { w: be.viewAt(w, at * K, [n, K]), ...(bias ? { bias: be.viewAt(b, at, [n]) } : {}) };
    at += n;
    return part;
  });
}

const named = (calls: Call[], name: string): Call[] => calls.filter((c) => c.name === name);
const ptrOf = (t: Tensor): number => (t as unknown as { ptr: number }).ptr;

describe('CUDA products over adjacent weights (qkvOneGemm, host side)', () => {
  it('run as one product over all rows and one column split into a tensor per part', () => {
    const { be, calls } = recordingBackend({ qkvOneGemm: true });
    assert.equal(be.jointProjections, true);
    const parts = adjacentParts(be, true);
    const x = be.alloc([8, K], 'bf16', 'persistent');
    calls.length = 0;
    const outs = be.linearMany(x, parts);
    const linear = named(calls, 'linear');
    assert.equal(linear.length, 1, 'one product');
    const [, , , w, , bias, , T, k, N] = linear[0].args as number[];
    assert.deepEqual([w, bias, T, k, N], [ptrOf(parts[0].w), ptrOf(parts[0].bias!), 8, K, NQ + 2 * NKV]);
    const split = named(calls, 'splitColumns');
    assert.equal(split.length, 1, 'one split');
    const [src, rows, count, o0, b0, o1, b1, o2, b2] = split[0].args as number[];
    assert.equal(src, linear[0].args[0], 'the split reads the product');
    assert.deepEqual([rows, count, b0, b1, b2], [8, 3, NQ * 2, NKV * 2, NKV * 2]);
    assert.deepEqual([o0, o1, o2], outs.map(ptrOf));
    assert.deepEqual(outs.map((o) => o.shape), [[8, NQ], [8, NKV], [8, NKV]]);
  });

  it('normLinearMany: the rmsnorm, then the same one product', () => {
    const { be, calls } = recordingBackend({ qkvOneGemm: true });
    const parts = adjacentParts(be, false);
    const x = be.alloc([8, K], 'bf16', 'persistent');
    const w = be.alloc([K], 'bf16', 'persistent');
    calls.length = 0;
    be.normLinearMany(x, { w, eps: 1e-6 }, parts);
    assert.deepEqual(calls.map((c) => c.name).filter((n) => ['rmsnorm', 'linear', 'splitColumns'].includes(n)), ['rmsnorm', 'linear', 'splitColumns']);
    assert.equal((named(calls, 'linear')[0].args as number[])[5], 0, 'no bias');
  });

  it('takes one product per part where the weights are apart, the biases mixed, or the switch off', () => {
    const cases: [string, boolean, (be: CudaBackend) => LinearPart[]][] = [
      ['switch off', false, (be) => adjacentParts(be, true)],
      ['separate allocations', true, (be) => [NQ, NKV, NKV].map((n) => ({ w: be.alloc([n, K], 'bf16', 'persistent') }))],
      ['a bias on one part only', true, (be) => adjacentParts(be, true).map((p, i) => (i === 0 ? p : { w: p.w }))],
      ['out of order', true, (be) => adjacentParts(be, false).reverse()],
    ];
    for (const [what, on, make] of cases) {
      const { be, calls } = recordingBackend({ qkvOneGemm: on });
      const parts = make(be);
      const x = be.alloc([8, K], 'bf16', 'persistent');
      calls.length = 0;
      be.linearMany(x, parts);
      assert.equal(named(calls, 'linear').length, 3, `${what}: three products`);
      assert.equal(named(calls, 'splitColumns').length, 0, `${what}: no split`);
    }
  });

  it('leaves decode-sized batches to the gemv kernels', () => {
    const { be, calls } = recordingBackend({ qkvOneGemm: true });
    const parts = adjacentParts(be, true);
    const x = be.alloc([2, K], 'bf16', 'persistent');
    calls.length = 0;
    be.linearMany(x, parts);
    assert.equal(named(calls, 'gemvMany').length, 1);
    assert.equal(named(calls, 'linear').length, 0);
  });
});
