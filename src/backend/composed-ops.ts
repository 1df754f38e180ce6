/**
 * The fused forward ops of the Backend contract (linearMany, linearSwiglu, normLinearMany,
 * normLinearSwiglu, ropeWriteKv, ropeAttentionDecode) written
 * as the plain ops they stand for: the CPU backend's implementation, and what the CUDA backend
 * falls back to when its fused kernels don't take the operands (large batches, f32 tensors).
 */
import type { AttnMeta, Backend, KvCache, LinearPart, NormSpec, Tensor } from './backend.ts';
import { linearManyShape, linearSwigluShape } from './op-shapes.ts';

type PlainOps = Pick<Backend, 'linear' | 'swiglu' | 'rope' | 'writeKv' | 'rmsnorm' | 'attention'>;

export function composedLinearMany(be: PlainOps, x: Tensor, parts: readonly LinearPart[]): Tensor[] {
  linearManyShape(x.shape, parts.map((p) => ({ w: p.w.shape, bias: p.bias?.shape })));
  return parts.map((p) => be.linear(x, p.w, p.bias));
}

export function composedLinearSwiglu(be: PlainOps, x: Tensor, gate: LinearPart, up: LinearPart): Tensor {
  linearSwigluShape(x.shape, { w: gate.w.shape, bias: gate.bias?.shape }, { w: up.w.shape, bias: up.bias?.shape });
  return be.swiglu(be.linear(x, gate.w, gate.bias), be.linear(x, up.w, up.bias));
}

export function composedRopeWriteKv(
  be: PlainOps, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, invFreq: Tensor, cache: KvCache, layer: number,
  slots: Tensor,
): void {
  be.rope(q, k, positions, invFreq);
  be.writeKv(cache, layer, k, v, slots);
}

export function composedRopeAttentionDecode(
  be: PlainOps, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, invFreq: Tensor, cache: KvCache, layer: number,
  slots: Tensor, meta: AttnMeta, scale: number,
): Tensor {
  composedRopeWriteKv(be, q, k, v, positions, invFreq, cache, layer, slots);
  return be.attention(q, cache, layer, meta, scale);
}

export function composedNormLinearMany(
  be: PlainOps, x: Tensor, norm: NormSpec, parts: readonly LinearPart[],
): { outs: Tensor[]; sum: Tensor } {
  const n = be.rmsnorm(x, norm.w, norm.eps, norm.residual);
  return { outs: composedLinearMany(be, n.y, parts), sum: n.sum };
}

export function composedNormLinearSwiglu(
  be: PlainOps, x: Tensor, norm: NormSpec, gate: LinearPart, up: LinearPart,
): { out: Tensor; sum: Tensor } {
  const n = be.rmsnorm(x, norm.w, norm.eps, norm.residual);
  return { out: composedLinearSwiglu(be, n.y, gate, up), sum: n.sum };
}
