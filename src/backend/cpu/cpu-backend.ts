/**
 * The CPU backend: the reference implementation of the Backend contract, in f32 on TypedArrays.
 *
 * This file owns memory (persistent tensors, the scratch arena, KV caches) and checks every
 * op's arguments; the arithmetic lives in one file per op family (matmul.ts, norm.ts, ...),
 * as plain functions over typed arrays. The backward and training ops are checked and run by
 * training-ops.ts, which this class delegates to.
 *
 * Float tensors are stored and reported as 'f32' whatever dtype is asked for (bf16 / f16
 * checkpoints are widened on load); 'i32' tensors are Int32Arrays.
 *
 * Threads: with more than one thread (option `threads`, else TANDEM_CPU_THREADS, else every
 * core), big `linear` (forward and backward) and `attention` calls are shared with a pool of
 * worker threads (pool.ts), started on the first such call or once 4 MiB of weights are loaded,
 * whichever comes first; all tensor storage then lives in SharedArrayBuffers. Results are
 * bit-for-bit the same for any thread count. Workers never keep the process alive; dispose()
 * stops them early. On a machine whose cores are busy with other work, TANDEM_CPU_THREADS=1 is
 * the better choice.
 */
import { attentionShape, linearAddShape, linearShape, ropeShape, rmsnormShape, sameShape, writeKvShape, sampleArgs, placeRowsShape } from '../op-shapes.ts';
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
import {
  composedLinearMany,
  composedLinearSwiglu,
  composedNormLinearMany,
  composedNormLinearSwiglu,
  composedRopeWriteKv,
  composedRopeAttentionDecode,
} from '../composed-ops.ts';
import { uniformAt } from '../rng.ts';
import { AttentionWorkspace, attentionForward, checkAttnMeta } from './attention.ts';
import { addForward, axpyForward, swigluForward } from './elementwise.ts';
import { firstOutOfRange, gatherRowsForward } from './gather.ts';
import { CpuKvCache, writeKvForward } from './kv-cache.ts';
import { linearForward, linearPlan } from './matmul.ts';
import { CpuThreadPool, cpuThreadsDefault } from './pool.ts';
import { addRmsnormForward, rmsnormForward } from './norm.ts';
import { ropeForward } from './rope.ts';
import { applyPenalties, checkPendingRows, hasPenalties, penaltyCounts, withOutputToken } from './penalties.ts';
import { SamplingWorkspace, argmax, sampleFiltered } from './sampling.ts';
import { topLogprobs } from './top-logprobs.ts';
import { logSoftmaxForward, logSumExp } from './softmax.ts';
import { CpuTensor, ScratchArena, checkShape, cpuDtype, fmtShape, numel } from './tensor.ts';
import { CpuTrainingOps } from './training-ops.ts';
import type { CpuDType, F32Tensor, I32Tensor } from './tensor.ts';

export { cpuThreadsDefault };

export interface CpuBackendOptions {
  /** Threads, the calling one included (1: no workers). Default: cpuThreadsDefault(). */
  threads?: number;
  /** Share every linear / attention call of more than one task, however small (for tests). */
  shareAll?: boolean;
}

/**
 * Smallest calls shared between threads; linear counts multiply-adds (T * K * N), attention
 * (query row, head, visible key) triples. Both are about 50-80 us of work on one thread.
 * Measured on an idle 2-core machine with the embedded model: a decode step's gate/up/down
 * projections (180k MACs) gain from a second thread, its q/o projections (65k) do not;
 * attention over 1024 keys already gains (39 -> 28 us), so 2048 leaves a margin.
 */
export const PARALLEL_MIN_LINEAR_MACS = 1 << 17;
export const PARALLEL_MIN_ATTENTION_KEYS = 1 << 11;
/**
 * Calls below these (under ~1 ms on one thread) are "small": they are shared only while the
 * workers keep up (see CpuThreadPool.run); when other processes hold the cores, waiting for a
 * descheduled worker costs small calls more than sharing saves.
 */
const SMALL_LINEAR_MACS = 1 << 21;
const SMALL_ATTENTION_KEYS = 1 << 15;
/** Persistent bytes from which the workers start without waiting for a big op. */
const EAGER_START_BYTES = 4 << 20;

