/**
 * The CUDA backend: the Backend contract on one NVIDIA GPU, through the native addon built from
 * kernels/ (see kernels/binding.cpp and kernels/*.cu, one file per op family).
 *
 * This file owns tensors, the scratch arena, KV caches and argument checking (the same checks
 * and messages as the CPU backend); the arithmetic runs in the kernels. bf16 storage for weights,
 * activations and the KV cache, fp32 accumulation and reductions; f32 tensors are supported
 * throughout (upload with dtype 'f32'), logSoftmax always writes f32.
 *
 * Ops queue work on one CUDA stream and return at once; download() and sample() resolve when
 * the GPU has produced the data, without ever blocking the event loop. Greedy rows are sampled
 * on the device (only ids and logprobs come back); any other sampling downloads the logits and
 * uses the CPU sampler for now (host-sampling.ts).
 *
 * Usage:
 *   const be = new CudaBackend();                     // throws "CUDA backend not built: ..." without the addon
 *   const w = be.upload(weights, [N, K], 'bf16');
 *   const y = be.linear(be.upload(x, [T, K], 'bf16', 'scratch'), w);
 *   const host = await be.download(y);                 // Float32Array
 *   be.resetScratch();
 */
import { attentionShape, linearShape, ropeShape, rmsnormShape, sameShape, writeKvShape } from '../op-shapes.ts';
import type {
  AttnMeta,
  Backend,
  DType,
  KvCache,
  KvCacheSpec,
  Lifetime,
  SampleResult,
  SamplingParams,
  Tensor,
} from '../backend.ts';
import { checkAttnMeta } from '../cpu/attention.ts';
import { firstOutOfRange } from '../cpu/gather.ts';
import { checkPenalties } from '../cpu/penalties.ts';
import { checkSamplingParams } from '../cpu/sampling.ts';
import { checkShape, fmtShape, numel } from '../cpu/tensor.ts';
import { HostSampler, greedyOnDevice } from './host-sampling.ts';
import { DTYPE_CODE, loadNative } from './native.ts';
import type { DeviceInfo, NativeCuda } from './native.ts';
import { CudaTensor, DeviceArena, allocatedBytes, cudaDtype, elemBytes } from './tensor.ts';
import type { CudaDType } from './tensor.ts';

export { cudaAvailable, cudaUnavailableReason } from './available.ts';

export interface CudaBackendOptions {
  /** CUDA device ordinal (default 0). One process drives one GPU. */
  device?: number;
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

export class CudaBackend implements Backend {
  readonly name = 'cuda';
  /** The GPU in use (name, memory, multiprocessors, compute capability). */
  readonly device: DeviceInfo;
  private readonly native: NativeCuda;
  private readonly arena: DeviceArena;
  private readonly sampler = new HostSampler();
  private persistentBytes = 0;
  private readonly caches = new Set<CudaKvCache>();

  constructor(opts: CudaBackendOptions = {}) {
    this.native = loadNative();
    this.device = this.native.init(opts.device ?? 0);
    this.arena = new DeviceArena(this.native);
  }

  /** Resolves once every op queued so far has run on the GPU. */
  synchronize(): Promise<void> {
    return this.native.synchronize();
  }

