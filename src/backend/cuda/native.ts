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
  /** Bytes of L2 cache. */
  l2CacheBytes: number;
  major: number;
  minor: number;
}

export interface NativeMemStats {
  /** Bytes of live allocations (tensors, KV caches, arena chunks). */
  live: number;
  /** Bytes of freed blocks the allocator keeps for reuse. */
  cached: number;
  /** Device memory the kernels keep for the process: the cuBLASLt workspace. */
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
  /** CUDA graphs (binding-graph.cpp): capture the stream's launches, instantiate, replay, free. */
  graphBegin(): void;
  graphEnd(): number;
  graphLaunch(id: number): void;
  graphDestroy(id: number): void;
  /** Kernel trace (kernels/trace.h, TANDEM_CUDA_TRACE=1 builds): records 0 stops it; throws in other builds. */
  traceAttach(records: number, count: number, capacity: number): void;
  embedding(out: number, ids: number, table: number, T: number, V: number, rowBytes: number): void;
  scatterRows(pool: number, rows: number, slots: number, T: number, numSlots: number, rowBytes: number): void;
  /** src (T, sum of the parts' bytes): up to 3 column blocks side by side, each into its out (T, bytes). */
  splitColumns(src: number, T: number, count: number, out0: number, bytes0: number, out1: number, bytes1: number, out2: number, bytes2: number): void;
  rmsnorm(y: number, sum: number, x: number, residual: number, w: number, eps: number, R: number, C: number, dt: number): void;
  linear(out: number, outDt: number, x: number, w: number, xwDt: number, bias: number, biasDt: number, T: number, K: number, N: number): void;
  /** out (T, N) += alpha * x @ w^T in place (x and w of xwDt); false: not taken, nothing ran (linear + axpy then). */
  linearAdd(out: number, outDt: number, x: number, w: number, xwDt: number, alpha: number, T: number, K: number, N: number): boolean;
  rope(q: number, k: number, positions: number, invFreq: number, freqDt: number, T: number, H: number, Hkv: number, D: number, dt: number): void;
  ropeWriteKv(
    q: number, k: number, v: number, positions: number, invFreq: number, freqDt: number, kPool: number, vPool: number,
    slots: number, numSlots: number, T: number, H: number, Hkv: number, D: number, dt: number,
  ): void;
  /**
   * Up to 3 products of one x; `rest` is the fused rmsnorm's (x, residual, w, sum, eps) (x = 0:
   * none), then count, then 3 x (out, w, bias, biasDt, N), zeros past `count`. False: not taken,
   * nothing ran.
   */
  gemvMany(outDt: number, x: number, xwDt: number, T: number, K: number, ...rest: number[]): boolean;
  /**
   * out = silu(x @ wGate^T + gateBias) * (x @ wUp^T + upBias); `norm` is the fused rmsnorm's
   * (x, residual, w, sum, eps) (x = 0: none). False: not taken, nothing ran.
   */
  gemvSwiglu(
    out: number, x: number, xwDt: number, T: number, K: number, N: number, wGate: number, gateBias: number, gateBiasDt: number,
    wUp: number, upBias: number, upBiasDt: number, ...norm: number[]
  ): boolean;
  /**
   * maxSeqlenQ > 1 sends multi-row sequences to the flash prefill kernel; `splits` and the
   * workspace (scratch of workspaceBytes, or 0) come from attentionPlan().
   */
  attention(
    out: number, q: number, kPool: number, vPool: number, cuSeqlensQ: number, contextLens: number, blockTables: number,
    T: number, S: number, H: number, Hkv: number, D: number, blockSize: number, maxBlocks: number, numBlocks: number,
    scale: number, dt: number, maxSeqlenQ: number, splits: number, workspace: number,
  ): void;
  /**
   * ropeWriteKv then attention in one kernel for decode batches (T == S); false: not taken,
   * nothing ran (see kernels/ops.h). splits and workspace as attention()'s.
   */
  ropeAttentionDecode(
    out: number, q: number, k: number, v: number, positions: number, invFreq: number, freqDt: number, kPool: number,
    vPool: number, slots: number, numSlots: number, cuSeqlensQ: number, contextLens: number, blockTables: number,
    T: number, S: number, H: number, Hkv: number, D: number, blockSize: number, maxBlocks: number, numBlocks: number,
    scale: number, dt: number, splits: number, workspace: number,
  ): boolean;
  /** How many chunks decode rows split their context into (split-K), and the workspace that needs. */
  attentionPlan(T: number, H: number, Hkv: number, D: number, maxContextLen: number): { splits: number; workspaceBytes: number };
  attentionHeadDimSupported(D: number): boolean;
  swiglu(out: number, gate: number, up: number, n: number, dt: number): void;
  add(out: number, a: number, b: number, n: number, dt: number): void;
  cast(out: number, outDt: number, x: number, xDt: number, n: number): void;
  logSoftmax(out: number, x: number, S: number, V: number, dt: number): void;
  /** keep: i32 [S] that also gets the ids, or 0. workspace: greedySampleWorkspaceBytes(S, V) bytes (or 0 where that is 0). */
  greedySample(ids: number, keep: number, logprobs: number, logits: number, S: number, V: number, dt: number, workspace: number): void;
  greedySampleWorkspaceBytes(S: number, V: number): number;

