/**
 * The CUDA backend's host side of the L2 warm hint (CudaBackendOptions.l2WarmBytes,
 * kernels/l2-warm.cuh): which byte ranges ropeAttentionDecode hands the fused kernel, and how
 * TANDEM_L2_WARM_MB is read. Driven through a recording stand-in addon (no GPU); that the hint
 * changes no result is checked on the GPU (cuda.test.ts).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { AttnMeta, Tensor } from '../../src/backend/backend.ts';
import { l2WarmBytesFromEnv } from '../../src/backend/cuda/cuda-backend.ts';
import { recordingBackend } from './fake-native.ts';

const MiB = 2 ** 20;
const [H, Hkv, D] = [16, 2, 128];
const ptrOf = (t: Tensor): number => (t as unknown as { ptr: number }).ptr;

/** One decode row over a 4-block cache, and the warm ranges the addon was given for it. */
function warmRangesOf(l2WarmBytes: number, warm?: (be: ReturnType<typeof recordingBackend>['be']) => Tensor[]) {
  const { be, calls } = recordingBackend({ l2WarmBytes });
  const cache = be.allocKvCache({ numLayers: 1, numBlocks: 4, blockSize: 16, numKvHeads: Hkv, headDim: D, dtype: 'bf16' });
  const i32 = (xs: number[], shape = [xs.length]): Tensor => be.upload(Int32Array.from(xs), shape, 'i32', 'scratch');
  const meta: AttnMeta = { cuSeqlensQ: i32([0, 1]), contextLens: i32([5]), blockTables: i32([0, 1, 2, 3], [1, 4]), maxSeqlenQ: 1, maxContextLen: 5 };
  const q = be.alloc([1, H, D], 'bf16', 'scratch');
  const k = be.alloc([1, Hkv, D], 'bf16', 'scratch');
  const v = be.alloc([1, Hkv, D], 'bf16', 'scratch');
  const invFreq = be.alloc([D / 2], 'f32', 'persistent');
  const tensors = warm?.(be) ?? [];
  calls.length = 0;
  be.ropeAttentionDecode(q, k, v, i32([4]), invFreq, cache, 0, i32([4]), meta, 1 / Math.sqrt(D), warm ? tensors : undefined);
  const fused = calls.filter((c) => c.name === 'ropeAttentionDecode');
  assert.equal(fused.length, 1, 'one fused kernel');
  const args = fused[0].args as number[];
  return { tensors, ranges: [[args[26], args[27]], [args[28], args[29]]] };
}

describe('L2 warm hint (host side)', () => {
  it('splits the bytes between the warm tensors, from their starts', () => {
    const { tensors, ranges } = warmRangesOf(16 * MiB, (be) => [be.alloc([4096, 2048], 'bf16', 'persistent'), be.alloc([4096, 2048], 'bf16', 'persistent')]);
    assert.deepEqual(ranges, [[ptrOf(tensors[0]), 8 * MiB], [ptrOf(tensors[1]), 8 * MiB]]);
  });

  it('never past a tensor\'s end, and one tensor takes the whole share', () => {
    const small = warmRangesOf(16 * MiB, (be) => [be.alloc([100, 64], 'bf16', 'persistent'), be.alloc([4096, 4096], 'bf16', 'persistent')]);
    assert.deepEqual(small.ranges, [[ptrOf(small.tensors[0]), 100 * 64 * 2], [ptrOf(small.tensors[1]), 8 * MiB]]);
    const one = warmRangesOf(16 * MiB, (be) => [be.alloc([4096, 4096], 'bf16', 'persistent')]);
    assert.deepEqual(one.ranges, [[ptrOf(one.tensors[0]), 16 * MiB], [0, 0]]);
  });

  it('passes no ranges when off or when no tensor is named', () => {
    const off = warmRangesOf(0, (be) => [be.alloc([4096, 2048], 'bf16', 'persistent')]);
    assert.deepEqual(off.ranges, [[0, 0], [0, 0]]);
    assert.deepEqual(warmRangesOf(16 * MiB).ranges, [[0, 0], [0, 0]]);
  });

  it('rejects a warm tensor of another backend', () => {
    const other = recordingBackend().be.alloc([16], 'bf16', 'persistent');
    assert.throws(() => warmRangesOf(16 * MiB, () => [other]), /ropeAttentionDecode: warm\[0\] .* belongs to another CudaBackend instance/);
  });

  it('reads TANDEM_L2_WARM_MB as whole MiB and rejects anything else', () => {
    assert.equal(l2WarmBytesFromEnv(undefined), 0);
    assert.equal(l2WarmBytesFromEnv(''), 0);
    assert.equal(l2WarmBytesFromEnv('24'), 24 * MiB);
    for (const bad of ['-1', '1.5', '16MB', ' 8', '257', 'abc']) {
      assert.throws(() => l2WarmBytesFromEnv(bad), /TANDEM_L2_WARM_MB must be a whole number of MiB from 0 to 256/, bad);
    }
    assert.throws(() => recordingBackend({ l2WarmBytes: -1 }), /l2WarmBytes must be a whole number >= 0/);
  });
});
