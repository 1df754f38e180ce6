/**
 * The CUDA backend: the Backend contract on one NVIDIA GPU, through the native addon built from
 * kernels/ (see kernels/binding.cpp and kernels/*.cu, one file per op family).
 *
 * This file owns tensors, the scratch arena, KV caches and argument checking (the same checks
 * and messages as the CPU backend); the arithmetic runs in the kernels. Op families live beside
 * it: fused-ops.ts (decode products), attention-ops.ts (rope, K/V, attention), sampling-ops.ts,
 * training-ops.ts, graphs.ts. bf16 storage for weights,
 * activations and the KV cache, fp32 accumulation and reductions; f32 tensors are supported
 * throughout (upload with dtype 'f32'), logSoftmax always writes f32.
 *
 * Ops queue work on one CUDA stream and return at once; download() and sample() resolve when
 * the GPU has produced the data, without ever blocking the event loop. Sampling runs on the
 * device (kernels/sampling.cu: penalties, temperature, top-k, top-p, min-p, seeded draws, top
 * logprobs; greedy rows an argmax kernel); only ids and logprobs come back (host-sampling.ts
 * names the rare batches that still download their logits).
 *
 * Usage:
 *   const be = new CudaBackend();                     // throws "CUDA backend not built: ..." without the addon
 *   const w = be.upload(weights, [N, K], 'bf16');
 *   const y = be.linear(be.upload(x, [T, K], 'bf16', 'scratch'), w);
 *   const host = await be.download(y);                 // Float32Array
 *   be.resetScratch();
 */
import { linearAddShape, linearShape, placeRowsShape, rmsnormShape, sameShape } from '../op-shapes.ts';
import type {
  AdamWStep,
  AttnMeta,
  Backend,
  DType,
  KvCache,
  KvCacheSpec,
  Lifetime,
  LinearPart,
  NormSpec,
  PendingTokens,
  SampleResult,
  SamplingParams,
  Tensor,
} from '../backend.ts';
import { firstOutOfRange } from '../cpu/gather.ts';
import { checkShape, fmtShape, numel } from '../cpu/tensor.ts';
import { formatBytes } from '../memory-plan.ts';
import { DTYPE_CODE, loadNative } from './native.ts';
import { traceKernels, type TraceRecord } from './kernel-trace.ts';
import type { DeviceInfo, NativeCuda } from './native.ts';
import { CudaTensor, DeviceArena, allocatedBytes, cudaDtype, elemBytes } from './tensor.ts';
import { CudaTrainingOps } from './training-ops.ts';
import { CudaFusedOps, QKV_ONE_GEMM } from './fused-ops.ts';
import { CudaAttentionOps } from './attention-ops.ts';
import { CudaSamplingOps } from './sampling-ops.ts';
import { CudaGraphs } from './graphs.ts';
import type { CudaDType } from './tensor.ts';

export { cudaAvailable, cudaUnavailableReason } from './available.ts';

export interface CudaBackendOptions {
  /** CUDA device ordinal (default 0). One process drives one GPU. */
  device?: number;
  /**
   * The addon to drive (default: build/tandem_cuda.node). A stand-in with the same functions runs
   * the backend's host side without a GPU (bench/host-cost.ts: the host time of a step).
   */
  native?: NativeCuda;
  /**
   * Place q, k, v weights (and biases) one after another at load (jointProjections) and run
   * products over adjacent weights as one product and a column split (fused-ops.ts). Default:
   * on, unless TANDEM_QKV_ONE_GEMM=0 in the environment (batch 64 / 256 decode steps 0.29 / 0.30 ms
   * faster on an H100, bench/results/decode-replay-qkv-2026-12-07-h100.json).
   */
  qkvOneGemm?: boolean;
}

/**
 * A partition of device memory (see CudaBackend.setBudget; src/backend/memory-plan.ts plans one).
 * The weights are whatever persistent tensors exist when the budget is set.
 */
export interface CudaMemoryBudget {
  /** Everything this backend may hold: weights + scratch + graphs + kvCache + adapters + the kernels' fixed workspace (cuBLASLt, attention counters). */
  total: number;
  /** The scratch arena: allocated once at this size, never grown. */
  scratch: number;
  /** KV caches, all together. */
  kvCache: number;
  /** Persistent tensors made after setBudget(): LoRA adapter versions and training state. */
  adapters: number;
  /**
   * Scratch of the CUDA graphs, one arena all of them share (the largest decode graph's need);
   * 0 or absent: graphs hold arenas of their own, outside the budget.
   */
  graphs?: number;
}

/** i32 uploads up to this many elements keep a host copy for range checks (ids, slots, tables). */
const HOST_COPY_MAX = 1 << 20;

