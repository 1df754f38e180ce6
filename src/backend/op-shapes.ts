/**
 * Shape rules of the Backend ops, shared by every backend so that each op accepts and rejects
 * exactly the same calls, with the same messages, whatever computes it. Each function takes
 * the operands' shapes, throws an Error naming the op and the shapes when they do not fit,
 * and returns the dimensions the op works with. Dtype, lifetime and content checks (token ids,
 * slots) stay with each backend, since they depend on how it stores tensors.
 */
import type { KvCacheSpec } from './backend.ts';
import { fmtShape } from './cpu/tensor.ts';

type Shape = readonly number[];

/** x [T, K], w [N, K], bias [N] */
export function linearShape(x: Shape, w: Shape, bias?: Shape): { T: number; K: number; N: number } {
  const [T, K] = x;
  const [N, Kw] = w;
  if (Kw !== K) throw new Error(`linear: x is ${fmtShape(x)} and w is ${fmtShape(w)}: w must be [N, ${K}]`);
  if (bias !== undefined && bias[0] !== N) throw new Error(`linear: bias is ${fmtShape(bias)}, w ${fmtShape(w)} needs [${N}]`);
  return { T, K, N };
}

/** x [..., C], w [C]; returns rows R and width C. */
export function rmsnormShape(x: Shape, w: Shape, eps: number): { R: number; C: number } {
  if (x.length < 1) throw new Error(`rmsnorm: x must have at least one dim, got ${fmtShape(x)}`);
  const C = x[x.length - 1];
  if (w[0] !== C) throw new Error(`rmsnorm: w is ${fmtShape(w)} but x ${fmtShape(x)} has last dim ${C}`);
  if (!(eps >= 0) || !Number.isFinite(eps)) throw new Error(`rmsnorm: eps must be a finite number >= 0, got ${eps}`);
  const size = x.reduce((a, b) => a * b, 1);
  return { R: C === 0 ? 0 : size / C, C };
}

/** q [T, H, D], k [T, Hkv, D], positions [T], invFreq [D/2] */
export function ropeShape(q: Shape, k: Shape, positions: Shape, invFreq: Shape): { T: number; H: number; Hkv: number; D: number } {
  const [T, H, D] = q;
  const [Tk, Hkv, Dk] = k;
  if (Tk !== T || Dk !== D) throw new Error(`rope: q is ${fmtShape(q)} and k is ${fmtShape(k)}: they need the same T and D`);
  if (D % 2 !== 0) throw new Error(`rope: head dim ${D} must be even`);
  if (positions[0] !== T) throw new Error(`rope: positions is ${fmtShape(positions)}, q ${fmtShape(q)} needs [${T}]`);
  if (invFreq[0] !== D / 2) throw new Error(`rope: invFreq is ${fmtShape(invFreq)}, head dim ${D} needs [${D / 2}]`);
  return { T, H, Hkv, D };
}

/** k, v [T, Hkv, D] matching the cache, slots [T] */
export function writeKvShape(k: Shape, v: Shape, slots: Shape, spec: KvCacheSpec): { T: number; Hkv: number; D: number } {
  const [T, Hkv, D] = k;
  if (Hkv !== spec.numKvHeads || D !== spec.headDim) {
    throw new Error(`writeKv: k is ${fmtShape(k)}, the cache holds [T, ${spec.numKvHeads}, ${spec.headDim}]`);
  }
  sameShape('writeKv', 'k', k, 'v', v);
  if (slots[0] !== T) throw new Error(`writeKv: slots is ${fmtShape(slots)}, k ${fmtShape(k)} needs [${T}]`);
  return { T, Hkv, D };
}

/** q [T, H, D] against the cache; meta cuSeqlensQ [S+1], contextLens [S], blockTables [S, maxBlocks] */
export function attentionShape(
  q: Shape,
  spec: KvCacheSpec,
  cuSeqlensQ: Shape,
  contextLens: Shape,
  blockTables: Shape,
  scale: number,
): { T: number; H: number; D: number; S: number; maxBlocks: number } {
  const [T, H, D] = q;
  if (D !== spec.headDim) throw new Error(`attention: q is ${fmtShape(q)}, the cache's head dim is ${spec.headDim}`);
  if (H % spec.numKvHeads !== 0) throw new Error(`attention: q has ${H} heads, not a multiple of the cache's ${spec.numKvHeads} KV heads`);
  if (!Number.isFinite(scale)) throw new Error(`attention: scale must be finite, got ${scale}`);
  const S = contextLens[0];
  const maxBlocks = blockTables[1];
  if (cuSeqlensQ[0] !== S + 1 || blockTables[0] !== S) {
    throw new Error(
      `attention: meta shapes disagree: cuSeqlensQ ${fmtShape(cuSeqlensQ)}, contextLens ${fmtShape(contextLens)}, blockTables ${fmtShape(blockTables)} (need [S+1], [S], [S, maxBlocks])`,
    );
  }
  return { T, H, D, S, maxBlocks };
}

export function sameShape(op: string, aName: string, a: Shape, bName: string, b: Shape): void {
  if (a.length !== b.length || a.some((d, i) => d !== b[i])) {
    throw new Error(`${op}: ${aName} is ${fmtShape(a)} but ${bName} is ${fmtShape(b)}; they must match`);
  }
}
