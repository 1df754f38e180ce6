/**
 * Shape rules of the Backend ops, shared by every backend so that each op accepts and rejects
 * exactly the same calls, with the same messages, whatever computes it. Each function takes
 * the operands' shapes, throws an Error naming the op and the shapes when they do not fit,
 * and returns the dimensions the op works with. Dtype, lifetime and content checks (token ids,
 * slots) stay with each backend, since they depend on how it stores tensors.
 */
import type { AdamWStep, KvCacheSpec, SamplingParams } from './backend.ts';
import { checkPenalties } from './cpu/penalties.ts';
import { checkSamplingParams } from './cpu/sampling.ts';
import { fmtShape, numel } from './cpu/tensor.ts';

type Shape = readonly number[];

/** x [T, K], w [N, K], bias [N] */
export function linearShape(x: Shape, w: Shape, bias?: Shape, op = 'linear'): { T: number; K: number; N: number } {
  const [T, K] = x;
  const [N, Kw] = w;
  if (Kw !== K) throw new Error(`${op}: x is ${fmtShape(x)} and w is ${fmtShape(w)}: w must be [N, ${K}]`);
  if (bias !== undefined && bias[0] !== N) throw new Error(`${op}: bias is ${fmtShape(bias)}, w ${fmtShape(w)} needs [${N}]`);
  return { T, K, N };
}

/** linearAdd: y [T, N] += alpha * x [T, K] @ w [N, K]^T, y the product's shape, alpha finite. */
export function linearAddShape(y: Shape, x: Shape, w: Shape, alpha: number): { T: number; K: number; N: number } {
  const { T, K, N } = linearShape(x, w, undefined, 'linearAdd');
  if (y.length !== 2 || y[0] !== T || y[1] !== N) throw new Error(`linearAdd: y ${fmtShape(y)} is not x @ w^T's [${T}, ${N}]`);
  if (!Number.isFinite(alpha)) throw new Error(`linearAdd: alpha must be finite, got ${alpha}`);
  return { T, K, N };
}

/** x [T, K], w [N, K], bias [N] by rank (linear's backends check ranks with their dtype checks). */
function linearRanks(op: string, x: Shape, w: Shape, bias?: Shape): void {
  const rank = (name: string, s: Shape, r: number): void => {
    if (s.length !== r) throw new Error(`${op}: ${name} must have ${r} dims, got ${fmtShape(s)}`);
  };
  rank('x', x, 2);
  rank('w', w, 2);
  if (bias !== undefined) rank('bias', bias, 1);
}

/** linearMany: one or more parts, each a linear of x. */
export function linearManyShape(x: Shape, parts: readonly { w: Shape; bias?: Shape }[]): { T: number; K: number; Ns: number[] } {
  if (parts.length === 0) throw new Error('linearMany: no parts given');
  for (const p of parts) linearRanks('linearMany', x, p.w, p.bias);
  const Ns = parts.map((p) => linearShape(x, p.w, p.bias, 'linearMany').N);
  return { T: x[0], K: x[1], Ns };
}

/** linearSwiglu: gate and up are linears of x with the same number of rows. */
export function linearSwigluShape(x: Shape, gate: { w: Shape; bias?: Shape }, up: { w: Shape; bias?: Shape }): { T: number; K: number; N: number } {
  linearRanks('linearSwiglu', x, gate.w, gate.bias);
  linearRanks('linearSwiglu', x, up.w, up.bias);
  const g = linearShape(x, gate.w, gate.bias, 'linearSwiglu');
  const u = linearShape(x, up.w, up.bias, 'linearSwiglu');
  if (g.N !== u.N) throw new Error(`linearSwiglu: gate w is ${fmtShape(gate.w)} but up w is ${fmtShape(up.w)}; they must match`);
  return g;
}

/** x [..., C], w [C]; returns rows R and width C. */
export function rmsnormShape(x: Shape, w: Shape, eps: number, op: 'rmsnorm' | 'rmsnormBackward' = 'rmsnorm'): { R: number; C: number } {
  if (x.length < 1) throw new Error(`${op}: x must have at least one dim, got ${fmtShape(x)}`);
  const C = x[x.length - 1];
  if (w[0] !== C) throw new Error(`${op}: w is ${fmtShape(w)} but x ${fmtShape(x)} has last dim ${C}`);
  if (!(eps >= 0) || !Number.isFinite(eps)) throw new Error(`${op}: eps must be a finite number >= 0, got ${eps}`);
  const size = x.reduce((a, b) => a * b, 1);
  return { R: C === 0 ? 0 : size / C, C };
}