type FloatTensor = CudaTensor & { readonly dtype: 'f32' | 'bf16' };

/** Paged KV cache: one allocation, per layer a K pool then a V pool of (numBlocks, blockSize, Hkv, D). */
export class CudaKvCache implements KvCache {
  readonly backend = 'cuda';
  freed = false;

  constructor(
    readonly spec: KvCacheSpec & { dtype: CudaDType },
    readonly ptr: number,
    /** Bytes of one layer's K (or V) pool, rounded up to 256. */
    readonly poolBytes: number,
  ) {}

  kPool(layer: number): number {
    return this.ptr + 2 * layer * this.poolBytes;
  }

  vPool(layer: number): number {
    return this.ptr + (2 * layer + 1) * this.poolBytes;
  }

  get numSlots(): number {
    return this.spec.numBlocks * this.spec.blockSize;
  }

  get bytes(): number {
    return this.freed ? 0 : 2 * this.spec.numLayers * this.poolBytes;
  }
}

/** TANDEM_LORA_FUSED_ADD=0: linearAdd() always as linear() + axpy() (the path before it, for comparisons). */
const LORA_FUSED_ADD = process.env.TANDEM_LORA_FUSED_ADD !== '0';

export class CudaBackend implements Backend {
  readonly name = 'cuda';
  /** bf16 weights, activations and KV cache; f32 accumulation, logits and LoRA parameters. */
  readonly preferredDtype = 'bf16' as const;
  readonly jointProjections: boolean;
  /** Ops queue work on the stream and return at once. */
  readonly queuesWork: boolean = true;
  #penaltyVocab: number | undefined;
  get devicePenaltyVocab(): number {
    this.#penaltyVocab ??= this.native.sampleLimits().maxPenaltyVocab; // (a constant of the build: asked once)
    return this.#penaltyVocab;
  }
  /** The GPU in use (name, memory, multiprocessors, compute capability). */
  readonly device: DeviceInfo;
  private readonly native: NativeCuda;
  /** The step's scratch arena; a graph's own arena while one is being captured (see graphs.ts). */
  private arena: DeviceArena;
  readonly graphs: CudaGraphs;
  private persistentBytes = 0;
  private readonly caches = new Set<CudaKvCache>();
  private readonly training: CudaTrainingOps;
  private readonly fused: CudaFusedOps;
  private readonly attentionOps: CudaAttentionOps;
  private readonly samplingOps: CudaSamplingOps;
  private budget: (CudaMemoryBudget & { weights: number }) | null = null;

  constructor(opts: CudaBackendOptions = {}) {
    this.native = opts.native ?? loadNative();
    this.jointProjections = opts.qkvOneGemm ?? QKV_ONE_GEMM;
    this.device = this.native.init(opts.device ?? 0);
    this.arena = new DeviceArena(this.native);
    // What the op families share of the backend: its checks and its scratch arena.
    const ctx = {
      native: this.native,
      owner: this,
      use: (op: string, name: string, t: Tensor) => this.use(op, name, t),
      float: (op: string, name: string, t: Tensor, rank?: number) => this.float(op, name, t, rank),
      i32: (op: string, name: string, t: Tensor, rank: number) => this.i32(op, name, t, rank),
      useCache: (op: string, cache: KvCache) => this.useCache(op, cache),
      scratch: (shape: readonly number[], dtype: CudaDType) => this.scratch(shape, dtype),
    };
    this.training = new CudaTrainingOps(ctx);
    this.fused = new CudaFusedOps({
      ...ctx,
      plain: this,
      oneGemm: this.jointProjections,
      linearOperands: (op, x, w, bias) => this.linearOperands(op, x, w, bias),
      normOperands: (x, norm) => this.normOperands(x, norm),
    });
    this.attentionOps = new CudaAttentionOps(ctx);
    this.samplingOps = new CudaSamplingOps(ctx);
    this.graphs = new CudaGraphs({
      native: this.native,
      deviceOnly: (shape, dtype) => {
        checkShape('graphs.input', shape);
        const t = this.make(shape, cudaDtype(dtype), 'persistent', null);
        this.native.zero(t.ptr, t.bytes);
        return t;
      },
      withArena: (arena, fn) => {
        const step = this.arena;
        this.arena = arena;
        try {
          return fn();
        } finally {
          this.arena = step;
        }
      },
    });
  }

  /** Resolves once every op queued so far has run on the GPU. */
  synchronize(): Promise<void> {
    return this.native.synchronize();
  }

