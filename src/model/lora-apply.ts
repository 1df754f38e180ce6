/**
 * The LoRA branch of a linear layer, written against the Backend, forward and backward.
 *
 * With base output y = x W^T (+ bias), A [R, K], B [N, R] and scale s:
 *   forward:  u = x A^T [T, R];  y += s * u B^T
 *   backward: dB += s * dy^T u;  du = dy B;  dA += s * du^T x;  dx += s * du A
 * Serving applies one adapter per contiguous run of rows (Punica's segmented gather: the
 * engine orders a batch's sequences by adapter, so each adapter sees one row range).
 */
import type { Backend, Tensor } from '../backend/backend.ts';

/**
 * y += scale * (x A^T) B^T in place; returns u = x A^T, which the backward needs. The expand and
 * the add are one product where the backend can (linearAdd).
 */
export function loraForward(be: Backend, y: Tensor, x: Tensor, a: Tensor, b: Tensor, scale: number): Tensor {
  const u = be.linear(x, a);
  be.linearAdd(y, u, b, scale);
  return u;
}

/**
 * Accumulate the branch's gradients into dA, dB and its input gradient into dx (in place).
 * x and u are the forward's input and x A^T; dy is the gradient of the layer's output.
 */
export function loraBackward(
  be: Backend,
  g: { dy: Tensor; x: Tensor; u: Tensor; a: Tensor; b: Tensor; da: Tensor; db: Tensor; dx: Tensor; scale: number },
): void {
  be.linearBackwardWeight(g.dy, g.u, g.db, g.scale);
  const du = be.linearBackwardInput(g.dy, g.b);
  be.linearBackwardWeight(du, g.x, g.da, g.scale);
  be.axpy(g.dx, be.linearBackwardInput(du, g.a), g.scale);
}

/** A run of rows [start, end) of a packed batch that one adapter applies to. */
export interface LoraSegment<L> {
  start: number;
  end: number;
  lora: L;
}

/**
 * Serving, several projections of one x (q, k and v; gate and up): ys[i] [T, N_i] += each
 * segment's LoRA of x for projection i, on its rows only. The shrinks of one segment are one
 * linearMany (one launch at decode sizes where the backend fuses it); each expand adds into its
 * output (linearAdd). The same sums as loraForwardSegments per projection.
 */
export function loraForwardSegmentsMany<L>(
  be: Backend,
  ys: readonly Tensor[],
  x: Tensor,
  segments: readonly LoraSegment<L>[],
  pick: (lora: L, i: number) => { a: Tensor; b: Tensor; scale: number } | undefined,
): void {
  const [T, K] = x.shape;
  for (const seg of segments) {
    if (seg.end <= seg.start) continue;
    if (seg.start < 0 || seg.end > T) throw new Error(`LoRA segment [${seg.start}, ${seg.end}) is outside the batch's ${T} rows`);
    const present = ys.flatMap((y, i) => {
      const m = pick(seg.lora, i);
      return m === undefined ? [] : [{ y, m }];
    });
    if (present.length === 0) continue;
    const n = seg.end - seg.start;
    const whole = seg.start === 0 && n === T;
    const xs = whole ? x : be.viewAt(x, seg.start * K, [n, K]);
    const us = be.linearMany(xs, present.map(({ m }) => ({ w: m.a })));
    present.forEach(({ y, m }, j) => {
      const N = y.shape[1];
      be.linearAdd(whole ? y : be.viewAt(y, seg.start * N, [n, N]), us[j], m.b, m.scale);
    });
  }
}

/**
 * Serving: y [T, N] += each segment's LoRA of x [T, K] on its rows only (rows outside every
 * segment use the base weights alone).
 */
export function loraForwardSegments<L>(
  be: Backend,
  y: Tensor,
  x: Tensor,
  segments: readonly LoraSegment<L>[],
  pick: (lora: L) => { a: Tensor; b: Tensor; scale: number } | undefined,
): void {
  const [T, K] = x.shape;
  const N = y.shape[1];
  for (const seg of segments) {
    const m = pick(seg.lora);
    if (m === undefined || seg.end <= seg.start) continue;
    if (seg.start < 0 || seg.end > T) throw new Error(`LoRA segment [${seg.start}, ${seg.end}) is outside the batch's ${T} rows`);
    const n = seg.end - seg.start;
    const xs = seg.start === 0 && n === T ? x : be.viewAt(x, seg.start * K, [n, K]);
    const ys = seg.start === 0 && n === T ? y : be.viewAt(y, seg.start * N, [n, N]);
    loraForward(be, ys, xs, m.a, m.b, m.scale);
  }
}