  // sampling on the device (kernels/binding-sampling.cpp, kernels/sampling.cu)
  /**
   * params and penalties: the words of packSamplingParams() (sampling-params.ts), uploaded.
   * pendingIds: the previous step's kept ids that the rows' pending indices point into, or 0.
   */
  sample(
    ids: number, logprobs: number, topIds: number, topLogprobs: number, topStride: number, logits: number,
    S: number, V: number, dt: number, params: number, penalties: number, pendingIds: number, anyPenalties: number,
  ): void;
  /** Rows asking for more top logprobs, or penalties over a larger vocabulary, sample on the host. */
  sampleLimits(): { maxTopLogprobs: number; maxPenaltyVocab: number };
  /** out (S) f32 = uniformAt(seed, step) of each packed row, computed on the device (a check hook). */
  sampleUniforms(out: number, params: number, S: number): void;

  // training ops (kernels/binding-train.cpp, kernels/ops-train.h)
  axpy(y: number, yDt: number, x: number, xDt: number, alpha: number, n: number): void;
  linearBackwardInput(dx: number, dxDt: number, dy: number, w: number, abDt: number, T: number, K: number, N: number): void;
  linearBackwardWeight(dw: number, dwDt: number, dy: number, x: number, abDt: number, T: number, K: number, N: number, alpha: number): void;
  rmsnormBackward(dx: number, dy: number, gDt: number, x: number, xDt: number, w: number, wDt: number, eps: number, R: number, C: number): void;
  ropeBackward(dq: number, dk: number, positions: number, invFreq: number, freqDt: number, T: number, H: number, Hkv: number, D: number, dt: number): void;
  swigluBackward(dGate: number, dUp: number, dy: number, gDt: number, gate: number, up: number, xDt: number, n: number): void;
  attentionPacked(
    out: number, lse: number, q: number, k: number, v: number, cuSeqlens: number,
    T: number, S: number, H: number, Hkv: number, D: number, scale: number, dt: number,
  ): void;
  attentionPackedBackward(
    dq: number, dk: number, dv: number, delta: number, dout: number, gDt: number, q: number, k: number, v: number,
    out: number, lse: number, cuSeqlens: number, T: number, S: number, H: number, Hkv: number, D: number, scale: number, dt: number,
  ): void;
  attentionPackedHeadDimSupported(D: number): boolean;
  tokenLogprobs(out: number, logits: number, targets: number, temperature: number, R: number, V: number, dt: number): void;
  tokenLogprobsBackward(
    dlogits: number, logits: number, targets: number, temperature: number, dlogp: number, dlogpDt: number, R: number, V: number, dt: number,
  ): void;
  /** work: scratch of 2 * T i32. */
  scatterAddRows(out: number, src: number, idx: number, R: number, T: number, C: number, dt: number, work: number): void;
  /** partials: scratch of sumSquaresPartials() doubles. */
  sumSquares(out: number, x: number, n: number, dt: number, partials: number): void;
  sumSquaresPartials(): number;
  /** The step's constants in double, as src/train/optimizer.ts forms them. */
  adamw(
    param: number, grad: number, m: number, v: number, n: number,
    beta1: number, beta2: number, eps: number, decay: number, stepSize: number, bc2Sqrt: number, gradScale: number,
  ): void;
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