  /** The block timeline of the kernels `run` queues (a TANDEM_CUDA_TRACE=1 build; kernel-trace.ts). */
  traceKernels(run: () => void, capacity?: number): Promise<{ records: TraceRecord[]; dropped: number }> {
    return traceKernels(this.native, run, capacity);
  }

  /**
   * Give the scratch arena's memory back to the allocator (scratch tensors die, as at a reset).
   * Persistent tensors and KV caches stay until freed.
   */
  releaseScratch(): void {
    this.arena.release();
  }

  /**
   * Partition device memory from now on (DESIGN.md, "GPU sharing"): the persistent tensors held
   * now are the weights; the scratch arena becomes one chunk of `b.scratch` bytes, allocated now;
   * KV caches may hold `b.kvCache` bytes and later persistent tensors `b.adapters`. Going past a
   * part throws an error naming it, never a device out-of-memory. Throws when the parts and the
   * weights exceed `b.total`.
   */
  setBudget(b: CudaMemoryBudget): void {
    for (const [name, v] of Object.entries(b)) {
      if (!Number.isSafeInteger(v) || v < 0) throw new Error(`setBudget: ${name} must be an integer number of bytes >= 0, got ${v}`);
    }
    const weights = this.persistentBytes;
    const workspace = this.native.memStats().workspace;
    const graphs = b.graphs ?? 0;
    const need = weights + workspace + b.scratch + graphs + b.kvCache + b.adapters;
    if (need > b.total) {
      throw new Error(
        `setBudget: weights ${formatBytes(weights)} + kernel workspace ${formatBytes(workspace)} + scratch ${formatBytes(b.scratch)} + ` +
          (graphs > 0 ? `CUDA graphs ${formatBytes(graphs)} + ` : '') +
          `KV cache ${formatBytes(b.kvCache)} + adapters ${formatBytes(b.adapters)} = ${formatBytes(need)} exceed the budget of ${formatBytes(b.total)}`,
      );
    }
    const kv = this.kvBytes();
    if (kv > b.kvCache) throw new Error(`setBudget: KV caches already hold ${formatBytes(kv)}, more than the ${formatBytes(b.kvCache)} budgeted`);
    // Give the old arena chunks back to the device before taking the one chunk of the budget.
    this.arena.release();
    this.native.emptyCache();
    this.arena.reserve(b.scratch);
    this.graphs.useSharedArena(graphs);
    this.budget = { ...b, weights };
  }

  /** The budget in force (setBudget), with the weights it found; null without one. */
  get memoryBudget(): Readonly<CudaMemoryBudget & { weights: number }> | null {
    return this.budget;
  }

  /** Return freed blocks the allocator keeps for reuse to the device (waits for the GPU). */
  emptyCache(): void {
    this.native.emptyCache();
  }

  /** Most scratch bytes taken between two resets since resetScratchPeak(): what one arena chunk must hold. */
  get scratchPeakBytes(): number {
    return this.arena.peakBytes;
  }

  resetScratchPeak(): void {
    this.arena.resetPeak();
  }

  // ---- memory ----

  upload(data: Float32Array | Int32Array, shape: readonly number[], dtype?: DType, lifetime: Lifetime = 'persistent'): Tensor {
    checkShape('upload', shape);
    const want = cudaDtype(dtype ?? (data instanceof Int32Array ? 'i32' : 'f32'));
    if (want === 'i32' && !(data instanceof Int32Array)) throw new Error(`upload: dtype i32 needs an Int32Array, got ${data.constructor.name}`);
    if (want !== 'i32' && !(data instanceof Float32Array)) throw new Error(`upload: dtype ${dtype} needs a Float32Array, got ${data.constructor.name}`);
    if (data.length !== numel(shape)) throw new Error(`upload: shape ${fmtShape(shape)} holds ${numel(shape)} elements, data has ${data.length}`);
    const host = data instanceof Int32Array && data.length <= HOST_COPY_MAX ? Int32Array.from(data) : null;
    const t = this.make(shape, want, lifetime, host);
    this.native.upload(t.ptr, data, DTYPE_CODE[want]);
    return t;
  }

  alloc(shape: readonly number[], dtype: DType, lifetime: Lifetime): Tensor {
    checkShape('alloc', shape);
    const dt = cudaDtype(dtype);
    const n = numel(shape);
    const t = this.make(shape, dt, lifetime, dt === 'i32' && n <= HOST_COPY_MAX ? new Int32Array(n) : null);
    this.native.zero(t.ptr, t.bytes);
    return t;
  }

