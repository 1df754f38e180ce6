/**
 * The CUDA backend's in-place helpers and backward / training ops (Backend's "in-place helpers"
 * and "backward and training ops"): each checks its arguments with the CPU backend's rules and
 * messages (shapes and scalars through op-shapes.ts, index contents from the host copy of i32
 * tensors where there is one), then queues its kernels (kernels/binding-train.cpp). CudaBackend
 * delegates to it; tensors, the arena and the other checks stay with CudaBackend, reached
 * through CudaOpContext.
 *
 * Mixed float dtypes (bf16 activations next to f32 LoRA matrices, gradients and Adam state):
 * - every kernel computes in f32;
 * - a gradient an op creates has the dtype of the incoming gradient (dy, dout, the logits for
 *   tokenLogprobsBackward); an in-place destination (axpy's y, dw, dq / dk of ropeBackward,
 *   copy's dst) keeps its own dtype and is rounded once per update;
 * - the two operands of a product share a dtype: when one is f32 and the other bf16, the f32
 *   one is rounded to bf16 into scratch first (torch.autocast's rule; tensor-core speed), and
 *   the product still accumulates in f32 into an output of the dtype named above.
 * Operands that play one role (q, k, v, out of attention; gate and up; dq and dk) share a dtype.
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
import type { PackedAttentionShape } from '../op-shapes.ts';
import { checkCuSeqlens } from '../cpu/attention-packed.ts';
import { firstOutOfRange } from '../cpu/gather.ts';
import { checkShape, fmtShape, numel } from '../cpu/tensor.ts';
import { DTYPE_CODE } from './native.ts';
import type { NativeCuda } from './native.ts';
import { CudaTensor, elemBytes } from './tensor.ts';
import type { CudaDType } from './tensor.ts';

export type FloatTensor = CudaTensor & { readonly dtype: 'f32' | 'bf16' };

/** What the ops need from CudaBackend. */
export interface CudaOpContext {
  readonly native: NativeCuda;
  /** The backend instance: tensors made here (views) belong to it. */
  readonly owner: object;
  /** The tensor behind a handle: ours, alive, of the current step when scratch; else a clear Error. */
  use(op: string, name: string, t: Tensor): CudaTensor;
  float(op: string, name: string, t: Tensor, rank?: number): FloatTensor;
  i32(op: string, name: string, t: Tensor, rank: number): CudaTensor;
  /** A scratch tensor (contents undefined). */
  scratch(shape: readonly number[], dtype: CudaDType): CudaTensor;
}

export class CudaTrainingOps {
  private sumPartials = 0;

  constructor(private readonly ctx: CudaOpContext) {}

  private get native(): NativeCuda {
    return this.ctx.native;
  }

  // ---- in-place helpers ----

