/**
 * The CUDA backend's ops on the paged KV cache: rope, writeKv, ropeWriteKv, attention, and
 * ropeAttentionDecode, which does ropeWriteKv + attention in one kernel for decode batches (one
 * query row per sequence, bf16, head dim 64 or 128, up to 8 query heads per KV head: the tiled
 * decode kernel rotates q as it stages it and stores the new K/V itself, kernels/attention.cu).
 * Anything else runs as the two ops. Checks and messages are the CPU backend's.
 */
import type { AttnMeta, KvCache, Tensor } from '../backend.ts';
import { checkAttnMeta } from '../cpu/attention.ts';
import { firstOutOfRange } from '../cpu/gather.ts';
import { attentionShape, ropeShape, writeKvShape } from '../op-shapes.ts';
import { DTYPE_CODE } from './native.ts';
import type { NativeCuda } from './native.ts';
import { elemBytes } from './tensor.ts';
import type { CudaDType, CudaTensor } from './tensor.ts';
import type { FloatTensor } from './training-ops.ts';

/** A KV cache as these ops see it: its spec and each layer's K and V pool addresses. */
export interface CudaCacheView {
  readonly spec: { numLayers: number; numBlocks: number; blockSize: number; numKvHeads: number; headDim: number; dtype: CudaDType };
  readonly numSlots: number;
  kPool(layer: number): number;
  vPool(layer: number): number;
}

export interface AttentionOpContext {
  readonly native: NativeCuda;
  float(op: string, name: string, t: Tensor, rank?: number): FloatTensor;
  i32(op: string, name: string, t: Tensor, rank: number): CudaTensor;
  useCache(op: string, cache: KvCache): CudaCacheView;
  scratch(shape: readonly number[], dtype: CudaDType): CudaTensor;
}

/** The tiled decode kernel's reach (kernels/attention.cu groupedSupported; it checks again). */
const fusedHeadDim = (D: number): boolean => D === 64 || D === 128;
const MAX_GROUP = 8;

export class CudaAttentionOps {
  constructor(private readonly ctx: AttentionOpContext) {}

  rope(q: Tensor, k: Tensor, positions: Tensor, invFreq: Tensor): void {
    const r = this.ropeOperands('rope', q, k, positions, invFreq);
    this.ctx.native.rope(r.qt.ptr, r.kt.ptr, r.pt.ptr, r.ft.ptr, DTYPE_CODE[r.ft.dtype], r.T, r.H, r.Hkv, r.D, DTYPE_CODE[r.qt.dtype]);
  }

  writeKv(cache: KvCache, layer: number, k: Tensor, v: Tensor, slots: Tensor): void {
    const { c, kt, vt, st, T, rowBytes } = this.writeKvOperands('writeKv', cache, layer, k, v, slots);
    this.ctx.native.scatterRows(c.kPool(layer), kt.ptr, st.ptr, T, c.numSlots, rowBytes);
    this.ctx.native.scatterRows(c.vPool(layer), vt.ptr, st.ptr, T, c.numSlots, rowBytes);
  }

  ropeWriteKv(
    q: Tensor, k: Tensor, v: Tensor, positions: Tensor, invFreq: Tensor, cache: KvCache, layer: number, slots: Tensor,
  ): void {
    const op = 'ropeWriteKv';
    const r = this.ropeOperands(op, q, k, positions, invFreq);
    const { c, vt, st, T } = this.writeKvOperands(op, cache, layer, k, v, slots);
    this.ctx.native.ropeWriteKv(
      r.qt.ptr, r.kt.ptr, vt.ptr, r.pt.ptr, r.ft.ptr, DTYPE_CODE[r.ft.dtype], c.kPool(layer), c.vPool(layer), st.ptr,
      c.numSlots, T, r.H, r.Hkv, r.D, DTYPE_CODE[r.qt.dtype],
    );
  }