  write(t: Tensor, data: Float32Array | Int32Array): void {
    const c = this.use('write', 't', t);
    const want = c.dtype === 'i32' ? Int32Array : Float32Array;
    if (!(data instanceof want)) throw new Error(`write: a ${c.dtype} tensor takes a ${want.name}, got ${data.constructor.name}`);
    if (data.length !== c.size) throw new Error(`write: t ${fmtShape(c.shape)} holds ${c.size} elements, data has ${data.length}`);
    c.host?.set(data);
    if (c.size > 0) this.native.upload(c.ptr, data, DTYPE_CODE[c.dtype]);
  }

  async download(t: Tensor): Promise<Float32Array | Int32Array> {
    const c = this.use('download', 't', t);
    if (c.size === 0) return c.dtype === 'i32' ? new Int32Array(0) : new Float32Array(0);
    return this.native.download(c.ptr, c.size, DTYPE_CODE[c.dtype]);
  }

  free(t: Tensor): void {
    const c = this.use('free', 't', t);
    if (c.lifetime !== 'persistent') throw new Error(`free: ${fmtShape(c.shape)} is a scratch tensor; scratch is released by resetScratch()`);
    if (c.root !== null) throw new Error(`free: ${fmtShape(c.shape)} is a view; free the tensor it views`);
    c.freed = true;
    this.native.free(c.ptr);
    this.persistentBytes -= c.allocBytes;
  }

  resetScratch(): void {
    this.arena.reset();
  }

  view(t: Tensor, shape: readonly number[]): Tensor {
    const c = this.use('view', 't', t);
    checkShape('view', shape);
    if (numel(shape) !== c.size) throw new Error(`view: cannot view ${fmtShape(c.shape)} (${c.size} elements) as ${fmtShape(shape)} (${numel(shape)})`);
    return new CudaTensor(this, Object.freeze([...shape]), c.dtype, c.ptr, c.size, c.lifetime, c.generation, c.root ?? c, c.host, 0);
  }

  /**
   * Device bytes by category: weights (persistent tensors), kv_cache, scratch (the arena),
   * cached (freed blocks the allocator keeps for reuse) and workspace (cuBLASLt's). The last two
   * belong to the process's one native allocator, shared by every CudaBackend instance.
   */
  memoryUsage(): Record<string, number> {
    const stats = this.native.memStats();
    const usage: Record<string, number> = {
      weights: this.persistentBytes, kv_cache: this.kvBytes(), scratch: this.arena.bytesHeld + this.graphs.bytesHeld, cached: stats.cached, workspace: stats.workspace,
    };
    if (this.budget !== null) {
      // Under a budget, persistent tensors made after setBudget() are adapters (and training state).
      usage.weights = Math.min(this.persistentBytes, this.budget.weights);
      usage.adapters = this.persistentBytes - usage.weights;
    }
    return usage;
  }

  private kvBytes(): number {
    let kv = 0;
    for (const c of this.caches) kv += c.bytes;
    return kv;
  }

  /** Arena chunks allocated so far (constant once steps repeat). */
  get scratchAllocations(): number {
    return this.arena.allocations;
  }

  // ---- KV cache ----

  allocKvCache(spec: KvCacheSpec): KvCache {
    const { numLayers, numBlocks, blockSize, numKvHeads, headDim } = spec;
    for (const [name, value] of Object.entries({ numLayers, numBlocks, blockSize, numKvHeads, headDim })) {
      if (!Number.isSafeInteger(value) || value < 1) throw new Error(`allocKvCache: ${name} must be a positive integer, got ${value}`);
    }
    const dtype = cudaDtype(spec.dtype);
    if (dtype === 'i32') throw new Error(`allocKvCache: the cache needs a float dtype (bf16 or f32), got ${spec.dtype}`);
    const poolBytes = Math.ceil((numBlocks * blockSize * numKvHeads * headDim * elemBytes(dtype)) / 256) * 256;
    if (this.budget !== null && this.kvBytes() + 2 * numLayers * poolBytes > this.budget.kvCache) {
      throw new Error(
        `allocKvCache: ${numBlocks} blocks of ${blockSize} tokens take ${formatBytes(2 * numLayers * poolBytes)}; with ` +
          `${formatBytes(this.kvBytes())} already held that exceeds the KV cache budget of ${formatBytes(this.budget.kvCache)}`,
      );
    }
    const ptr = this.native.malloc(2 * numLayers * poolBytes);
    this.native.zero(ptr, 2 * numLayers * poolBytes);
    const cache = new CudaKvCache({ ...spec, dtype }, ptr, poolBytes);
    this.caches.add(cache);
    return cache;
  }

  freeKvCache(cache: KvCache): void {
    const c = this.useCache('freeKvCache', cache);
    this.native.free(c.ptr);
    c.freed = true;
    this.caches.delete(c);
  }

  // ---- forward ops ----

