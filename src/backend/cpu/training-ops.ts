/**
 * The CPU backend's backward and training ops (Backend's "backward and training ops"): each
 * checks its arguments (dtype and rank here, shapes and scalars through op-shapes.ts, index
 * contents here) with messages naming the op and the argument, then calls the arithmetic of
 * its op family (matmul-backward.ts, norm.ts, rope.ts, elementwise.ts, attention-packed.ts,
 * logprobs.ts, gather.ts, adamw.ts). CpuBackend delegates to it; memory and tensor handles stay
 * with CpuBackend, reached through CpuOpContext.
 */
import type { AdamWStep, Tensor } from '../backend.ts';
import {
  adamwShape,
  attentionPackedBackwardShape,
  attentionPackedShape,
  linearBackwardInputShape,
  linearBackwardWeightShape,
  rmsnormBackwardShape,
  ropeShape,
  scatterRowsShape,
  swigluBackwardShape,
  tokenLogprobsBackwardShape,
  tokenLogprobsShape,
} from '../op-shapes.ts';
import { adamwUpdate, sumSquares } from './adamw.ts';
import { PackedAttentionWorkspace, attentionPackedBackward, attentionPackedForward, checkCuSeqlens } from './attention-packed.ts';
import { swigluBackward } from './elementwise.ts';
import { firstOutOfRange, scatterRowsForward } from './gather.ts';
import { tokenLogprobsBackward, tokenLogprobsForward } from './logprobs.ts';
import { linearBackwardInput, linearBackwardPlan, linearBackwardWeight } from './matmul-backward.ts';
import type { LinearBackwardKind } from './matmul-backward.ts';
import { rmsnormBackward } from './norm.ts';
import type { CpuThreadPool } from './pool.ts';
import { ropeBackward } from './rope.ts';
import type { F32Tensor, I32Tensor } from './tensor.ts';

/** What the ops need from CpuBackend: checked handles, scratch outputs, the thread pool. */
export interface CpuOpContext {
  /** The f32 tensor behind a handle (ours, alive, of `rank` dims when given), else a clear Error. */
  f32(op: string, name: string, t: Tensor, rank?: number): F32Tensor;
  i32(op: string, name: string, t: Tensor, rank: number): I32Tensor;
  /** A scratch f32 tensor (contents undefined). */
  scratchF32(shape: readonly number[]): F32Tensor;
  /** The pool to share a product of `macs` multiply-adds with, and whether it counts as small; null: run it here. */
  linearPool(macs: number): { pool: CpuThreadPool; small: boolean } | null;
}

export class CpuTrainingOps {
  private readonly attn = new PackedAttentionWorkspace();
  private cos = new Float64Array(0);
  private sin = new Float64Array(0);

  constructor(private readonly ctx: CpuOpContext) {}

  /** Bytes of the op workspaces (kept between calls). */
  get workspaceBytes(): number {
    return this.attn.bytes + this.cos.byteLength + this.sin.byteLength;
  }

  linearBackwardInput(dy: Tensor, w: Tensor): Tensor {
    const op = 'linearBackwardInput';
    const dyt = this.ctx.f32(op, 'dy', dy, 2);
    const wt = this.ctx.f32(op, 'w', w, 2);
    const { T, K, N } = linearBackwardInputShape(dyt.shape, wt.shape);
    const dx = this.ctx.scratchF32([T, K]);
    if (!this.shareProduct('input', dx.data, dyt.data, wt.data, T, K, N, 1)) linearBackwardInput(dx.data, dyt.data, wt.data, T, K, N);
    return dx;
  }

  linearBackwardWeight(dy: Tensor, x: Tensor, dw: Tensor, alpha: number): void {
    const op = 'linearBackwardWeight';
    const dyt = this.ctx.f32(op, 'dy', dy, 2);
    const xt = this.ctx.f32(op, 'x', x, 2);
    const dwt = this.ctx.f32(op, 'dw', dw, 2);
    const { T, K, N } = linearBackwardWeightShape(dyt.shape, xt.shape, dwt.shape, alpha);
    if (!this.shareProduct('weight', dwt.data, dyt.data, xt.data, T, K, N, alpha)) linearBackwardWeight(dwt.data, dyt.data, xt.data, T, K, N, alpha);
  }

