/**
 * The CUDA backend's fused decode products (Backend.linearMany / linearSwiglu / normLinearMany /
 * normLinearSwiglu): batches of at most GEMV_MAX_ROWS rows of bf16 go to kernels/gemv.cu in one
 * launch (q, k and v together; gate, up and the SwiGLU together; the rmsnorm in front computed by
 * every block into shared memory); everything else, or what the kernels decline (f32 tensors, K
 * not a multiple of 8, unaligned views, rows too wide for shared memory), runs as the plain ops
 * they stand for (composed-ops.ts).
 */
import type { LinearPart, NormSpec, Tensor } from '../backend.ts';
import { composedLinearMany, composedLinearSwiglu, composedNormLinearMany, composedNormLinearSwiglu } from '../composed-ops.ts';
import { linearManyShape, linearSwigluShape } from '../op-shapes.ts';
import { DTYPE_CODE } from './native.ts';
import type { NativeCuda } from './native.ts';
import type { CudaTensor, CudaDType } from './tensor.ts';
import type { FloatTensor } from './training-ops.ts';

/** kernels/ops.h kGemvMaxRows: the largest batch the decode kernels take (the kernel checks it again). */
const GEMV_MAX_ROWS = 4;
/** kernels/gemv.cu kGemvMaxParts. */
const GEMV_MAX_PARTS = 3;

export interface FusedOpContext {
  readonly native: NativeCuda;
  /** The backend itself, for the plain ops. */
  readonly plain: Parameters<typeof composedLinearMany>[0];
  linearOperands(
    op: string, x: Tensor, w: Tensor, bias?: Tensor,
  ): { xt: FloatTensor; wt: FloatTensor; bt: FloatTensor | null; T: number; K: number; N: number };
  normOperands(x: Tensor, norm: NormSpec): { xt: FloatTensor; wt: FloatTensor; rt: FloatTensor | null };
  scratch(shape: readonly number[], dtype: CudaDType): CudaTensor;
  /** Products over adjacent weights as one (see QKV_ONE_GEMM). */
  readonly oneGemm: boolean;
}

/**
 * Products of more than GEMV_MAX_ROWS rows whose weights lie one after another in memory (q, k and
 * v as weights.ts places them) run as one cuBLASLt product and a column split, instead of one
 * product each (at batch 64 on an H100, 14.9 us for three vs 5.5 for one,
 * bench/results/decode-ops-2026-12-07-run3-h100.json; whole decode steps at batch 64 / 256 0.29 /
 * 0.30 ms faster, decode-replay-qkv-2026-12-07-h100.json). On unless TANDEM_QKV_ONE_GEMM=0 (or
 * CudaBackendOptions.qkvOneGemm false).
 */
export const QKV_ONE_GEMM = process.env.TANDEM_QKV_ONE_GEMM !== '0';

/** The native calls' trailing norm arguments: (x, residual, w, sum, eps), zeros for none. */
type NormArgs = [number, number, number, number, number];
const NO_NORM: NormArgs = [0, 0, 0, 0, 0];

export class CudaFusedOps {
  constructor(private readonly ctx: FusedOpContext) {}

  linearMany(x: Tensor, parts: readonly LinearPart[]): Tensor[] {
    return this.many(x, null, parts)?.outs ?? this.adjacent(x, parts) ?? composedLinearMany(this.ctx.plain, x, parts);
  }

  linearSwiglu(x: Tensor, gate: LinearPart, up: LinearPart): Tensor {
    return this.swiglu(x, null, gate, up)?.out ?? composedLinearSwiglu(this.ctx.plain, x, gate, up);
  }

  normLinearMany(x: Tensor, norm: NormSpec, parts: readonly LinearPart[]): { outs: Tensor[]; sum: Tensor } {
    const fused = this.many(x, norm, parts);
    if (fused !== null) return fused;
    if (!this.ctx.oneGemm) return composedNormLinearMany(this.ctx.plain, x, norm, parts);
    const n = this.ctx.plain.rmsnorm(x, norm.w, norm.eps, norm.residual);
    return { outs: this.linearMany(n.y, parts), sum: n.sum };
  }

  normLinearSwiglu(x: Tensor, norm: NormSpec, gate: LinearPart, up: LinearPart): { out: Tensor; sum: Tensor } {
    return this.swiglu(x, norm, gate, up) ?? composedNormLinearSwiglu(this.ctx.plain, x, norm, gate, up);
  }

  /** The products in one gemv.cu launch, or null: not taken (nothing ran; the caller composes). */
  private many(x: Tensor, norm: NormSpec | null, parts: readonly LinearPart[]): { outs: Tensor[]; sum: Tensor } | null {
    if (!decodeSizedInput(x) || parts.length > GEMV_MAX_PARTS) return null; // (the composed ops check everything)
    linearManyShape(x.shape, parts.map((p) => ({ w: p.w.shape, bias: p.bias?.shape })));
    const ops = parts.map((p) => this.ctx.linearOperands('linearMany', x, p.w, p.bias));
    const { xt, T, K } = ops[0];
    if (!ops.every((o) => o.wt.dtype === 'bf16')) return null;
    const fused = this.normArgs(x, norm);
    if (fused === null) return null;
    const outs = ops.map((o) => this.ctx.scratch([T, o.N], xt.dtype));
    const args: number[] = [];
    ops.forEach((o, i) => args.push(outs[i].ptr, o.wt.ptr, o.bt?.ptr ?? 0, DTYPE_CODE[o.bt?.dtype ?? xt.dtype], o.N));
    while (args.length < 5 * GEMV_MAX_PARTS) args.push(0);
    const dt = DTYPE_CODE[xt.dtype];
    if (!this.ctx.native.gemvMany(dt, xt.ptr, dt, T, K, ...fused.args, parts.length, ...args)) return null;
    return { outs, sum: fused.sum };
  }