  embedding(ids: Tensor, table: Tensor): Tensor {
    const op = 'embedding';
    const i = this.i32(op, 'ids', ids, 1);
    const tb = this.float(op, 'table', table, 2);
    const [T] = i.shape;
    const [V, C] = tb.shape;
    const bad = i.host === null ? -1 : firstOutOfRange(i.host, T, V);
    if (bad >= 0) throw new Error(`embedding: token id ${i.host![bad]} at row ${bad} is outside the table's ${V} rows`);
    const out = this.scratch([T, C], tb.dtype);
    this.native.embedding(out.ptr, i.ptr, tb.ptr, T, V, C * elemBytes(tb.dtype));
    return out;
  }

  rmsnorm(x: Tensor, w: Tensor, eps: number, residual?: Tensor): { y: Tensor; sum: Tensor } {
    const op = 'rmsnorm';
    const xt = this.float(op, 'x', x);
    const wt = this.float(op, 'w', w, 1);
    const { R, C } = rmsnormShape(xt.shape, wt.shape, eps);
    this.sameDtype(op, 'x', xt, 'w', wt);
    const y = this.scratch(xt.shape, xt.dtype);
    const dt = DTYPE_CODE[xt.dtype];
    if (residual === undefined) {
      this.native.rmsnorm(y.ptr, 0, xt.ptr, 0, wt.ptr, eps, R, C, dt);
      return { y, sum: xt };
    }
    const rt = this.float(op, 'residual', residual);
    this.sameShape(op, 'x', xt, 'residual', rt);
    this.sameDtype(op, 'x', xt, 'residual', rt);
    const sum = this.scratch(xt.shape, xt.dtype);
    this.native.rmsnorm(y.ptr, sum.ptr, xt.ptr, rt.ptr, wt.ptr, eps, R, C, dt);
    return { y, sum };
  }

  /**
   * y += alpha * x @ w^T: one product (gemv at decode sizes, else cuBLASLt with beta = 1) where the
   * operands suit it (aligned, dtypes the kernels take), else linear() into scratch and axpy().
   * TANDEM_LORA_FUSED_ADD=0 always takes the second way (for comparisons).
   */
  linearAdd(y: Tensor, x: Tensor, w: Tensor, alpha: number): void {
    const op = 'linearAdd';
    const yt = this.float(op, 'y', y, 2);
    const { xt, wt } = this.linearOperands(op, x, w, undefined);
    const { T, K, N } = linearAddShape(yt.shape, xt.shape, wt.shape, alpha);
    if (!LORA_FUSED_ADD) return this.axpy(yt, this.linear(xt, wt, undefined, yt.dtype), alpha);
    const wx = this.inDtypeOf(xt, wt);
    if (this.native.linearAdd(yt.ptr, DTYPE_CODE[yt.dtype], xt.ptr, wx.ptr, DTYPE_CODE[xt.dtype], alpha, T, K, N)) return;
    this.axpy(yt, this.linear(xt, wx, undefined, yt.dtype), alpha); // (not taken: unaligned operands)
  }

  /** w as x's float dtype: itself, or a copy cast into scratch (f32 LoRA matrices meeting bf16 activations). */
  private inDtypeOf(xt: FloatTensor, wt: FloatTensor): FloatTensor {
    if (wt.dtype === xt.dtype) return wt;
    const cast = this.scratch(wt.shape, xt.dtype) as FloatTensor;
    this.native.cast(cast.ptr, DTYPE_CODE[cast.dtype], wt.ptr, DTYPE_CODE[wt.dtype], wt.size);
    return cast;
  }

  /**
   * x [T, K] @ w [N, K]^T + bias [N] -> [T, N], fp32 accumulation. The output has x's dtype
   * unless `outDtype` asks for another ('f32' logits from bf16 weights). A w of the other float
   * dtype is first cast to x's into scratch: f32 LoRA matrices (small) meet bf16 activations.
   */
  linear(x: Tensor, w: Tensor, bias?: Tensor, outDtype?: DType): Tensor {
    const op = 'linear';
    const { xt, bt, T, K, N, wt: given } = this.linearOperands(op, x, w, bias);
    const wt = this.inDtypeOf(xt, given);
    const outDt = outDtype === undefined ? xt.dtype : cudaDtype(outDtype);
    if (outDt === 'i32') throw new Error('linear: outDtype must be a float dtype');
    const out = this.scratch([T, N], outDt);
    this.native.linear(
      out.ptr, DTYPE_CODE[outDt], xt.ptr, wt.ptr, DTYPE_CODE[xt.dtype],
      bt?.ptr ?? 0, DTYPE_CODE[bt?.dtype ?? outDt], T, K, N,
    );
    return out;
  }