  rmsnormBackward(dy: Tensor, x: Tensor, w: Tensor, eps: number): Tensor {
    const op = 'rmsnormBackward';
    const dyt = this.ctx.f32(op, 'dy', dy);
    const xt = this.ctx.f32(op, 'x', x);
    const wt = this.ctx.f32(op, 'w', w, 1);
    const { R, C } = rmsnormBackwardShape(dyt.shape, xt.shape, wt.shape, eps);
    const dx = this.ctx.scratchF32(xt.shape);
    rmsnormBackward(dx.data, dyt.data, xt.data, wt.data, eps, R, C);
    return dx;
  }

  ropeBackward(dq: Tensor, dk: Tensor, positions: Tensor, invFreq: Tensor): void {
    const op = 'ropeBackward';
    const qt = this.ctx.f32(op, 'dq', dq, 3);
    const kt = this.ctx.f32(op, 'dk', dk, 3);
    const pt = this.ctx.i32(op, 'positions', positions, 1);
    const ft = this.ctx.f32(op, 'invFreq', invFreq, 1);
    const { T, H, Hkv, D } = ropeShape(qt.shape, kt.shape, pt.shape, ft.shape, op);
    if (this.cos.length < D / 2) {
      this.cos = new Float64Array(D / 2);
      this.sin = new Float64Array(D / 2);
    }
    ropeBackward(qt.data, kt.data, pt.data, ft.data, this.cos, this.sin, T, H, Hkv, D);
  }

  swigluBackward(dy: Tensor, gate: Tensor, up: Tensor): { dGate: Tensor; dUp: Tensor } {
    const op = 'swigluBackward';
    const dyt = this.ctx.f32(op, 'dy', dy);
    const g = this.ctx.f32(op, 'gate', gate);
    const u = this.ctx.f32(op, 'up', up);
    swigluBackwardShape(dyt.shape, g.shape, u.shape);
    const dGate = this.ctx.scratchF32(g.shape);
    const dUp = this.ctx.scratchF32(g.shape);
    swigluBackward(dGate.data, dUp.data, dyt.data, g.data, u.data, g.size);
    return { dGate, dUp };
  }

  attentionPacked(q: Tensor, k: Tensor, v: Tensor, cuSeqlens: Tensor, scale: number): { out: Tensor; lse: Tensor } {
    const op = 'attentionPacked';
    const qt = this.ctx.f32(op, 'q', q, 3);
    const kt = this.ctx.f32(op, 'k', k, 3);
    const vt = this.ctx.f32(op, 'v', v, 3);
    const cu = this.ctx.i32(op, 'cuSeqlens', cuSeqlens, 1);
    const dims = attentionPackedShape(qt.shape, kt.shape, vt.shape, cu.shape, scale);
    this.checkSequences(op, cu.data, dims.S, dims.T, dims.D);
    const out = this.ctx.scratchF32([dims.T, dims.H, dims.D]);
    const lse = this.ctx.scratchF32([dims.T, dims.H]);
    attentionPackedForward(out.data, lse.data, qt.data, kt.data, vt.data, cu.data, dims, scale, this.attn);
    return { out, lse };
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
    const op = 'attentionPackedBackward';
    const dot = this.ctx.f32(op, 'dout', dout, 3);
    const qt = this.ctx.f32(op, 'q', q, 3);
    const kt = this.ctx.f32(op, 'k', k, 3);
    const vt = this.ctx.f32(op, 'v', v, 3);
    const ot = this.ctx.f32(op, 'out', out, 3);
    const lt = this.ctx.f32(op, 'lse', lse, 2);
    const cu = this.ctx.i32(op, 'cuSeqlens', cuSeqlens, 1);
    const dims = attentionPackedBackwardShape(dot.shape, qt.shape, kt.shape, vt.shape, ot.shape, lt.shape, cu.shape, scale);
    this.checkSequences(op, cu.data, dims.S, dims.T, dims.D);
    const dq = this.ctx.scratchF32(qt.shape);
    const dk = this.ctx.scratchF32(kt.shape);
    const dv = this.ctx.scratchF32(vt.shape);
    attentionPackedBackward(dq.data, dk.data, dv.data, dot.data, qt.data, kt.data, vt.data, ot.data, lt.data, cu.data, dims, scale, this.attn);
    return { dq, dk, dv };
  }