  attention(q: Tensor, cache: KvCache, layer: number, meta: AttnMeta, scale: number): Tensor {
    const a = this.attentionOperands('attention', q, cache, layer, meta, scale);
    if (a.T === 0) return a.out;
    const { c, qt, cu, lens, tables, T, S, H, D, maxBlocks, plan, workspace } = a;
    const { numKvHeads: Hkv, blockSize, numBlocks } = c.spec;
    const maxQ = Number.isSafeInteger(meta.maxSeqlenQ) ? meta.maxSeqlenQ : T;
    this.ctx.native.attention(
      a.out.ptr, qt.ptr, c.kPool(layer), c.vPool(layer), cu.ptr, lens.ptr, tables.ptr,
      T, S, H, Hkv, D, blockSize, maxBlocks, numBlocks, scale, DTYPE_CODE[qt.dtype], maxQ, plan.splits, workspace,
    );
    return a.out;
  }

  /**
   * ropeWriteKv then attention; one kernel for decode batches the tiled kernel takes, where the
   * output and the stored K/V are bit-identical to the two ops' (conformance checks it).
   */
  ropeAttentionDecode(
    q: Tensor, k: Tensor, v: Tensor, positions: Tensor, invFreq: Tensor, cache: KvCache, layer: number, slots: Tensor,
    meta: AttnMeta, scale: number,
  ): Tensor {
    if (this.fusable(q, k, meta)) {
      const op = 'ropeAttentionDecode';
      const r = this.ropeOperands(op, q, k, positions, invFreq);
      const { vt, st } = this.writeKvOperands(op, cache, layer, k, v, slots);
      const a = this.attentionOperands(op, q, cache, layer, meta, scale);
      if (a.T === 0) return a.out;
      const { c, cu, lens, tables, T, S, H, D, maxBlocks, plan, workspace } = a;
      const { numKvHeads: Hkv, blockSize, numBlocks } = c.spec;
      const taken = this.ctx.native.ropeAttentionDecode(
        a.out.ptr, r.qt.ptr, r.kt.ptr, vt.ptr, r.pt.ptr, r.ft.ptr, DTYPE_CODE[r.ft.dtype], c.kPool(layer), c.vPool(layer),
        st.ptr, c.numSlots, cu.ptr, lens.ptr, tables.ptr, T, S, H, Hkv, D, blockSize, maxBlocks, numBlocks, scale,
        DTYPE_CODE[r.qt.dtype], plan.splits, workspace,
      );
      if (taken) return a.out;
    }
    this.ropeWriteKv(q, k, v, positions, invFreq, cache, layer, slots);
    return this.attention(q, cache, layer, meta, scale);
  }

  /** What the fused kernel can take, judged from shapes alone (the composed ops check everything else). */
  private fusable(q: Tensor, k: Tensor, meta: AttnMeta): boolean {
    const [T, H, D] = q.shape;
    const Hkv = k.shape[1];
    return (
      // One row per sequence: as many sequences as rows, none longer than one (maxSeqlenQ is the
      // caller's statement; with it wrong the fused kernel's rows would race, not read out of bounds).
      meta.maxSeqlenQ === 1 && meta.cuSeqlensQ.shape[0] === T + 1 &&
      q.dtype === 'bf16' && q.shape.length === 3 && k.shape.length === 3 &&
      fusedHeadDim(D) && Hkv > 0 && H % Hkv === 0 && H / Hkv <= MAX_GROUP
    );
  }

  private ropeOperands(op: string, q: Tensor, k: Tensor, positions: Tensor, invFreq: Tensor) {
    const qt = this.ctx.float(op, 'q', q, 3);
    const kt = this.ctx.float(op, 'k', k, 3);
    const pt = this.ctx.i32(op, 'positions', positions, 1);
    const ft = this.ctx.float(op, 'invFreq', invFreq, 1);
    const shape = ropeShape(qt.shape, kt.shape, pt.shape, ft.shape);
    if (qt.dtype !== kt.dtype) throw new Error(`${op}: q is ${qt.dtype} but k is ${kt.dtype}; upload them in one float dtype`);
    return { qt, kt, pt, ft, ...shape };
  }