  /** rmsnorm()'s checks for a fused norm: x [T, K], w [K] and residual [T, K] of one dtype. */
  normOperands(x: Tensor, norm: NormSpec): { xt: FloatTensor; wt: FloatTensor; rt: FloatTensor | null } {
    const op = 'rmsnorm';
    const xt = this.float(op, 'x', x);
    const wt = this.float(op, 'w', norm.w, 1);
    rmsnormShape(xt.shape, wt.shape, norm.eps);
    this.sameDtype(op, 'x', xt, 'w', wt);
    if (norm.residual === undefined) return { xt, wt, rt: null };
    const rt = this.float(op, 'residual', norm.residual);
    this.sameShape(op, 'x', xt, 'residual', rt);
    this.sameDtype(op, 'x', xt, 'residual', rt);
    return { xt, wt, rt };
  }

  /** linear()'s checks: x [T, K] and w [N, K] float tensors, bias [N] if given. */
  linearOperands(op: string, x: Tensor, w: Tensor, bias?: Tensor) {
    const xt = this.float(op, 'x', x, 2);
    const wt = this.float(op, 'w', w, 2);
    const bt: FloatTensor | null = bias === undefined ? null : this.float(op, 'bias', bias, 1);
    return { xt, wt, bt, ...linearShape(xt.shape, wt.shape, bt?.shape, op) };
  }

  linearMany(x: Tensor, parts: readonly LinearPart[]): Tensor[] {
    return this.fused.linearMany(x, parts);
  }

  linearSwiglu(x: Tensor, gate: LinearPart, up: LinearPart): Tensor {
    return this.fused.linearSwiglu(x, gate, up);
  }

  normLinearMany(x: Tensor, norm: NormSpec, parts: readonly LinearPart[]): { outs: Tensor[]; sum: Tensor } {
    return this.fused.normLinearMany(x, norm, parts);
  }

  normLinearSwiglu(x: Tensor, norm: NormSpec, gate: LinearPart, up: LinearPart): { out: Tensor; sum: Tensor } {
    return this.fused.normLinearSwiglu(x, norm, gate, up);
  }

  rope(q: Tensor, k: Tensor, positions: Tensor, invFreq: Tensor): void {
    this.attentionOps.rope(q, k, positions, invFreq);
  }

  writeKv(cache: KvCache, layer: number, k: Tensor, v: Tensor, slots: Tensor): void {
    this.attentionOps.writeKv(cache, layer, k, v, slots);
  }

  ropeWriteKv(
    q: Tensor, k: Tensor, v: Tensor, positions: Tensor, invFreq: Tensor, cache: KvCache, layer: number, slots: Tensor,
  ): void {
    this.attentionOps.ropeWriteKv(q, k, v, positions, invFreq, cache, layer, slots);
  }

  attention(q: Tensor, cache: KvCache, layer: number, meta: AttnMeta, scale: number): Tensor {
    return this.attentionOps.attention(q, cache, layer, meta, scale);
  }

  ropeAttentionDecode(
    q: Tensor, k: Tensor, v: Tensor, positions: Tensor, invFreq: Tensor, cache: KvCache, layer: number, slots: Tensor,
    meta: AttnMeta, scale: number,
  ): Tensor {
    return this.attentionOps.ropeAttentionDecode(q, k, v, positions, invFreq, cache, layer, slots, meta, scale);
  }

  swiglu(gate: Tensor, up: Tensor): Tensor {
    const g = this.float('swiglu', 'gate', gate);
    const u = this.float('swiglu', 'up', up);
    this.sameShape('swiglu', 'gate', g, 'up', u);
    this.sameDtype('swiglu', 'gate', g, 'up', u);
    const out = this.scratch(g.shape, g.dtype);
    this.native.swiglu(out.ptr, g.ptr, u.ptr, g.size, DTYPE_CODE[g.dtype]);
    return out;
  }

  add(a: Tensor, b: Tensor): Tensor {
    const at = this.float('add', 'a', a);
    const bt = this.float('add', 'b', b);
    this.sameShape('add', 'a', at, 'b', bt);
    this.sameDtype('add', 'a', at, 'b', bt);
    const out = this.scratch(at.shape, at.dtype);
    this.native.add(out.ptr, at.ptr, bt.ptr, at.size, DTYPE_CODE[at.dtype]);
    return out;
  }