  private swiglu(x: Tensor, norm: NormSpec | null, gate: LinearPart, up: LinearPart): { out: Tensor; sum: Tensor } | null {
    if (!decodeSizedInput(x)) return null; // (the composed ops check everything)
    linearSwigluShape(x.shape, { w: gate.w.shape, bias: gate.bias?.shape }, { w: up.w.shape, bias: up.bias?.shape });
    const g = this.ctx.linearOperands('linearSwiglu', x, gate.w, gate.bias);
    const u = this.ctx.linearOperands('linearSwiglu', x, up.w, up.bias);
    const { xt, T, K, N } = g;
    if (g.wt.dtype !== 'bf16' || u.wt.dtype !== 'bf16') return null;
    const fused = this.normArgs(x, norm);
    if (fused === null) return null;
    const out = this.ctx.scratch([T, N], xt.dtype);
    const dt = DTYPE_CODE[xt.dtype];
    const biasDt = (b: FloatTensor | null): number => DTYPE_CODE[b?.dtype ?? xt.dtype];
    const taken = this.ctx.native.gemvSwiglu(
      out.ptr, xt.ptr, dt, T, K, N, g.wt.ptr, g.bt?.ptr ?? 0, biasDt(g.bt), u.wt.ptr, u.bt?.ptr ?? 0, biasDt(u.bt),
      ...fused.args,
    );
    return taken ? { out, sum: fused.sum } : null;
  }

  /**
   * Products whose weights (and biases, if any) lie one after another in memory as one product
   * into scratch, then split into one tensor per part; null where that does not apply (the switch
   * is off, one part, weights of another dtype than x, a gap between parts).
   */
  private adjacent(x: Tensor, parts: readonly LinearPart[]): Tensor[] | null {
    if (!this.ctx.oneGemm || parts.length < 2 || parts.length > GEMV_MAX_PARTS) return null;
    linearManyShape(x.shape, parts.map((p) => ({ w: p.w.shape, bias: p.bias?.shape })));
    const ops = parts.map((p) => this.ctx.linearOperands('linearMany', x, p.w, p.bias));
    const { xt, T, K } = ops[0];
    if (!ops.every((o) => o.wt.dtype === xt.dtype)) return null;
    const withBias = ops[0].bt !== null;
    if (!ops.every((o) => (o.bt !== null) === withBias && (o.bt === null || o.bt.dtype === ops[0].bt!.dtype))) return null;
    const follows = (ptrs: number[], bytes: number[]): boolean => ptrs.every((p, i) => i === 0 || p === ptrs[i - 1] + bytes[i - 1]);
    if (!follows(ops.map((o) => o.wt.ptr), ops.map((o) => o.wt.bytes))) return null;
    if (withBias && !follows(ops.map((o) => o.bt!.ptr), ops.map((o) => o.bt!.bytes))) return null;
    const N = ops.reduce((a, o) => a + o.N, 0);
    const dt = DTYPE_CODE[xt.dtype];
    const all = this.ctx.scratch([T, N], xt.dtype);
    const bias = ops[0].bt;
    this.ctx.native.linear(all.ptr, dt, xt.ptr, ops[0].wt.ptr, dt, bias?.ptr ?? 0, DTYPE_CODE[bias?.dtype ?? xt.dtype], T, K, N);
    const outs = ops.map((o) => this.ctx.scratch([T, o.N], xt.dtype));
    const args: number[] = [];
    outs.forEach((o) => args.push(o.ptr, o.bytes / T));
    while (args.length < 2 * GEMV_MAX_PARTS) args.push(0, 0);
    this.ctx.native.splitColumns(all.ptr, T, outs.length, ...(args as [number, number, number, number, number, number]));
    return outs;
  }

  /**
   * The norm's native arguments and the sum tensor the kernel fills (x itself without a
   * residual); NO_NORM for none; null when the norm's operands can't be fused (not bf16).
   */
  private normArgs(x: Tensor, norm: NormSpec | null): { args: NormArgs; sum: Tensor } | null {
    if (norm === null) return { args: NO_NORM, sum: x };
    const { xt, wt, rt } = this.ctx.normOperands(x, norm);
    if (xt.dtype !== 'bf16' || wt.dtype !== 'bf16') return null;
    const sum = rt === null ? xt : this.ctx.scratch(xt.shape, xt.dtype);
    return { args: [xt.ptr, rt?.ptr ?? 0, wt.ptr, rt === null ? 0 : sum.ptr, norm.eps], sum };
  }

}

/**
 * A bf16 x of 1 to GEMV_MAX_ROWS rows: worth asking the kernels. Decided before any checks, so
 * the batches that go to the composed ops (prefill) are checked once, there.
 */
function decodeSizedInput(x: Tensor): boolean {
  return x.dtype === 'bf16' && x.shape.length === 2 && x.shape[0] >= 1 && x.shape[0] <= GEMV_MAX_ROWS;
}