  tokenLogprobs(logits: Tensor, targets: Tensor, temperature: number): Tensor {
    const op = 'tokenLogprobs';
    const lt = this.ctx.f32(op, 'logits', logits, 2);
    const tt = this.ctx.i32(op, 'targets', targets, 1);
    const { R, V } = tokenLogprobsShape(lt.shape, tt.shape, temperature);
    this.checkTargets(op, tt.data, R, V);
    const out = this.ctx.scratchF32([R]);
    tokenLogprobsForward(out.data, lt.data, tt.data, temperature, R, V);
    return out;
  }

  tokenLogprobsBackward(logits: Tensor, targets: Tensor, temperature: number, dlogp: Tensor): Tensor {
    const op = 'tokenLogprobsBackward';
    const lt = this.ctx.f32(op, 'logits', logits, 2);
    const tt = this.ctx.i32(op, 'targets', targets, 1);
    const gt = this.ctx.f32(op, 'dlogp', dlogp, 1);
    const { R, V } = tokenLogprobsBackwardShape(lt.shape, tt.shape, temperature, gt.shape);
    this.checkTargets(op, tt.data, R, V);
    const out = this.ctx.scratchF32([R, V]);
    tokenLogprobsBackward(out.data, lt.data, tt.data, temperature, gt.data, R, V);
    return out;
  }

  scatterRows(src: Tensor, idx: Tensor, T: number): Tensor {
    const op = 'scatterRows';
    const st = this.ctx.f32(op, 'src', src, 2);
    const it = this.ctx.i32(op, 'idx', idx, 1);
    const { R, C } = scatterRowsShape(st.shape, it.shape, T);
    const bad = firstOutOfRange(it.data, R, T);
    if (bad >= 0) throw new Error(`scatterRows: index ${it.data[bad]} at ${bad} is outside the output's ${T} rows`);
    const out = this.ctx.scratchF32([T, C]);
    scatterRowsForward(out.data, st.data, it.data, R, C);
    return out;
  }

  sumSquares(x: Tensor): Tensor {
    const xt = this.ctx.f32('sumSquares', 'x', x);
    const out = this.ctx.scratchF32([1]);
    out.data[0] = sumSquares(xt.data, xt.size);
    return out;
  }

  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWStep): void {
    const op = 'adamw';
    const pt = this.ctx.f32(op, 'param', param);
    const gt = this.ctx.f32(op, 'grad', grad);
    const mt = this.ctx.f32(op, 'm', m);
    const vt = this.ctx.f32(op, 'v', v);
    const n = adamwShape(pt.shape, gt.shape, mt.shape, vt.shape, h);
    adamwUpdate(pt.data, gt.data, mt.data, vt.data, n, h);
  }

  // ---- helpers ----

  /** Run a linear backward product on the pool when it is big enough; false: run it here. */
  private shareProduct(kind: LinearBackwardKind, out: Float32Array, dy: Float32Array, b: Float32Array, T: number, K: number, N: number, alpha: number): boolean {
    const share = this.ctx.linearPool(T * K * N);
    if (share === null || linearBackwardPlan(kind, T, K, N).tasks < 2) return false;
    return share.pool.linearBackward(kind, out, dy, b, T, K, N, alpha, share.small);
  }

  private checkSequences(op: string, cu: Int32Array, S: number, T: number, D: number): void {
    const { error, maxLen } = checkCuSeqlens(cu, S, T);
    if (error !== null) throw new Error(`${op}: ${error}`);
    this.attn.ensure(maxLen, D);
  }

  private checkTargets(op: string, targets: Int32Array, R: number, V: number): void {
    const bad = firstOutOfRange(targets, R, V);
    if (bad >= 0) throw new Error(`${op}: target ${targets[bad]} of row ${bad} is outside the vocabulary of ${V}`);
  }
}