export class CpuBackend implements Backend {
  readonly name = 'cpu';
  /** fp32 throughout: dtypes are accepted and ignored (bf16 files are widened on load). */
  readonly preferredDtype = 'f32' as const;
  readonly jointProjections = true;
  /** Ops compute before they return (the worker pool is joined): nothing runs behind the host. */
  readonly queuesWork: boolean = false;
  /** Threads used for big ops, the calling one included. */
  readonly threads: number;
  /** Storage in SharedArrayBuffers (when there are worker threads to share it with). */
  private readonly shared: boolean;
  private readonly minLinearMacs: number;
  private readonly minAttentionKeys: number;
  private readonly arena: ScratchArena;
  private pool: CpuThreadPool | null = null;
  private disposed = false;
  private persistentBytes = 0;
  private readonly caches = new Set<CpuKvCache>();
  // Op workspaces that outlive a step (grown, never shrunk): attention scores and key offsets,
  // rope's cos/sin row, sampling weights and candidates.
  private readonly attn = new AttentionWorkspace();
  private cos = new Float64Array(0);
  private sin = new Float64Array(0);
  private readonly sampling = new SamplingWorkspace();
  private penalized = new Float32Array(0);
  private readonly training = new CpuTrainingOps({
    f32: (op, name, t, rank) => this.f32(op, name, t, rank),
    i32: (op, name, t, rank) => this.i32(op, name, t, rank),
    scratchF32: (shape) => this.scratchF32(shape),
    linearPool: (macs) => {
      const pool = this.shared && macs >= this.minLinearMacs ? this.threadPool() : null;
      return pool === null ? null : { pool, small: macs < SMALL_LINEAR_MACS };
    },
  });