  gatherRows(x: Tensor, idx: Tensor): Tensor {
    const op = 'gatherRows';
    const xt = this.float(op, 'x', x, 2);
    const it = this.i32(op, 'idx', idx, 1);
    const [T, C] = xt.shape;
    const [R] = it.shape;
    const bad = it.host === null ? -1 : firstOutOfRange(it.host, R, T);
    if (bad >= 0) throw new Error(`gatherRows: index ${it.host![bad]} at ${bad} is outside x's ${T} rows`);
    const out = this.scratch([R, C], xt.dtype);
    this.native.embedding(out.ptr, it.ptr, xt.ptr, R, T, C * elemBytes(xt.dtype));
    return out;
  }

  /** log-softmax over the last dim, x [S, V] (f32 or bf16) -> [S, V] f32. */
  logSoftmax(x: Tensor): Tensor {
    const xt = this.float('logSoftmax', 'x', x, 2);
    const [S, V] = xt.shape;
    const out = this.scratch([S, V], 'f32');
    this.native.logSoftmax(out.ptr, xt.ptr, S, V, DTYPE_CODE[xt.dtype]);
    return out;
  }

  async sample(logits: Tensor, params: readonly SamplingParams[], keepIds?: Tensor, pending?: PendingTokens): Promise<SampleResult> {
    const keep = keepIds === undefined ? undefined : this.i32('sample', 'keepIds', keepIds, 1);
    const pendingIds = pending === undefined ? undefined : { ids: this.i32('sample', 'pending.ids', pending.ids, 1), rows: pending.rows };
    return this.samplingOps.sample(logits, params, keep, pendingIds);
  }

  placeRows(dst: Tensor, src: Tensor, slots: Tensor): void {
    const d = this.use('placeRows', 'dst', dst);
    const s = this.use('placeRows', 'src', src);
    const sl = this.i32('placeRows', 'slots', slots, 1);
    const { N, S, row } = placeRowsShape(d, s, sl.shape);
    // (the scatter kernel skips slots outside [0, N))
    this.native.scatterRows(d.ptr, s.ptr, sl.ptr, S, N, row * elemBytes(d.dtype));
    // dst's host copy (kept for range checks) cannot know values that exist only on the device:
    // the placed rows are sampled ids, in range by construction, and read 0 there.
    if (d.host !== null && sl.host !== null) {
      for (let i = 0; i < S; i++) {
        const to = sl.host[i];
        if (to >= 0 && to < N) d.host.fill(0, to * row, (to + 1) * row);
      }
    }
  }

  // ---- in-place helpers, backward and training ops (checked and run by training-ops.ts) ----

  viewAt(t: Tensor, offset: number, shape: readonly number[]): Tensor {
    return this.training.viewAt(t, offset, shape);
  }

  copy(dst: Tensor, src: Tensor): void {
    this.training.copy(dst, src);
  }

  zero(t: Tensor): void {
    this.training.zero(t);
  }

  axpy(y: Tensor, x: Tensor, alpha: number): void {
    this.training.axpy(y, x, alpha);
  }

  linearBackwardInput(dy: Tensor, w: Tensor): Tensor {
    return this.training.linearBackwardInput(dy, w);
  }

  linearBackwardWeight(dy: Tensor, x: Tensor, dw: Tensor, alpha: number): void {
    this.training.linearBackwardWeight(dy, x, dw, alpha);
  }

  rmsnormBackward(dy: Tensor, x: Tensor, w: Tensor, eps: number): Tensor {
    return this.training.rmsnormBackward(dy, x, w, eps);
  }

  ropeBackward(dq: Tensor, dk: Tensor, positions: Tensor, invFreq: Tensor): void {
    this.training.ropeBackward(dq, dk, positions, invFreq);
  }

  swigluBackward(dy: Tensor, gate: Tensor, up: Tensor): { dGate: Tensor; dUp: Tensor } {
    return this.training.swigluBackward(dy, gate, up);
  }

  attentionPacked(q: Tensor, k: Tensor, v: Tensor, cuSeqlens: Tensor, scale: number): { out: Tensor; lse: Tensor } {
    return this.training.attentionPacked(q, k, v, cuSeqlens, scale);
  }

  attentionPackedBackward(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, cuSeqlens: Tensor, scale: number,
  ): { dq: Tensor; dk: Tensor; dv: Tensor } {
    return this.training.attentionPackedBackward(dout, q, k, v, out, lse, cuSeqlens, scale);
  }

  tokenLogprobs(logits: Tensor, targets: Tensor, temperature: number): Tensor {
    return this.training.tokenLogprobs(logits, targets, temperature);
  }

  tokenLogprobsBackward(logits: Tensor, targets: Tensor, temperature: number, dlogp: Tensor): Tensor {
    return this.training.tokenLogprobsBackward(logits, targets, temperature, dlogp);
  }

  scatterRows(src: Tensor, idx: Tensor, T: number): Tensor {
    return this.training.scatterRows(src, idx, T);
  }