  viewAt(t: Tensor, offset: number, shape: readonly number[]): Tensor {
    const c = this.ctx.use('viewAt', 't', t);
    checkShape('viewAt', shape);
    const n = numel(shape);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + n > c.size) {
      throw new Error(`viewAt: ${fmtShape(shape)} (${n} elements) at offset ${offset} does not fit in ${fmtShape(c.shape)} (${c.size} elements)`);
    }
    const host = c.host === null ? null : c.host.subarray(offset, offset + n);
    const ptr = c.ptr + offset * elemBytes(c.dtype);
    return new CudaTensor(this.ctx.owner, Object.freeze([...shape]), c.dtype, ptr, n, c.lifetime, c.generation, c.root ?? c, host, 0);
  }

  /** dst <- src; float dtypes may differ (the values are converted, rounding once). */
  copy(dst: Tensor, src: Tensor): void {
    const d = this.ctx.use('copy', 'dst', dst);
    const s = this.ctx.use('copy', 'src', src);
    if ((d.dtype === 'i32') !== (s.dtype === 'i32')) throw new Error(`copy: dst is ${d.dtype} but src is ${s.dtype}`);
    if (d.size !== s.size) throw new Error(`copy: dst ${fmtShape(d.shape)} has ${d.size} elements, src ${fmtShape(s.shape)} has ${s.size}`);
    if (d.host !== null) {
      // The host copy of an i32 tensor backs range checks: it must stay true.
      if (s.host === null) throw new Error(`copy: dst ${fmtShape(d.shape)} keeps a host copy of its ids but src's are only on the GPU`);
      d.host.set(s.host);
    }
    if (d.dtype === s.dtype) this.native.copy(d.ptr, s.ptr, d.bytes);
    else this.native.cast(d.ptr, DTYPE_CODE[d.dtype], s.ptr, DTYPE_CODE[s.dtype], d.size);
  }

  zero(t: Tensor): void {
    const c = this.ctx.use('zero', 't', t);
    c.host?.fill(0);
    this.native.zero(c.ptr, c.bytes);
  }

  axpy(y: Tensor, x: Tensor, alpha: number): void {
    const yt = this.ctx.float('axpy', 'y', y);
    const xt = this.ctx.float('axpy', 'x', x);
    if (yt.size !== xt.size) throw new Error(`axpy: y ${fmtShape(yt.shape)} has ${yt.size} elements, x ${fmtShape(xt.shape)} has ${xt.size}`);
    if (!Number.isFinite(alpha)) throw new Error(`axpy: alpha must be finite, got ${alpha}`);
    this.native.axpy(yt.ptr, DTYPE_CODE[yt.dtype], xt.ptr, DTYPE_CODE[xt.dtype], alpha, yt.size);
  }

  // ---- backward and training ops ----

  linearBackwardInput(dy: Tensor, w: Tensor): Tensor {
    const op = 'linearBackwardInput';
    const dyt = this.ctx.float(op, 'dy', dy, 2);
    const wt = this.ctx.float(op, 'w', w, 2);
    const { T, K, N } = linearBackwardInputShape(dyt.shape, wt.shape);
    const [a, b] = this.productOperands(dyt, wt);
    const dx = this.ctx.scratch([T, K], dyt.dtype);
    this.native.linearBackwardInput(dx.ptr, DTYPE_CODE[dx.dtype], a.ptr, b.ptr, DTYPE_CODE[a.dtype], T, K, N);
    return dx;
  }

  linearBackwardWeight(dy: Tensor, x: Tensor, dw: Tensor, alpha: number): void {
    const op = 'linearBackwardWeight';
    const dyt = this.ctx.float(op, 'dy', dy, 2);
    const xt = this.ctx.float(op, 'x', x, 2);
    const dwt = this.ctx.float(op, 'dw', dw, 2);
    const { T, K, N } = linearBackwardWeightShape(dyt.shape, xt.shape, dwt.shape, alpha);
    const [a, b] = this.productOperands(dyt, xt);
    this.native.linearBackwardWeight(dwt.ptr, DTYPE_CODE[dwt.dtype], a.ptr, b.ptr, DTYPE_CODE[a.dtype], T, K, N, alpha);
  }

  rmsnormBackward(dy: Tensor, x: Tensor, w: Tensor, eps: number): Tensor {
    const op = 'rmsnormBackward';
    const dyt = this.ctx.float(op, 'dy', dy);
    const xt = this.ctx.float(op, 'x', x);
    const wt = this.ctx.float(op, 'w', w, 1);
    const { R, C } = rmsnormBackwardShape(dyt.shape, xt.shape, wt.shape, eps);
    const dx = this.ctx.scratch(xt.shape, dyt.dtype);
    const code = DTYPE_CODE;
    this.native.rmsnormBackward(dx.ptr, dyt.ptr, code[dyt.dtype], xt.ptr, code[xt.dtype], wt.ptr, code[wt.dtype], eps, R, C);
    return dx;
  }

  ropeBackward(dq: Tensor, dk: Tensor, positions: Tensor, invFreq: Tensor): void {
    const op = 'ropeBackward';
    const qt = this.ctx.float(op, 'dq', dq, 3);
    const kt = this.ctx.float(op, 'dk', dk, 3);
    const pt = this.ctx.i32(op, 'positions', positions, 1);
    const ft = this.ctx.float(op, 'invFreq', invFreq, 1);
    const { T, H, Hkv, D } = ropeShape(qt.shape, kt.shape, pt.shape, ft.shape, op);
    sameDtype(op, 'dq', qt, 'dk', kt);
    this.native.ropeBackward(qt.ptr, kt.ptr, pt.ptr, ft.ptr, DTYPE_CODE[ft.dtype], T, H, Hkv, D, DTYPE_CODE[qt.dtype]);
  }

  swigluBackward(dy: Tensor, gate: Tensor, up: Tensor): { dGate: Tensor; dUp: Tensor } {
    const op = 'swigluBackward';
    const dyt = this.ctx.float(op, 'dy', dy);
    const g = this.ctx.float(op, 'gate', gate);
    const u = this.ctx.float(op, 'up', up);
    swigluBackwardShape(dyt.shape, g.shape, u.shape);
    sameDtype(op, 'gate', g, 'up', u);
    const dGate = this.ctx.scratch(g.shape, dyt.dtype);
    const dUp = this.ctx.scratch(g.shape, dyt.dtype);
    this.native.swigluBackward(dGate.ptr, dUp.ptr, dyt.ptr, DTYPE_CODE[dyt.dtype], g.ptr, u.ptr, DTYPE_CODE[g.dtype], g.size);
    return { dGate, dUp };
  }

  attentionPacked(q: Tensor, k: Tensor, v: Tensor, cuSeqlens: Tensor, scale: number): { out: Tensor; lse: Tensor } {
    const op = 'attentionPacked';
    const qt = this.ctx.float(op, 'q', q, 3);
    const kt = this.ctx.float(op, 'k', k, 3);
    const vt = this.ctx.float(op, 'v', v, 3);
    const cu = this.ctx.i32(op, 'cuSeqlens', cuSeqlens, 1);
    const dims = attentionPackedShape(qt.shape, kt.shape, vt.shape, cu.shape, scale);
    sameDtype(op, 'q', qt, 'k', kt);
    sameDtype(op, 'q', qt, 'v', vt);
    this.checkPacked(op, cu, dims);
    const { T, S, H, Hkv, D } = dims;
    const out = this.ctx.scratch([T, H, D], qt.dtype);
    const lse = this.ctx.scratch([T, H], 'f32');
    this.native.attentionPacked(out.ptr, lse.ptr, qt.ptr, kt.ptr, vt.ptr, cu.ptr, T, S, H, Hkv, D, scale, DTYPE_CODE[qt.dtype]);
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
    const dot = this.ctx.float(op, 'dout', dout, 3);
    const qt = this.ctx.float(op, 'q', q, 3);
    const kt = this.ctx.float(op, 'k', k, 3);
    const vt = this.ctx.float(op, 'v', v, 3);
    const ot = this.ctx.float(op, 'out', out, 3);
    const lt = this.ctx.float(op, 'lse', lse, 2);
    const cu = this.ctx.i32(op, 'cuSeqlens', cuSeqlens, 1);
    const dims = attentionPackedBackwardShape(dot.shape, qt.shape, kt.shape, vt.shape, ot.shape, lt.shape, cu.shape, scale);
    for (const [name, t] of [['k', kt], ['v', vt], ['out', ot]] as const) sameDtype(op, 'q', qt, name, t);
    if (lt.dtype !== 'f32') throw new Error(`${op}: lse must be f32 (as attentionPacked returns it), got ${lt.dtype}`);
    this.checkPacked(op, cu, dims);
    const { T, S, H, Hkv, D } = dims;
    const dq = this.ctx.scratch(qt.shape, dot.dtype);
    const dk = this.ctx.scratch(kt.shape, dot.dtype);
    const dv = this.ctx.scratch(vt.shape, dot.dtype);
    const delta = this.ctx.scratch([T, H], 'f32');
    this.native.attentionPackedBackward(
      dq.ptr, dk.ptr, dv.ptr, delta.ptr, dot.ptr, DTYPE_CODE[dot.dtype], qt.ptr, kt.ptr, vt.ptr, ot.ptr, lt.ptr, cu.ptr,
      T, S, H, Hkv, D, scale, DTYPE_CODE[qt.dtype],
    );
    return { dq, dk, dv };
  }

  tokenLogprobs(logits: Tensor, targets: Tensor, temperature: number): Tensor {
    const op = 'tokenLogprobs';
    const lt = this.ctx.float(op, 'logits', logits, 2);
    const tt = this.ctx.i32(op, 'targets', targets, 1);
    const { R, V } = tokenLogprobsShape(lt.shape, tt.shape, temperature);
    this.checkTargets(op, tt, R, V);
    const out = this.ctx.scratch([R], 'f32');
    this.native.tokenLogprobs(out.ptr, lt.ptr, tt.ptr, temperature, R, V, DTYPE_CODE[lt.dtype]);
    return out;
  }

  tokenLogprobsBackward(logits: Tensor, targets: Tensor, temperature: number, dlogp: Tensor): Tensor {
    const op = 'tokenLogprobsBackward';
    const lt = this.ctx.float(op, 'logits', logits, 2);
    const tt = this.ctx.i32(op, 'targets', targets, 1);
    const gt = this.ctx.float(op, 'dlogp', dlogp, 1);
    const { R, V } = tokenLogprobsBackwardShape(lt.shape, tt.shape, temperature, gt.shape);
    this.checkTargets(op, tt, R, V);
    const out = this.ctx.scratch([R, V], lt.dtype);
    this.native.tokenLogprobsBackward(out.ptr, lt.ptr, tt.ptr, temperature, gt.ptr, DTYPE_CODE[gt.dtype], R, V, DTYPE_CODE[lt.dtype]);
    return out;
  }

  scatterRows(src: Tensor, idx: Tensor, T: number): Tensor {
    const op = 'scatterRows';
    const st = this.ctx.float(op, 'src', src, 2);
    const it = this.ctx.i32(op, 'idx', idx, 1);
    const { R, C } = scatterRowsShape(st.shape, it.shape, T);
    const bad = it.host === null ? -1 : firstOutOfRange(it.host, R, T);
    if (bad >= 0) throw new Error(`scatterRows: index ${it.host![bad]} at ${bad} is outside the output's ${T} rows`);
    const out = this.ctx.scratch([T, C], st.dtype);
    const work = this.ctx.scratch([2 * T], 'i32');
    this.native.scatterAddRows(out.ptr, st.ptr, it.ptr, R, T, C, DTYPE_CODE[st.dtype], work.ptr);
    return out;
  }

  sumSquares(x: Tensor): Tensor {
    const xt = this.ctx.float('sumSquares', 'x', x);
    if (this.sumPartials === 0) this.sumPartials = this.native.sumSquaresPartials();
    const out = this.ctx.scratch([1], 'f32');
    const partials = this.ctx.scratch([2 * this.sumPartials], 'f32'); // doubles
    this.native.sumSquares(out.ptr, xt.ptr, xt.size, DTYPE_CODE[xt.dtype], partials.ptr);
    return out;
  }

  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWStep): void {
    const op = 'adamw';
    const ts = { param, grad, m, v };
    const [pt, gt, mt, vt] = (['param', 'grad', 'm', 'v'] as const).map((name) => this.ctx.float(op, name, ts[name]));
    const n = adamwShape(pt.shape, gt.shape, mt.shape, vt.shape, h);
    for (const [name, t] of [['param', pt], ['grad', gt], ['m', mt], ['v', vt]] as const) {
      if (t.dtype !== 'f32') throw new Error(`adamw: ${name} must be f32 (master weights, gradients and moments are), got ${t.dtype}`);
    }
    // The step's constants exactly as src/train/optimizer.ts forms them (in double, here).
    const { lr, beta1, beta2, eps, weightDecay, step, gradScale } = h;
    const bc1 = 1 - beta1 ** step;
    const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
    const decay = 1 - lr * weightDecay;
    const stepSize = lr / bc1;
    this.native.adamw(pt.ptr, gt.ptr, mt.ptr, vt.ptr, n, beta1, beta2, eps, decay, stepSize, bc2Sqrt, gradScale);
  }

  // ---- helpers ----

  /**
   * The two operands of a product in one dtype: a mixed pair has its f32 operand rounded to
   * bf16 into scratch (see the top of this file).
   */
  private productOperands(a: FloatTensor, b: FloatTensor): [FloatTensor, FloatTensor] {
    if (a.dtype === b.dtype) return [a, b];
    return a.dtype === 'f32' ? [this.toBf16(a), b] : [a, this.toBf16(b)];
  }

  private toBf16(t: FloatTensor): FloatTensor {
    const out = this.ctx.scratch(t.shape, 'bf16') as FloatTensor;
    this.native.cast(out.ptr, DTYPE_CODE.bf16, t.ptr, DTYPE_CODE.f32, t.size);
    return out;
  }

  /** Sequences that run from 0 to T without decreasing (checked when their host copy is known), and a supported head dim. */
  private checkPacked(op: string, cu: CudaTensor, dims: PackedAttentionShape): void {
    if (cu.host !== null) {
      const { error } = checkCuSeqlens(cu.host, dims.S, dims.T);
      if (error !== null) throw new Error(`${op}: ${error}`);
    }
    if (!this.native.attentionPackedHeadDimSupported(dims.D)) {
      throw new Error(`${op}: head dim ${dims.D} is not supported by the CUDA kernel (1 to 256)`);
    }
  }

  private checkTargets(op: string, targets: CudaTensor, R: number, V: number): void {
    const bad = targets.host === null ? -1 : firstOutOfRange(targets.host, R, V);
    if (bad >= 0) throw new Error(`${op}: target ${targets.host![bad]} of row ${bad} is outside the vocabulary of ${V}`);
  }
}

function sameDtype(op: string, an: string, a: CudaTensor, bn: string, b: CudaTensor): void {
  if (a.dtype !== b.dtype) throw new Error(`${op}: ${an} is ${a.dtype} but ${bn} is ${b.dtype}; they must share a float dtype`);
}