  constructor(opts: CpuBackendOptions = {}) {
    const threads = opts.threads ?? cpuThreadsDefault();
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`CpuBackend: threads must be an integer >= 1, got ${threads}`);
    this.threads = threads;
    this.shared = threads > 1;
    this.arena = new ScratchArena(this.shared);
    this.minLinearMacs = opts.shareAll === true ? 0 : PARALLEL_MIN_LINEAR_MACS;
    this.minAttentionKeys = opts.shareAll === true ? 0 : PARALLEL_MIN_ATTENTION_KEYS;
  }

  /**
   * Stop the worker threads now (they would otherwise idle until the process exits, without
   * keeping it alive). The backend stays usable, on the calling thread only.
   */
  dispose(): void {
    this.disposed = true;
    this.pool?.dispose();
    this.pool = null;
  }

  /**
   * Start the worker threads now and resolve, with how many are serving, once each is serving
   * or has failed to start (they otherwise start on the first big op and join in once loaded).
   * Resolves with 0 at once when single-threaded.
   */
  async startThreads(): Promise<number> {
    return (await this.threadPool()?.ready()) ?? 0;
  }

  /** Tasks of shared ops that worker threads have run so far (0 when single-threaded). */
  get workerTasks(): number {
    return this.pool?.workerTasks ?? 0;
  }

  /** The worker pool, started on first use; null when single-threaded or disposed. */
  private threadPool(): CpuThreadPool | null {
    if (this.pool === null && this.shared && !this.disposed) this.pool = new CpuThreadPool(this.threads - 1);
    return this.pool;
  }

  // ---- memory ----

  upload(data: Float32Array | Int32Array, shape: readonly number[], dtype?: DType, lifetime: Lifetime = 'persistent'): Tensor {
    checkShape('upload', shape);
    const want = cpuDtype(dtype ?? (data instanceof Int32Array ? 'i32' : 'f32'));
    if (want === 'i32' && !(data instanceof Int32Array)) throw new Error(`upload: dtype i32 needs an Int32Array, got ${data.constructor.name}`);
    if (want === 'f32' && !(data instanceof Float32Array)) throw new Error(`upload: dtype ${dtype} needs a Float32Array, got ${data.constructor.name}`);
    if (data.length !== numel(shape)) throw new Error(`upload: shape ${fmtShape(shape)} holds ${numel(shape)} elements, data has ${data.length}`);
    const t = this.make(shape, want, lifetime, false);
    t.data.set(data);
    return t;
  }

  alloc(shape: readonly number[], dtype: DType, lifetime: Lifetime): Tensor {
    checkShape('alloc', shape);
    return this.make(shape, cpuDtype(dtype), lifetime, true);
  }

  write(t: Tensor, data: Float32Array | Int32Array): void {
    const c = this.use('write', 't', t);
    const want = c.dtype === 'i32' ? 'Int32Array' : 'Float32Array';
    if (data.constructor.name !== want) throw new Error(`write: a ${c.dtype} tensor takes a ${want}, got ${data.constructor.name}`);
    if (data.length !== c.size) throw new Error(`write: t ${fmtShape(c.shape)} holds ${c.size} elements, data has ${data.length}`);
    c.data.set(data);
  }

  async download(t: Tensor): Promise<Float32Array | Int32Array> {
    const c = this.use('download', 't', t);
    return c.data.slice();
  }

  free(t: Tensor): void {
    const c = this.use('free', 't', t);
    if (c.lifetime !== 'persistent') throw new Error(`free: ${fmtShape(c.shape)} is a scratch tensor; scratch is released by resetScratch()`);
    if (c.root !== null) throw new Error(`free: ${fmtShape(c.shape)} is a view; free the tensor it views`);
    c.freed = true;
    this.persistentBytes -= c.data.byteLength;
    this.pool?.release(c.data.buffer);
  }

  resetScratch(): void {
    this.arena.reset();
  }

  view(t: Tensor, shape: readonly number[]): Tensor {
    const c = this.use('view', 't', t);
    checkShape('view', shape);
    if (numel(shape) !== c.size) throw new Error(`view: cannot view ${fmtShape(c.shape)} (${c.size} elements) as ${fmtShape(shape)} (${numel(shape)})`);
    return new CpuTensor(this, Object.freeze([...shape]), c.dtype, c.data, c.lifetime, c.generation, c.root ?? c);
  }

  memoryUsage(): Record<string, number> {
    let kv = 0;
    for (const c of this.caches) kv += c.bytes;
    const workspaces = this.attn.bytes + this.cos.byteLength + this.sin.byteLength
      + this.sampling.bytes + this.training.workspaceBytes + (this.pool?.workspaceBytes ?? 0);
    return { weights: this.persistentBytes, kv_cache: kv, scratch: this.arena.bytesHeld + workspaces };
  }

  /** Buffers the scratch arena has created so far (constant once steps repeat). */
  get scratchAllocations(): number {
    return this.arena.allocations;
  }

  // ---- KV cache ----

  allocKvCache(spec: KvCacheSpec): KvCache {
    const cache = new CpuKvCache({ ...spec, dtype: 'f32' }, this.shared);
    this.caches.add(cache);
    return cache;
  }

  freeKvCache(cache: KvCache): void {
    const c = this.useCache('freeKvCache', cache);
    c.freed = true;
    this.caches.delete(c);
    for (const layer of [...c.k, ...c.v]) this.pool?.release(layer.buffer);
  }

  // ---- forward ops ----

  embedding(ids: Tensor, table: Tensor): Tensor {
    const op = 'embedding';
    const i = this.i32(op, 'ids', ids, 1);
    const tb = this.f32(op, 'table', table, 2);
    const [T] = i.shape;
    const [V, C] = tb.shape;
    const bad = firstOutOfRange(i.data, T, V);
    if (bad >= 0) throw new Error(`embedding: token id ${i.data[bad]} at row ${bad} is outside the table's ${V} rows`);
    const out = this.scratchF32([T, C]);
    gatherRowsForward(out.data, tb.data, i.data, T, C);
    return out;
  }

  rmsnorm(x: Tensor, w: Tensor, eps: number, residual?: Tensor): { y: Tensor; sum: Tensor } {
    const op = 'rmsnorm';
    const xt = this.f32(op, 'x', x);
    const wt = this.f32(op, 'w', w, 1);
    const { R, C } = rmsnormShape(xt.shape, wt.shape, eps);
    const y = this.scratchF32(xt.shape);
    if (residual === undefined) {
      rmsnormForward(y.data, xt.data, wt.data, eps, R, C);
      return { y, sum: xt };
    }
    const rt = this.f32(op, 'residual', residual);
    this.sameShape(op, 'x', xt, 'residual', rt);
    const sum = this.scratchF32(xt.shape);
    addRmsnormForward(y.data, sum.data, xt.data, rt.data, wt.data, eps, R, C);
    return { y, sum };
  }

  linearAdd(y: Tensor, x: Tensor, w: Tensor, alpha: number): void {
    const yt = this.f32('linearAdd', 'y', y);
    const xt = this.f32('linearAdd', 'x', x, 2);
    const wt = this.f32('linearAdd', 'w', w, 2);
    linearAddShape(yt.shape, xt.shape, wt.shape, alpha);
    // In f32 as everywhere on the cpu: the product, then axpy's scaled sum (the same bits as
    // axpy(y, linear(x, w), alpha)).
    const p = this.f32('linearAdd', 'product', this.linear(xt, wt));
    axpyForward(yt.data, p.data, alpha, yt.size);
  }

  linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
    const op = 'linear';
    const xt = this.f32(op, 'x', x, 2);
    const wt = this.f32(op, 'w', w, 2);
    const bt = bias === undefined ? undefined : this.f32(op, 'bias', bias, 1);
    const { T, K, N } = linearShape(xt.shape, wt.shape, bt?.shape);
    const b = bt?.data ?? null;
    const out = this.scratchF32([T, N]);
    const pool = this.shared && T * K * N >= this.minLinearMacs && linearPlan(T, K, N).tasks > 1 ? this.threadPool() : null;
    if (pool === null || !pool.linear(out.data, xt.data, wt.data, b, T, K, N, T * K * N < SMALL_LINEAR_MACS)) {
      linearForward(out.data, xt.data, wt.data, b, T, K, N);
    }
    return out;
  }

  linearMany(x: Tensor, parts: readonly LinearPart[]): Tensor[] {
    return composedLinearMany(this, x, parts);
  }

  linearSwiglu(x: Tensor, gate: LinearPart, up: LinearPart): Tensor {
    return composedLinearSwiglu(this, x, gate, up);
  }

  normLinearMany(x: Tensor, norm: NormSpec, parts: readonly LinearPart[]): { outs: Tensor[]; sum: Tensor } {
    return composedNormLinearMany(this, x, norm, parts);
  }

  normLinearSwiglu(x: Tensor, norm: NormSpec, gate: LinearPart, up: LinearPart): { out: Tensor; sum: Tensor } {
    return composedNormLinearSwiglu(this, x, norm, gate, up);
  }

  ropeWriteKv(
    q: Tensor, k: Tensor, v: Tensor, positions: Tensor, invFreq: Tensor, cache: KvCache, layer: number, slots: Tensor,
  ): void {
    composedRopeWriteKv(this, q, k, v, positions, invFreq, cache, layer, slots);
  }

  ropeAttentionDecode(
    q: Tensor, k: Tensor, v: Tensor, positions: Tensor, invFreq: Tensor, cache: KvCache, layer: number, slots: Tensor,
    meta: AttnMeta, scale: number,
  ): Tensor {
    return composedRopeAttentionDecode(this, q, k, v, positions, invFreq, cache, layer, slots, meta, scale);
  }

  rope(q: Tensor, k: Tensor, positions: Tensor, invFreq: Tensor): void {
    const op = 'rope';
    const qt = this.f32(op, 'q', q, 3);
    const kt = this.f32(op, 'k', k, 3);
    const pt = this.i32(op, 'positions', positions, 1);
    const ft = this.f32(op, 'invFreq', invFreq, 1);
    const { T, H, Hkv, D } = ropeShape(qt.shape, kt.shape, pt.shape, ft.shape);
    if (this.cos.length < D / 2) {
      this.cos = new Float64Array(D / 2);
      this.sin = new Float64Array(D / 2);
    }
    ropeForward(qt.data, kt.data, pt.data, ft.data, this.cos, this.sin, T, H, Hkv, D);
  }

  writeKv(cache: KvCache, layer: number, k: Tensor, v: Tensor, slots: Tensor): void {
    const op = 'writeKv';
    const c = this.useCache(op, cache);
    const kt = this.f32(op, 'k', k, 3);
    const vt = this.f32(op, 'v', v, 3);
    const st = this.i32(op, 'slots', slots, 1);
    this.checkLayer(op, layer, c.spec.numLayers);
    const { T, Hkv, D } = writeKvShape(kt.shape, vt.shape, st.shape, c.spec);
    const bad = firstOutOfRange(st.data, T, c.numSlots);
    if (bad >= 0) throw new Error(`writeKv: slot ${st.data[bad]} of token ${bad} is outside the cache's ${c.numSlots} slots`);
    writeKvForward(c.k[layer], c.v[layer], kt.data, vt.data, st.data, T, Hkv * D);
  }

  attention(q: Tensor, cache: KvCache, layer: number, meta: AttnMeta, scale: number): Tensor {
    const op = 'attention';
    const c = this.useCache(op, cache);
    const qt = this.f32(op, 'q', q, 3);
    const cu = this.i32(op, 'meta.cuSeqlensQ', meta.cuSeqlensQ, 1);
    const lens = this.i32(op, 'meta.contextLens', meta.contextLens, 1);
    const tables = this.i32(op, 'meta.blockTables', meta.blockTables, 2);
    const { numLayers, numKvHeads: Hkv, blockSize, numBlocks } = c.spec;
    this.checkLayer(op, layer, numLayers);
    const { T, H, D, S, maxBlocks } = attentionShape(qt.shape, c.spec, cu.shape, lens.shape, tables.shape, scale);
    checkAttnMeta(cu.data, lens.data, tables.data, { S, T, blockSize, maxBlocks, numBlocks }, meta);
    const out = this.scratchF32([T, H, D]);
    const dims = { S, H, Hkv, D, blockSize, maxBlocks };
    const k = c.k[layer];
    const v = c.v[layer];
    const keys = this.shared ? attentionKeys(cu.data, lens.data, S) * H : 0;
    const pool = this.shared && keys >= this.minAttentionKeys ? this.threadPool() : null;
    if (pool === null || !pool.attention(out.data, qt.data, k, v, cu.data, lens.data, tables.data, dims, scale, keys < SMALL_ATTENTION_KEYS)) {
      attentionForward(out.data, qt.data, k, v, cu.data, lens.data, tables.data, dims, scale, this.attn);
    }
    return out;
  }

  swiglu(gate: Tensor, up: Tensor): Tensor {
    const g = this.f32('swiglu', 'gate', gate);
    const u = this.f32('swiglu', 'up', up);
    this.sameShape('swiglu', 'gate', g, 'up', u);
    const out = this.scratchF32(g.shape);
    swigluForward(out.data, g.data, u.data, g.size);
    return out;
  }

  add(a: Tensor, b: Tensor): Tensor {
    const at = this.f32('add', 'a', a);
    const bt = this.f32('add', 'b', b);
    this.sameShape('add', 'a', at, 'b', bt);
    const out = this.scratchF32(at.shape);
    addForward(out.data, at.data, bt.data, at.size);
    return out;
  }

  gatherRows(x: Tensor, idx: Tensor): Tensor {
    const op = 'gatherRows';
    const xt = this.f32(op, 'x', x, 2);
    const it = this.i32(op, 'idx', idx, 1);
    const [T, C] = xt.shape;
    const [R] = it.shape;
    const bad = firstOutOfRange(it.data, R, T);
    if (bad >= 0) throw new Error(`gatherRows: index ${it.data[bad]} at ${bad} is outside x's ${T} rows`);
    const out = this.scratchF32([R, C]);
    gatherRowsForward(out.data, xt.data, it.data, R, C);
    return out;
  }

  logSoftmax(x: Tensor): Tensor {
    const xt = this.f32('logSoftmax', 'x', x, 2);
    const [S, V] = xt.shape;
    const out = this.scratchF32([S, V]);
    logSoftmaxForward(out.data, xt.data, S, V);
    return out;
  }

  async sample(logits: Tensor, params: readonly SamplingParams[], keepIds?: Tensor, pending?: PendingTokens): Promise<SampleResult> {
    const lt = this.f32('sample', 'logits', logits, 2);
    const [S, V] = lt.shape;
    sampleArgs(lt.shape, params);
    const keep = keepIds === undefined ? null : this.i32('sample', 'keepIds', keepIds, 1);
    if (keep !== null && keep.size < S) throw new Error(`sample: keepIds ${fmtShape(keep.shape)} holds fewer than the ${S} rows`);
    const pendingIds = pending === undefined ? null : this.i32('sample', 'pending.ids', pending.ids, 1);
    if (pending !== undefined) checkPendingRows(pending.rows, S, pendingIds!.size);
    const ids = new Int32Array(S);
    const logprobs = new Float32Array(S);
    const top: SampleResult['top'] = [];
    for (let s = 0; s < S; s++) {
      const p = params[s];
      // Penalties change what is drawn; logprobs always describe the raw logits (the contract).
      let src = lt.data;
      let o = s * V;
      if (hasPenalties(p)) {
        if (this.penalized.length < V) this.penalized = new Float32Array(V);
        // A pending id (the previous step's, still "on the device") counts as one more output.
        const at = pending === undefined ? -1 : pending.rows[s];
        const pendingId = at >= 0 ? pendingIds!.data[at] : -1;
        const counts = penaltyCounts(p);
        applyPenalties(this.penalized, lt.data, o, V, p, pendingId >= 0 && pendingId < V ? withOutputToken(counts, pendingId) : counts);
        src = this.penalized;
        o = 0;
      }
      const id = p.temperature === 0 ? argmax(src, o, V) : sampleFiltered(src, o, V, p, uniformAt(p.seed, p.step), this.sampling);
      ids[s] = id;
      const logZ = logSumExp(lt.data, s * V, V);
      logprobs[s] = lt.data[s * V + id] - logZ;
      const k = p.topLogprobs ?? 0;
      top.push(k > 0 ? topLogprobs(lt.data, s * V, V, k, logZ) : { ids: new Int32Array(0), logprobs: new Float32Array(0) });
    }
    keep?.data.set(ids);
    return { ids, logprobs, top };
  }

  placeRows(dst: Tensor, src: Tensor, slots: Tensor): void {
    const d = this.use('placeRows', 'dst', dst);
    const s = this.use('placeRows', 'src', src);
    const sl = this.i32('placeRows', 'slots', slots, 1);
    const { N, S, row } = placeRowsShape(d, s, sl.shape);
    for (let i = 0; i < S; i++) {
      const to = sl.data[i];
      if (to >= 0 && to < N) d.data.set(s.data.subarray(i * row, (i + 1) * row), to * row);
    }
  }

  // ---- in-place helpers ----

  viewAt(t: Tensor, offset: number, shape: readonly number[]): Tensor {
    const c = this.use('viewAt', 't', t);
    checkShape('viewAt', shape);
    const n = numel(shape);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + n > c.size) {
      throw new Error(`viewAt: ${fmtShape(shape)} (${n} elements) at offset ${offset} does not fit in ${fmtShape(c.shape)} (${c.size} elements)`);
    }
    const data = c.data.subarray(offset, offset + n);
    return new CpuTensor(this, Object.freeze([...shape]), c.dtype, data, c.lifetime, c.generation, c.root ?? c);
  }

  copy(dst: Tensor, src: Tensor): void {
    const d = this.use('copy', 'dst', dst);
    const s = this.use('copy', 'src', src);
    if (d.dtype !== s.dtype) throw new Error(`copy: dst is ${d.dtype} but src is ${s.dtype}`);
    if (d.size !== s.size) throw new Error(`copy: dst ${fmtShape(d.shape)} has ${d.size} elements, src ${fmtShape(s.shape)} has ${s.size}`);
    d.data.set(s.data);
  }

  zero(t: Tensor): void {
    this.use('zero', 't', t).data.fill(0);
  }

  axpy(y: Tensor, x: Tensor, alpha: number): void {
    const yt = this.f32('axpy', 'y', y);
    const xt = this.f32('axpy', 'x', x);
    if (yt.size !== xt.size) throw new Error(`axpy: y ${fmtShape(yt.shape)} has ${yt.size} elements, x ${fmtShape(xt.shape)} has ${xt.size}`);
    if (!Number.isFinite(alpha)) throw new Error(`axpy: alpha must be finite, got ${alpha}`);
    axpyForward(yt.data, xt.data, alpha, yt.size);
  }

  // ---- backward and training ops (checked and run by training-ops.ts) ----

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
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cuSeqlens: Tensor,
    scale: number,
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

  private make(shape: readonly number[], dtype: CpuDType, lifetime: Lifetime, zero: boolean): CpuTensor {
    const n = numel(shape);
    const frozen = Object.freeze([...shape]);
    if (lifetime === 'persistent') {
      const buf = this.shared ? new SharedArrayBuffer(n * 4) : new ArrayBuffer(n * 4);
      const data = dtype === 'i32' ? new Int32Array(buf) : new Float32Array(buf);
      this.persistentBytes += data.byteLength;
      // A model is being loaded: start the workers now, so that they are up (their start takes
      // a few hundred ms, mostly loading their modules) by the time the first prefill runs.
      if (this.shared && this.pool === null && this.persistentBytes >= EAGER_START_BYTES) this.threadPool();
      return new CpuTensor(this, frozen, dtype, data, 'persistent', -1, null);
    }
    if (lifetime !== 'scratch') throw new Error(`unknown tensor lifetime '${String(lifetime)}' (use 'persistent' or 'scratch')`);
    const buf = this.arena.take(n * 4);
    const data = dtype === 'i32' ? new Int32Array(buf, 0, n) : new Float32Array(buf, 0, n);
    if (zero) data.fill(0);
    return new CpuTensor(this, frozen, dtype, data, 'scratch', this.arena.generation, null);
  }

  private scratchF32(shape: readonly number[]): F32Tensor {
    return this.make(shape, 'f32', 'scratch', false) as F32Tensor;
  }

  /** Resolve a handle for `op`: ours, alive, and (for scratch) from the current step. */
  private use(op: string, name: string, t: Tensor): CpuTensor {
    if (!(t instanceof CpuTensor)) throw new Error(`${op}: ${name} is a tensor of backend '${t?.backend}', not of this cpu backend`);
    if (t.owner !== this) throw new Error(`${op}: ${name} ${fmtShape(t.shape)} belongs to another CpuBackend instance`);
    if ((t.root ?? t).freed) throw new Error(`${op}: ${name} ${fmtShape(t.shape)} was freed`);
    if (t.lifetime === 'scratch' && t.generation !== this.arena.generation) {
      throw new Error(`${op}: ${name} ${fmtShape(t.shape)} is a scratch tensor used after resetScratch()`);
    }
    return t;
  }

  private f32(op: string, name: string, t: Tensor, rank?: number): F32Tensor {
    const c = this.use(op, name, t);
    if (c.dtype !== 'f32') throw new Error(`${op}: ${name} must be a float tensor, got ${c.dtype} ${fmtShape(c.shape)}`);
    if (rank !== undefined && c.shape.length !== rank) throw new Error(`${op}: ${name} must have ${rank} dims, got ${fmtShape(c.shape)}`);
    return c as F32Tensor;
  }

  private i32(op: string, name: string, t: Tensor, rank: number): I32Tensor {
    const c = this.use(op, name, t);
    if (c.dtype !== 'i32') throw new Error(`${op}: ${name} must be an i32 tensor, got ${c.dtype} ${fmtShape(c.shape)}`);
    if (c.shape.length !== rank) throw new Error(`${op}: ${name} must have ${rank} dims, got ${fmtShape(c.shape)}`);
    return c as I32Tensor;
  }

  private sameShape(op: string, an: string, a: CpuTensor, bn: string, b: CpuTensor): void {
    sameShape(op, an, a.shape, bn, b.shape);
  }

  private useCache(op: string, cache: KvCache): CpuKvCache {
    if (!(cache instanceof CpuKvCache)) throw new Error(`${op}: the KV cache belongs to backend '${cache?.backend}', not to this cpu backend`);
    if (!this.caches.has(cache)) throw new Error(`${op}: the KV cache was freed or belongs to another CpuBackend instance`);
    return cache;
  }

  private checkLayer(op: string, layer: number, numLayers: number): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= numLayers) throw new Error(`${op}: layer ${layer} is outside the cache's ${numLayers} layers`);
  }
}

/** (query row, key) pairs of a batch: the causal keys each query row sees, summed. */
function attentionKeys(cu: Int32Array, lens: Int32Array, S: number): number {
  let n = 0;
  for (let s = 0; s < S; s++) {
    const qlen = cu[s + 1] - cu[s];
    n += qlen * (lens[s] - qlen) + (qlen * (qlen + 1)) / 2;
  }
  return n;
}