  sumSquares(x: Tensor): Tensor {
    return this.training.sumSquares(x);
  }

  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWStep): void {
    this.training.adamw(param, grad, m, v, h);
  }

  // ---- helpers ----

  private make(shape: readonly number[], dtype: CudaDType, lifetime: Lifetime, host: Int32Array | null): CudaTensor {
    const n = numel(shape);
    const bytes = n * elemBytes(dtype);
    const frozen = Object.freeze([...shape]);
    if (lifetime === 'persistent') {
      const held = allocatedBytes(bytes);
      if (this.budget !== null) {
        const used = this.persistentBytes - Math.min(this.persistentBytes, this.budget.weights);
        if (used + held > this.budget.adapters) {
          throw new Error(
            `out of the GPU memory budget for adapters: a ${fmtShape(shape)} ${dtype} tensor (${formatBytes(held)}) on top of ` +
              `${formatBytes(used)} held exceeds the ${formatBytes(this.budget.adapters)} reserve: unload an adapter, or raise --adapter-memory`,
          );
        }
      }
      const ptr = this.native.malloc(bytes);
      this.persistentBytes += held;
      return new CudaTensor(this, frozen, dtype, ptr, n, 'persistent', -1, null, host, held);
    }
    if (lifetime !== 'scratch') throw new Error(`unknown tensor lifetime '${String(lifetime)}' (use 'persistent' or 'scratch')`);
    return new CudaTensor(this, frozen, dtype, this.arena.take(bytes), n, 'scratch', this.arena.generation, null, host, 0);
  }

  private scratch(shape: readonly number[], dtype: CudaDType): CudaTensor {
    return this.make(shape, dtype, 'scratch', null);
  }

  /** Resolve a handle for `op`: ours, alive, and (for scratch) from the current step. */
  private use(op: string, name: string, t: Tensor): CudaTensor {
    if (!(t instanceof CudaTensor)) throw new Error(`${op}: ${name} is a tensor of backend '${t?.backend}', not of this cuda backend`);
    if (t.owner !== this) throw new Error(`${op}: ${name} ${fmtShape(t.shape)} belongs to another CudaBackend instance`);
    if ((t.root ?? t).freed) throw new Error(`${op}: ${name} ${fmtShape(t.shape)} was freed`);
    if (t.lifetime === 'scratch' && t.generation !== this.arena.generation) {
      // Negative generations tag a CUDA graph's arena: valid while the graph lives.
      if (t.generation < -1 && !this.graphs.liveTags.has(t.generation)) {
        throw new Error(`${op}: ${name} ${fmtShape(t.shape)} belongs to a CUDA graph that was freed`);
      }
      if (t.generation >= -1) throw new Error(`${op}: ${name} ${fmtShape(t.shape)} is a scratch tensor used after resetScratch()`);
    }
    return t;
  }

  private float(op: string, name: string, t: Tensor, rank?: number): FloatTensor {
    const c = this.use(op, name, t);
    if (c.dtype === 'i32') throw new Error(`${op}: ${name} must be a float tensor, got ${c.dtype} ${fmtShape(c.shape)}`);
    if (rank !== undefined && c.shape.length !== rank) throw new Error(`${op}: ${name} must have ${rank} dims, got ${fmtShape(c.shape)}`);
    return c as FloatTensor;
  }

  private i32(op: string, name: string, t: Tensor, rank: number): CudaTensor {
    const c = this.use(op, name, t);
    if (c.dtype !== 'i32') throw new Error(`${op}: ${name} must be an i32 tensor, got ${c.dtype} ${fmtShape(c.shape)}`);
    if (c.shape.length !== rank) throw new Error(`${op}: ${name} must have ${rank} dims, got ${fmtShape(c.shape)}`);
    return c;
  }

  private sameShape(op: string, an: string, a: CudaTensor, bn: string, b: CudaTensor): void {
    sameShape(op, an, a.shape, bn, b.shape);
  }

  private sameDtype(op: string, an: string, a: CudaTensor, bn: string, b: CudaTensor): void {
    if (a.dtype !== b.dtype) throw new Error(`${op}: ${an} is ${a.dtype} but ${bn} is ${b.dtype}; upload them in one float dtype`);
  }

  private useCache(op: string, cache: KvCache): CudaKvCache {
    if (!(cache instanceof CudaKvCache)) throw new Error(`${op}: the KV cache belongs to backend '${cache?.backend}', not to this cuda backend`);
    if (!this.caches.has(cache)) throw new Error(`${op}: the KV cache was freed or belongs to another CudaBackend instance`);
    return cache;
  }
}