  private writeKvOperands(op: string, cache: KvCache, layer: number, k: Tensor, v: Tensor, slots: Tensor) {
    const c = this.ctx.useCache(op, cache);
    const kt = this.ctx.float(op, 'k', k, 3);
    const vt = this.ctx.float(op, 'v', v, 3);
    const st = this.ctx.i32(op, 'slots', slots, 1);
    checkLayer(op, layer, c.spec.numLayers);
    const { T, Hkv, D } = writeKvShape(kt.shape, vt.shape, st.shape, c.spec);
    if (kt.dtype !== c.spec.dtype || vt.dtype !== c.spec.dtype) {
      throw new Error(`${op}: k and v are ${kt.dtype} / ${vt.dtype} but the cache stores ${c.spec.dtype}`);
    }
    const bad = st.host === null ? -1 : firstOutOfRange(st.host, T, c.numSlots);
    if (bad >= 0) throw new Error(`${op}: slot ${st.host![bad]} of token ${bad} is outside the cache's ${c.numSlots} slots`);
    return { c, kt, vt, st, T, rowBytes: Hkv * D * elemBytes(c.spec.dtype) };
  }

  /** attention()'s checks, its output tensor and its split-K plan (with the workspace it needs). */
  private attentionOperands(op: string, q: Tensor, cache: KvCache, layer: number, meta: AttnMeta, scale: number) {
    const c = this.ctx.useCache(op, cache);
    const qt = this.ctx.float(op, 'q', q, 3);
    const cu = this.ctx.i32(op, 'meta.cuSeqlensQ', meta.cuSeqlensQ, 1);
    const lens = this.ctx.i32(op, 'meta.contextLens', meta.contextLens, 1);
    const tables = this.ctx.i32(op, 'meta.blockTables', meta.blockTables, 2);
    const { numLayers, numKvHeads: Hkv, blockSize, numBlocks } = c.spec;
    checkLayer(op, layer, numLayers);
    const { T, H, D, S, maxBlocks } = attentionShape(qt.shape, c.spec, cu.shape, lens.shape, tables.shape, scale);
    if (qt.dtype !== c.spec.dtype) throw new Error(`${op}: q is ${qt.dtype} but the cache stores ${c.spec.dtype}`);
    if (!this.ctx.native.attentionHeadDimSupported(D)) {
      throw new Error(`${op}: head dim ${D} is not supported by the CUDA attention kernel (32, 64, 128 or 256)`);
    }
    // Metadata made on the host (the usual case) is checked here; the kernel skips blocks
    // outside the cache either way, so device-made tables cannot read out of bounds.
    if (cu.host !== null && lens.host !== null && tables.host !== null) {
      checkAttnMeta(cu.host, lens.host, tables.host, { S, T, blockSize, maxBlocks, numBlocks }, meta);
    }
    const out = this.ctx.scratch([T, H, D], qt.dtype);
    // Long decodes of small batches split each context over several blocks (split-K); the
    // partial results go through a scratch workspace. The stated maxima only steer the kernels'
    // choice: rows are routed by their real lengths on the device, so any values stay correct.
    const maxCtx = Number.isSafeInteger(meta.maxContextLen) ? Math.min(meta.maxContextLen, maxBlocks * blockSize) : 0;
    const plan = T === 0 ? { splits: 1, workspaceBytes: 0 } : this.ctx.native.attentionPlan(T, H, Hkv, D, Math.max(0, maxCtx));
    const workspace = plan.workspaceBytes > 0 ? this.ctx.scratch([plan.workspaceBytes / 4], 'f32').ptr : 0;
    return { c, qt, cu, lens, tables, T, S, H, D, maxBlocks, plan, workspace, out };
  }
}

function checkLayer(op: string, layer: number, numLayers: number): void {
  if (!Number.isInteger(layer) || layer < 0 || layer >= numLayers) throw new Error(`${op}: layer ${layer} is outside the cache's ${numLayers} layers`);
}
