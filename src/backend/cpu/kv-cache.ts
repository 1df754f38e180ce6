/**
 * The paged KV cache on the CPU.
 *   per layer, k[layer] and v[layer] are (numBlocks, blockSize, Hkv, D) f32 pools;
 *   cache slot s = block * blockSize + offset is the contiguous row [s * Hkv * D, (s + 1) * Hkv * D).
 *
 * writeKv: k and v are (T, Hkv, D), slots is (T) i32; token t goes to slot slots[t].
 */
import type { KvCache, KvCacheSpec } from '../backend.ts';

export class CpuKvCache implements KvCache {
  readonly backend = 'cpu';
  readonly k: Float32Array[] = [];
  readonly v: Float32Array[] = [];
  freed = false;

  /** With `shared`, the pools live in SharedArrayBuffers (for worker threads to read). */
  constructor(readonly spec: KvCacheSpec, shared = false) {
    const { numLayers, numBlocks, blockSize, numKvHeads, headDim } = spec;
    for (const [name, value] of Object.entries({ numLayers, numBlocks, blockSize, numKvHeads, headDim })) {
      if (!Number.isSafeInteger(value) || value < 1) throw new Error(`allocKvCache: ${name} must be a positive integer, got ${value}`);
    }
    const perLayer = numBlocks * blockSize * numKvHeads * headDim;
    for (let l = 0; l < numLayers; l++) {
      this.k.push(shared ? new Float32Array(new SharedArrayBuffer(perLayer * 4)) : new Float32Array(perLayer));
      this.v.push(shared ? new Float32Array(new SharedArrayBuffer(perLayer * 4)) : new Float32Array(perLayer));
    }
  }

  /** Total slots (numBlocks * blockSize). */
  get numSlots(): number {
    return this.spec.numBlocks * this.spec.blockSize;
  }

  get bytes(): number {
    return this.freed ? 0 : 2 * this.spec.numLayers * this.numSlots * this.spec.numKvHeads * this.spec.headDim * 4;
  }
}

export function writeKvForward(
  kPool: Float32Array,
  vPool: Float32Array,
  k: Float32Array,
  v: Float32Array,
  slots: Int32Array,
  T: number,
  rowSize: number,
): void {
  for (let t = 0; t < T; t++) {
    const from = t * rowSize;
    const to = slots[t] * rowSize;
    kPool.set(k.subarray(from, from + rowSize), to);
    vPool.set(v.subarray(from, from + rowSize), to);
  }
}