  /**
   * Give the scratch arena's memory back to the allocator (scratch tensors die, as at a reset).
   * Persistent tensors and KV caches stay until freed.
   */
  releaseScratch(): void {
    this.arena.release();
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
    let kv = 0;
    for (const c of this.caches) kv += c.bytes;
    const stats = this.native.memStats();
    return { weights: this.persistentBytes, kv_cache: kv, scratch: this.arena.bytesHeld, cached: stats.cached, workspace: stats.workspace };
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
   * x [T, K] @ w [N, K]^T + bias [N] -> [T, N], fp32 accumulation. x and w share a dtype; the
   * output has x's dtype unless `outDtype` asks for another ('f32' logits from bf16 weights).
   */
  linear(x: Tensor, w: Tensor, bias?: Tensor, outDtype?: DType): Tensor {
    const op = 'linear';
    const xt = this.float(op, 'x', x, 2);
    const wt = this.float(op, 'w', w, 2);
    const bt: FloatTensor | null = bias === undefined ? null : this.float(op, 'bias', bias, 1);
    const { T, K, N } = linearShape(xt.shape, wt.shape, bt?.shape);
    this.sameDtype(op, 'x', xt, 'w', wt);
    const outDt = outDtype === undefined ? xt.dtype : cudaDtype(outDtype);
    if (outDt === 'i32') throw new Error('linear: outDtype must be a float dtype');
    const out = this.scratch([T, N], outDt);
    this.native.linear(
      out.ptr, DTYPE_CODE[outDt], xt.ptr, wt.ptr, DTYPE_CODE[xt.dtype],
      bt?.ptr ?? 0, DTYPE_CODE[bt?.dtype ?? outDt], T, K, N,
    );
    return out;
  }

  rope(q: Tensor, k: Tensor, positions: Tensor, invFreq: Tensor): void {
    const op = 'rope';
    const qt = this.float(op, 'q', q, 3);
    const kt = this.float(op, 'k', k, 3);
    const pt = this.i32(op, 'positions', positions, 1);
    const ft = this.float(op, 'invFreq', invFreq, 1);
    const { T, H, Hkv, D } = ropeShape(qt.shape, kt.shape, pt.shape, ft.shape);
    this.sameDtype(op, 'q', qt, 'k', kt);
    this.native.rope(qt.ptr, kt.ptr, pt.ptr, ft.ptr, DTYPE_CODE[ft.dtype], T, H, Hkv, D, DTYPE_CODE[qt.dtype]);
  }

  writeKv(cache: KvCache, layer: number, k: Tensor, v: Tensor, slots: Tensor): void {
    const op = 'writeKv';
    const c = this.useCache(op, cache);
    const kt = this.float(op, 'k', k, 3);
    const vt = this.float(op, 'v', v, 3);
    const st = this.i32(op, 'slots', slots, 1);
    this.checkLayer(op, layer, c.spec.numLayers);
    const { T, Hkv, D } = writeKvShape(kt.shape, vt.shape, st.shape, c.spec);
    if (kt.dtype !== c.spec.dtype || vt.dtype !== c.spec.dtype) {
      throw new Error(`writeKv: k and v are ${kt.dtype} / ${vt.dtype} but the cache stores ${c.spec.dtype}`);
    }
    const bad = st.host === null ? -1 : firstOutOfRange(st.host, T, c.numSlots);
    if (bad >= 0) throw new Error(`writeKv: slot ${st.host![bad]} of token ${bad} is outside the cache's ${c.numSlots} slots`);
    const rowBytes = Hkv * D * elemBytes(c.spec.dtype);
    this.native.scatterRows(c.kPool(layer), kt.ptr, st.ptr, T, c.numSlots, rowBytes);
    this.native.scatterRows(c.vPool(layer), vt.ptr, st.ptr, T, c.numSlots, rowBytes);
  }

  attention(q: Tensor, cache: KvCache, layer: number, meta: AttnMeta, scale: number): Tensor {
    const op = 'attention';
    const c = this.useCache(op, cache);
    const qt = this.float(op, 'q', q, 3);
    const cu = this.i32(op, 'meta.cuSeqlensQ', meta.cuSeqlensQ, 1);
    const lens = this.i32(op, 'meta.contextLens', meta.contextLens, 1);
    const tables = this.i32(op, 'meta.blockTables', meta.blockTables, 2);
    const { numLayers, numKvHeads: Hkv, blockSize, numBlocks } = c.spec;
    this.checkLayer(op, layer, numLayers);
    const { T, H, D, S, maxBlocks } = attentionShape(qt.shape, c.spec, cu.shape, lens.shape, tables.shape, scale);
    if (qt.dtype !== c.spec.dtype) throw new Error(`attention: q is ${qt.dtype} but the cache stores ${c.spec.dtype}`);
    if (!this.native.attentionHeadDimSupported(D)) {
      throw new Error(`attention: head dim ${D} is not supported by the CUDA attention kernel (32, 64, 128 or 256)`);
    }
    // Metadata made on the host (the usual case) is checked here; the kernel skips blocks
    // outside the cache either way, so device-made tables cannot read out of bounds.
    if (cu.host !== null && lens.host !== null && tables.host !== null) {
      checkAttnMeta(cu.host, lens.host, tables.host, { S, T, blockSize, maxBlocks, numBlocks }, meta);
    }
    const out = this.scratch([T, H, D], qt.dtype);
    if (T === 0) return out;
    this.native.attention(
      out.ptr, qt.ptr, c.kPool(layer), c.vPool(layer), cu.ptr, lens.ptr, tables.ptr,
      T, S, H, Hkv, D, blockSize, maxBlocks, numBlocks, scale, DTYPE_CODE[qt.dtype],
    );
    return out;
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

  async sample(logits: Tensor, params: readonly SamplingParams[]): Promise<SampleResult> {
    const lt = this.float('sample', 'logits', logits, 2);
    const [S, V] = lt.shape;
    if (params.length !== S) throw new Error(`sample: logits ${fmtShape(lt.shape)} has ${S} rows but ${params.length} sampling params were given`);
    if (V < 1) throw new Error(`sample: logits ${fmtShape(lt.shape)} has an empty vocabulary`);
    params.forEach((p, row) => {
      checkSamplingParams(p, row);
      checkPenalties(p, row, V);
      const k = p.topLogprobs ?? 0;
      if (!Number.isInteger(k) || k < 0) throw new Error(`sample: row ${row}: topLogprobs must be an integer >= 0, got ${k}`);
    });
    if (S === 0) return { ids: new Int32Array(0), logprobs: new Float32Array(0), top: [] };
    if (!params.every(greedyOnDevice)) {
      const x = (await this.native.download(lt.ptr, lt.size, DTYPE_CODE[lt.dtype])) as Float32Array;
      return this.sampler.sample(x, S, V, params);
    }
    // ids then logprobs in one buffer, so one download brings both back.
    const buf = this.scratch([2 * S], 'i32');
    this.native.greedySample(buf.ptr, buf.ptr + 4 * S, lt.ptr, S, V, DTYPE_CODE[lt.dtype]);
    const words = (await this.native.download(buf.ptr, 2 * S, DTYPE_CODE.i32)) as Int32Array;
    const empty = { ids: new Int32Array(0), logprobs: new Float32Array(0) };
    return {
      ids: words.subarray(0, S),
      logprobs: new Float32Array(words.buffer, words.byteOffset + 4 * S, S),
      top: Array.from({ length: S }, () => empty),
    };
  }

  // ---- training ops: not on the GPU yet; the CPU backend is the training backend for now ----

  viewAt(): Tensor { return notYet('viewAt'); }
  copy(): void { notYet('copy'); }
  zero(): void { notYet('zero'); }
  axpy(): void { notYet('axpy'); }
  linearBackwardInput(): Tensor { return notYet('linearBackwardInput'); }
  linearBackwardWeight(): void { notYet('linearBackwardWeight'); }
  rmsnormBackward(): Tensor { return notYet('rmsnormBackward'); }
  ropeBackward(): void { notYet('ropeBackward'); }
  swigluBackward(): { dGate: Tensor; dUp: Tensor } { return notYet('swigluBackward'); }
  attentionPacked(): { out: Tensor; lse: Tensor } { return notYet('attentionPacked'); }
  attentionPackedBackward(): { dq: Tensor; dk: Tensor; dv: Tensor } { return notYet('attentionPackedBackward'); }
  tokenLogprobs(): Tensor { return notYet('tokenLogprobs'); }
  tokenLogprobsBackward(): Tensor { return notYet('tokenLogprobsBackward'); }
  scatterRows(): Tensor { return notYet('scatterRows'); }
  sumSquares(): Tensor { return notYet('sumSquares'); }
  adamw(): void { notYet('adamw'); }

  // ---- helpers ----

  private make(shape: readonly number[], dtype: CudaDType, lifetime: Lifetime, host: Int32Array | null): CudaTensor {
    const n = numel(shape);
    const bytes = n * elemBytes(dtype);
    const frozen = Object.freeze([...shape]);
    if (lifetime === 'persistent') {
      const ptr = this.native.malloc(bytes);
      const held = allocatedBytes(bytes);
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
      throw new Error(`${op}: ${name} ${fmtShape(t.shape)} is a scratch tensor used after resetScratch()`);
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

  private checkLayer(op: string, layer: number, numLayers: number): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= numLayers) throw new Error(`${op}: layer ${layer} is outside the cache's ${numLayers} layers`);
  }
}

function notYet(op: string): never {
  throw new Error(`${op}: not implemented on the cuda backend yet`);
}