/** q [T, H, D], k [T, Hkv, D], positions [T], invFreq [D/2] (or dq, dk for ropeBackward) */
export function ropeShape(
  q: Shape,
  k: Shape,
  positions: Shape,
  invFreq: Shape,
  op: 'rope' | 'ropeBackward' = 'rope',
): { T: number; H: number; Hkv: number; D: number } {
  const [T, H, D] = q;
  const [Tk, Hkv, Dk] = k;
  const [qn, kn] = op === 'rope' ? ['q', 'k'] : ['dq', 'dk'];
  if (Tk !== T || Dk !== D) throw new Error(`${op}: ${qn} is ${fmtShape(q)} and ${kn} is ${fmtShape(k)}: they need the same T and D`);
  if (D % 2 !== 0) throw new Error(`${op}: head dim ${D} must be even`);
  if (positions[0] !== T) throw new Error(`${op}: positions is ${fmtShape(positions)}, ${qn} ${fmtShape(q)} needs [${T}]`);
  if (invFreq[0] !== D / 2) throw new Error(`${op}: invFreq is ${fmtShape(invFreq)}, head dim ${D} needs [${D / 2}]`);
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

// ---- backward and training ops ----

/** dy [T, N], w [N, K] -> dx [T, K] */
export function linearBackwardInputShape(dy: Shape, w: Shape): { T: number; K: number; N: number } {
  const [T, N] = dy;
  const [Nw, K] = w;
  if (Nw !== N) throw new Error(`linearBackwardInput: dy is ${fmtShape(dy)} and w is ${fmtShape(w)}: w must be [${N}, K]`);
  return { T, K, N };
}

/** dy [T, N], x [T, K], dw [N, K] += alpha * dy^T x */
export function linearBackwardWeightShape(dy: Shape, x: Shape, dw: Shape, alpha: number): { T: number; K: number; N: number } {
  const [T, N] = dy;
  const [Tx, K] = x;
  if (Tx !== T) throw new Error(`linearBackwardWeight: dy is ${fmtShape(dy)} and x is ${fmtShape(x)}: they need the same T`);
  if (dw[0] !== N || dw[1] !== K) throw new Error(`linearBackwardWeight: dw is ${fmtShape(dw)}, dy ${fmtShape(dy)} and x ${fmtShape(x)} need [${N}, ${K}]`);
  if (!Number.isFinite(alpha)) throw new Error(`linearBackwardWeight: alpha must be finite, got ${alpha}`);
  return { T, K, N };
}

/** dy, x [..., C], w [C] */
export function rmsnormBackwardShape(dy: Shape, x: Shape, w: Shape, eps: number): { R: number; C: number } {
  sameShape('rmsnormBackward', 'dy', dy, 'x', x);
  return rmsnormShape(x, w, eps, 'rmsnormBackward');
}

/** dy, gate, up: one shape */
export function swigluBackwardShape(dy: Shape, gate: Shape, up: Shape): void {
  sameShape('swigluBackward', 'gate', gate, 'up', up);
  sameShape('swigluBackward', 'dy', dy, 'gate', gate);
}

export interface PackedAttentionShape {
  T: number;
  H: number;
  Hkv: number;
  D: number;
  S: number;
}

/** q [T, H, D], k and v [T, Hkv, D], cuSeqlens [S+1] */
export function attentionPackedShape(
  q: Shape,
  k: Shape,
  v: Shape,
  cuSeqlens: Shape,
  scale: number,
  op: 'attentionPacked' | 'attentionPackedBackward' = 'attentionPacked',
): PackedAttentionShape {
  const [T, H, D] = q;
  const [Tk, Hkv, Dk] = k;
  if (Tk !== T || Dk !== D) throw new Error(`${op}: q is ${fmtShape(q)} and k is ${fmtShape(k)}: they need the same T and D`);
  sameShape(op, 'k', k, 'v', v);
  if (!(Hkv >= 1) || H % Hkv !== 0) throw new Error(`${op}: q has ${H} heads, not a multiple of k's ${Hkv} KV heads`);
  if (!(cuSeqlens[0] >= 1)) throw new Error(`${op}: cuSeqlens is ${fmtShape(cuSeqlens)}, it needs [S+1] entries (at least [0])`);
  if (!Number.isFinite(scale)) throw new Error(`${op}: scale must be finite, got ${scale}`);
  return { T, H, Hkv, D, S: cuSeqlens[0] - 1 };
}

/** attentionPacked's shapes plus dout and out [T, H, D], lse [T, H] */
export function attentionPackedBackwardShape(
  dout: Shape,
  q: Shape,
  k: Shape,
  v: Shape,
  out: Shape,
  lse: Shape,
  cuSeqlens: Shape,
  scale: number,
): PackedAttentionShape {
  const op = 'attentionPackedBackward';
  const dims = attentionPackedShape(q, k, v, cuSeqlens, scale, op);
  sameShape(op, 'dout', dout, 'q', q);
  sameShape(op, 'out', out, 'q', q);
  sameShape(op, 'lse', lse, '[T, H] of q', [dims.T, dims.H]);
  return dims;
}

/** logits [R, V], targets [R], temperature > 0 */
export function tokenLogprobsShape(
  logits: Shape,
  targets: Shape,
  temperature: number,
  op: 'tokenLogprobs' | 'tokenLogprobsBackward' = 'tokenLogprobs',
): { R: number; V: number } {
  const [R, V] = logits;
  if (targets[0] !== R) throw new Error(`${op}: targets is ${fmtShape(targets)}, logits ${fmtShape(logits)} needs [${R}]`);
  if (!(V >= 1)) throw new Error(`${op}: logits ${fmtShape(logits)} has an empty vocabulary`);
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new Error(`${op}: temperature must be a finite number > 0, got ${temperature}`);
  return { R, V };
}

/** tokenLogprobs' shapes plus dlogp [R] */
export function tokenLogprobsBackwardShape(logits: Shape, targets: Shape, temperature: number, dlogp: Shape): { R: number; V: number } {
  const dims = tokenLogprobsShape(logits, targets, temperature, 'tokenLogprobsBackward');
  if (dlogp[0] !== dims.R) throw new Error(`tokenLogprobsBackward: dlogp is ${fmtShape(dlogp)}, logits ${fmtShape(logits)} needs [${dims.R}]`);
  return dims;
}

/** src [R, C], idx [R] -> [T, C] */
export function scatterRowsShape(src: Shape, idx: Shape, T: number): { R: number; C: number } {
  const [R, C] = src;
  if (idx[0] !== R) throw new Error(`scatterRows: idx is ${fmtShape(idx)}, src ${fmtShape(src)} needs [${R}]`);
  if (!Number.isSafeInteger(T) || T < 0) throw new Error(`scatterRows: T must be an integer >= 0, got ${T}`);
  return { R, C };
}

/** placeRows: dst [N, ...row] and src [S, ...row] of one dtype and row shape, slots [S]. Returns rows and row size. */
export function placeRowsShape(
  dst: { shape: Shape; dtype: string }, src: { shape: Shape; dtype: string }, slots: Shape,
): { N: number; S: number; row: number } {
  if (dst.dtype !== src.dtype) throw new Error(`placeRows: dst is ${dst.dtype} but src is ${src.dtype}`);
  return placeRowsShapes(dst.shape, src.shape, slots);
}

function placeRowsShapes(dst: Shape, src: Shape, slots: Shape): { N: number; S: number; row: number } {
  const row = (t: Shape): number => numel(t.slice(1));
  if (dst.length < 1 || src.length < 1) throw new Error(`placeRows: dst ${fmtShape(dst)} and src ${fmtShape(src)} need a first (row) dim`);
  if (row(dst) !== row(src)) throw new Error(`placeRows: rows of dst ${fmtShape(dst)} and src ${fmtShape(src)} differ in size`);
  if (slots.length !== 1 || slots[0] !== src[0]) throw new Error(`placeRows: slots is ${fmtShape(slots)}, src ${fmtShape(src)} needs [${src[0]}]`);
  return { N: dst[0], S: src[0], row: row(src) };
}

/** param, grad, m, v of equal element counts, and AdamW's hyperparameters (torch's ranges). */
export function adamwShape(param: Shape, grad: Shape, m: Shape, v: Shape, h: AdamWStep): number {
  const n = numel(param);
  for (const [name, shape] of [['grad', grad], ['m', m], ['v', v]] as const) {
    if (numel(shape) !== n) throw new Error(`adamw: ${name} ${fmtShape(shape)} has ${numel(shape)} elements, param ${fmtShape(param)} has ${n}; they must match`);
  }
  const need = (field: keyof AdamWStep, ok: boolean, what: string): void => {
    if (!ok) throw new Error(`adamw: ${field} must be ${what}, got ${h[field]}`);
  };
  const finite = (x: number): boolean => Number.isFinite(x);
  need('lr', finite(h.lr) && h.lr >= 0, 'a finite number >= 0');
  need('beta1', h.beta1 >= 0 && h.beta1 < 1, 'in [0, 1)');
  need('beta2', h.beta2 >= 0 && h.beta2 < 1, 'in [0, 1)');
  need('eps', finite(h.eps) && h.eps >= 0, 'a finite number >= 0');
  need('weightDecay', finite(h.weightDecay) && h.weightDecay >= 0, 'a finite number >= 0');
  need('step', Number.isSafeInteger(h.step) && h.step >= 1, 'an integer >= 1 (steps count from 1)');
  need('gradScale', finite(h.gradScale) && h.gradScale >= 0, 'a finite number >= 0');
  return n;
}

export function sameShape(op: string, aName: string, a: Shape, bName: string, b: Shape): void {
  if (a.length !== b.length || a.some((d, i) => d !== b[i])) {
    throw new Error(`${op}: ${aName} is ${fmtShape(a)} but ${bName} is ${fmtShape(b)}; they must match`);
  }
}

/** sample(): one params entry per row of logits [S, V], each valid for a vocabulary of V. */
export function sampleArgs(shape: readonly number[], params: readonly SamplingParams[]): void {
  const [S, V] = shape;
  if (params.length !== S) throw new Error(`sample: logits ${fmtShape(shape)} has ${S} rows but ${params.length} sampling params were given`);
  if (V < 1) throw new Error(`sample: logits ${fmtShape(shape)} has an empty vocabulary`);
  params.forEach((p, row) => {
    checkSamplingParams(p, row);
    checkPenalties(p, row, V);
    const k = p.topLogprobs ?? 0;
    if (!Number.isInteger(k) || k < 0) throw new Error(`sample: row ${row}: topLogprobs must be an integer >= 0, got ${k}`);
  });
}
