/**
 * The native addon (build/tandem_cuda.node, built by `bash kernels/build.sh`) and its typed face.
 *
 * Device pointers are plain numbers (byte addresses below 2^53); dtypes cross as DTYPE_CODE values.
 * Every op function queues work on the addon's one CUDA stream and returns at once; download()
 * and synchronize() return promises a native worker thread settles from a CUDA event.
 * Argument orders follow kernels/binding.cpp.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Storage dtypes of the CUDA backend, numbered as kernels/ops.h does. */
export const DTYPE_CODE = { f32: 0, bf16: 1, i32: 2 } as const;

export interface DeviceInfo {
  name: string;
  device: number;
  totalMemory: number;
  multiprocessors: number;
  major: number;
  minor: number;
}

export interface NativeMemStats {
  /** Bytes of live allocations (tensors, KV caches, arena chunks). */
  live: number;
  /** Bytes of freed blocks the allocator keeps for reuse. */
  cached: number;
  /** cuBLASLt workspace bytes. */
  workspace: number;
  /** Pinned host staging bytes (host memory, for downloads). */
  pinned: number;
}

export interface NativeCuda {
  probe(): { count: number; error: string | null };
  init(device: number): DeviceInfo;
  malloc(bytes: number): number;
  free(ptr: number): void;
  emptyCache(): void;
  memStats(): NativeMemStats;
  zero(ptr: number, bytes: number): void;
  copy(dst: number, src: number, bytes: number): void;
  upload(dst: number, data: Float32Array | Int32Array, dtype: number): void;
  download(src: number, n: number, dtype: number): Promise<Float32Array | Int32Array>;
  synchronize(): Promise<void>;
  embedding(out: number, ids: number, table: number, T: number, V: number, rowBytes: number): void;
  scatterRows(pool: number, rows: number, slots: number, T: number, numSlots: number, rowBytes: number): void;
  rmsnorm(y: number, sum: number, x: number, residual: number, w: number, eps: number, R: number, C: number, dt: number): void;
  linear(out: number, outDt: number, x: number, w: number, xwDt: number, bias: number, biasDt: number, T: number, K: number, N: number): void;
  rope(q: number, k: number, positions: number, invFreq: number, freqDt: number, T: number, H: number, Hkv: number, D: number, dt: number): void;
  attention(
    out: number, q: number, kPool: number, vPool: number, cuSeqlensQ: number, contextLens: number, blockTables: number,
    T: number, S: number, H: number, Hkv: number, D: number, blockSize: number, maxBlocks: number, numBlocks: number,
    scale: number, dt: number,
  ): void;
  attentionHeadDimSupported(D: number): boolean;
  swiglu(out: number, gate: number, up: number, n: number, dt: number): void;
  add(out: number, a: number, b: number, n: number, dt: number): void;
  cast(out: number, outDt: number, x: number, xDt: number, n: number): void;
  logSoftmax(out: number, x: number, S: number, V: number, dt: number): void;
  greedySample(ids: number, logprobs: number, logits: number, S: number, V: number, dt: number): void;
}

/** Where the addon is looked for: $TANDEM_CUDA_ADDON, else build/tandem_cuda.node in the repository. */
export function addonPath(): string {
  return process.env.TANDEM_CUDA_ADDON ?? fileURLToPath(new URL('../../../build/tandem_cuda.node', import.meta.url));
}

let loaded: { native: NativeCuda } | { reason: string } | undefined;

/** The addon, or the reason it cannot be loaded (not built, or built but failing to load). Cached. */
export function tryLoadNative(): { native: NativeCuda } | { reason: string } {
  if (loaded !== undefined) return loaded;
  const path = addonPath();
  if (!existsSync(path)) {
    loaded = { reason: `CUDA backend not built: run bash kernels/build.sh (no ${path})` };
  } else {
    try {
      loaded = { native: createRequire(import.meta.url)(path) as NativeCuda };
    } catch (e) {
      loaded = { reason: `CUDA backend failed to load ${path}: ${e instanceof Error ? e.message : String(e)}` };
    }
  }
  return loaded;
}

/** The addon; throws an error saying what to do when it is absent or broken. */
export function loadNative(): NativeCuda {
  const r = tryLoadNative();
  if ('reason' in r) throw new Error(r.reason);
  return r.native;
}
