/**
 * linear backward: the two products of linear's gradient (the forward is in matmul.ts)
 *   input:  dx (T, K)  = dy (T, N) @ w (N, K)
 *   weight: dw (N, K) += alpha * dy (T, N)^T @ x (T, K)
 *
 * Both are out (I, J) = A (I, Rd) @ B (Rd, J) with B row-major (B = w or x, J = K), so every
 * output row is a combination of rows of B; A is dy read with strides (row sI, column sR):
 * as it is for the input (I = T, Rd = N, sI = N, sR = 1) or transposed for the weight
 * (I = N, Rd = T, sI = 1, sR = N). Neither is transposed as a whole (a transposed copy of w
 * would cost as much memory as w: 540 MB for a 150k-token lm_head); only small slabs are
 * copied, see below.
 *
 * Outputs come in 4 x 3 register tiles like the forward (each loaded B element feeds 4
 * multiply-adds, each A element 3). Unlike the forward, both operands are read across rows,
 * with strides that are often powers of two (K, N = 256, 1024, ...) and so land in the same
 * cache sets. So, as BLAS does, a task (a block of output rows x a block of columns) cuts
 * the reduction into depth blocks and copies ("packs") each depth block's slabs of A and B
 * into small contiguous per-thread buffers (~64 KiB and ~48 KiB, L2-resident) that all its
 * tiles then read; each tile parks its 12 running sums in a per-thread double buffer between
 * depth blocks. Packing copies ~2% as many elements as the tiles do multiply-adds.
 *
 * Each output is a double-precision sum over r = 0..Rd-1 ascending (parking a double in a
 * Float64Array is exact), stored once (dx) or added to dw as dw + alpha * sum in double and
 * rounded once. Tasks are numbered from (kind, T, K, N) alone and a task's outputs depend on
 * that task only, so results are the same bit for bit with any number of threads (pool.ts).
 */
import type { LinearPlan } from './matmul.ts';

export type LinearBackwardKind = 'input' | 'weight';

const ROW_BLOCK = 64; // a multiple of 4
const COL_BLOCK = 48; // a multiple of 3
const DEPTH_BLOCK = 256;

// Per-thread buffers (each worker thread has its own copy of this module): one task's slabs of
// A and B for the current depth block, and its tiles' running sums between depth blocks.
const packedA = new Float32Array(ROW_BLOCK * DEPTH_BLOCK);
const packedB = new Float32Array(DEPTH_BLOCK * COL_BLOCK);
const parked = new Float64Array(ROW_BLOCK * COL_BLOCK);

interface Product {
  I: number;
  J: number;
  Rd: number;
  sI: number;
  sR: number;
}

function productOf(kind: LinearBackwardKind, T: number, K: number, N: number): Product {
  return kind === 'input' ? { I: T, J: K, Rd: N, sI: N, sR: 1 } : { I: N, J: K, Rd: T, sI: 1, sR: N };
}

export function linearBackwardPlan(kind: LinearBackwardKind, T: number, K: number, N: number): LinearPlan {
  const { I, J } = productOf(kind, T, K, N);
  const rowBlock = Math.min(ROW_BLOCK, Math.max(4, (I + 3) & ~3));
  const colBlock = Math.min(COL_BLOCK, Math.max(3, Math.ceil(J / 3) * 3));
  const rowBlocks = Math.ceil(I / rowBlock);
  return { rowBlock, colBlock, rowBlocks, tasks: rowBlocks * Math.ceil(J / colBlock) };
}

/** dx (T, K) = dy (T, N) @ w (N, K), on one thread. */
export function linearBackwardInput(dx: Float32Array, dy: Float32Array, w: Float32Array, T: number, K: number, N: number): void {
  const plan = linearBackwardPlan('input', T, K, N);
  linearBackwardTasks('input', dx, dy, w, T, K, N, 1, plan, 0, plan.tasks);
}

/** dw (N, K) += alpha * dy (T, N)^T @ x (T, K), on one thread. */
export function linearBackwardWeight(dw: Float32Array, dy: Float32Array, x: Float32Array, T: number, K: number, N: number, alpha: number): void {
  const plan = linearBackwardPlan('weight', T, K, N);
  linearBackwardTasks('weight', dw, dy, x, T, K, N, alpha, plan, 0, plan.tasks);
}

/** Tasks [t0, t1) of `plan`: b is w ('input') or x ('weight'); alpha applies to 'weight' only. */
export function linearBackwardTasks(
  kind: LinearBackwardKind,
  out: Float32Array,
  dy: Float32Array,
  b: Float32Array,
  T: number,
  K: number,
  N: number,
  alpha: number,
  plan: LinearPlan,
  t0: number,
  t1: number,
): void {
  const { I, J, Rd, sI, sR } = productOf(kind, T, K, N);
  const m = new Tiles(out, J, kind === 'weight', alpha, plan.colBlock);
  const { rowBlock, colBlock, rowBlocks } = plan;
  for (let task = t0; task < t1; task++) {
    const cb = (task / rowBlocks) | 0;
    const i0 = (task - cb * rowBlocks) * rowBlock;
    const i1 = Math.min(I, i0 + rowBlock);
    const j0 = cb * colBlock;
    const j1 = Math.min(J, j0 + colBlock);
    const w = j1 - j0;
    // At least one (empty) depth block when Rd = 0, so that dx is still written.
    for (let r0 = 0; r0 === 0 || r0 < Rd; r0 += DEPTH_BLOCK) {
      const r1 = Math.min(Rd, r0 + DEPTH_BLOCK);
      const dep = r1 - r0;
      packA(dy, i0, i1, r0, r1, sI, sR);
      packB(b, j0, j1, r0, r1, J);
      m.dep = dep;
      m.w = w;
      m.first = r0 === 0;
      m.last = r1 >= Rd;
      let i = i0;
      for (; i + 4 <= i1; i += 4) {
        let j = j0;
        for (; j + 3 <= j1; j += 3) m.four3(i, j, i - i0, j - j0);
        for (; j < j1; j++) m.four1(i, j, i - i0, j - j0);
      }
      for (; i < i1; i++) {
        let j = j0;
        for (; j + 4 <= j1; j += 4) m.one4(i, j, i - i0, j - j0);
        for (; j < j1; j++) m.one1(i, j, i - i0, j - j0);
      }
    }
  }
}

/**
 * packedA[(i - i0) * dep + (r - r0)] = A(i, r): rows of the block, each contiguous over r.
 * (Plain copy loops here and in packB: rows are short, and a subarray per row is an object.)
 */
function packA(a: Float32Array, i0: number, i1: number, r0: number, r1: number, sI: number, sR: number): void {
  const dep = r1 - r0;
  if (sR === 1) {
    for (let i = i0, o = 0; i < i1; i++) for (let r = i * sI + r0, end = i * sI + r1; r < end; r++) packedA[o++] = a[r];
    return;
  }
  // Transposed (sI = 1): read each row of dy once along i.
  for (let r = r0; r < r1; r++) {
    const src = r * sR;
    for (let i = i0, o = r - r0; i < i1; i++, o += dep) packedA[o] = a[src + i];
  }
}

/** packedB[(r - r0) * w + (j - j0)] = b[r * J + j], w = j1 - j0. */
function packB(b: Float32Array, j0: number, j1: number, r0: number, r1: number, J: number): void {
  let o = 0;
  for (let r = r0; r < r1; r++) for (let j = r * J + j0, end = r * J + j1; j < end; j++) packedB[o++] = b[j];
}

/**
 * The tile kernels of one call, over the packed slabs of one depth block (dep reduction
 * steps; B rows of width w). A tile at block offsets (ii, jj) starts its sums from 0 on the
 * first depth block and from its parked sums (row stride ld = colBlock) after; the last block
 * stores to `out` at (i, j), the others park the sums again.
 */
class Tiles {
  dep = 0;
  w = 0;
  first = true;
  last = true;

  constructor(
    private readonly out: Float32Array,
    private readonly J: number,
    /** dw += alpha * sum rather than dx = sum. */
    private readonly acc: boolean,
    private readonly alpha: number,
    private readonly ld: number,
  ) {}

  /** out[o] = s, or out[o] + alpha * s (one rounding) when accumulating. */
  private put(o: number, s: number): void {
    this.out[o] = this.acc ? this.out[o] + this.alpha * s : s;
  }

  /** Rows i..i+3 x columns j..j+2. */
  four3(i: number, j: number, ii: number, jj: number): void {
    const { dep, w, ld } = this;
    const a = packedA;
    const b = packedB;
    const a0 = ii * dep;
    const a1 = a0 + dep;
    const a2 = a1 + dep;
    const a3 = a2 + dep;
    const p0 = ii * ld + jj;
    const p1 = p0 + ld;
    const p2 = p1 + ld;
    const p3 = p2 + ld;
    let c00 = 0, c01 = 0, c02 = 0;
    let c10 = 0, c11 = 0, c12 = 0;
    let c20 = 0, c21 = 0, c22 = 0;
    let c30 = 0, c31 = 0, c32 = 0;
    if (!this.first) {
      c00 = parked[p0]; c01 = parked[p0 + 1]; c02 = parked[p0 + 2];
      c10 = parked[p1]; c11 = parked[p1 + 1]; c12 = parked[p1 + 2];
      c20 = parked[p2]; c21 = parked[p2 + 1]; c22 = parked[p2 + 2];
      c30 = parked[p3]; c31 = parked[p3 + 1]; c32 = parked[p3 + 2];
    }
    for (let r = 0, bo = jj; r < dep; r++, bo += w) {
      const b0 = b[bo];
      const b1 = b[bo + 1];
      const b2 = b[bo + 2];
      let v = a[a0 + r];
      c00 += v * b0; c01 += v * b1; c02 += v * b2;
      v = a[a1 + r];
      c10 += v * b0; c11 += v * b1; c12 += v * b2;
      v = a[a2 + r];
      c20 += v * b0; c21 += v * b1; c22 += v * b2;
      v = a[a3 + r];
      c30 += v * b0; c31 += v * b1; c32 += v * b2;
    }
    if (this.last) {
      const J = this.J;
      let o = i * J + j;
      this.put(o, c00); this.put(o + 1, c01); this.put(o + 2, c02);
      o += J;
      this.put(o, c10); this.put(o + 1, c11); this.put(o + 2, c12);
      o += J;
      this.put(o, c20); this.put(o + 1, c21); this.put(o + 2, c22);
      o += J;
      this.put(o, c30); this.put(o + 1, c31); this.put(o + 2, c32);
    } else {
      parked[p0] = c00; parked[p0 + 1] = c01; parked[p0 + 2] = c02;
      parked[p1] = c10; parked[p1 + 1] = c11; parked[p1 + 2] = c12;
      parked[p2] = c20; parked[p2 + 1] = c21; parked[p2 + 2] = c22;
      parked[p3] = c30; parked[p3 + 1] = c31; parked[p3 + 2] = c32;
    }
  }

  /** Rows i..i+3 x column j (the last J % 3 columns of a block). */
  four1(i: number, j: number, ii: number, jj: number): void {
    const { dep, w, ld } = this;
    const a = packedA;
    const a0 = ii * dep;
    const a1 = a0 + dep;
    const a2 = a1 + dep;
    const a3 = a2 + dep;
    const p = ii * ld + jj;
    let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    if (!this.first) {
      c0 = parked[p]; c1 = parked[p + ld]; c2 = parked[p + 2 * ld]; c3 = parked[p + 3 * ld];
    }
    for (let r = 0, bo = jj; r < dep; r++, bo += w) {
      const v = packedB[bo];
      c0 += a[a0 + r] * v;
      c1 += a[a1 + r] * v;
      c2 += a[a2 + r] * v;
      c3 += a[a3 + r] * v;
    }
    if (this.last) {
      const J = this.J;
      const o = i * J + j;
      this.put(o, c0); this.put(o + J, c1); this.put(o + 2 * J, c2); this.put(o + 3 * J, c3);
    } else {
      parked[p] = c0; parked[p + ld] = c1; parked[p + 2 * ld] = c2; parked[p + 3 * ld] = c3;
    }
  }

  /** Row i x columns j..j+3 (the last I % 4 rows). */
  one4(i: number, j: number, ii: number, jj: number): void {
    const { dep, w, ld } = this;
    const a = packedA;
    const b = packedB;
    const a0 = ii * dep;
    const p = ii * ld + jj;
    let c0 = 0, c1 = 0, c2 = 0, c3 = 0;
    if (!this.first) {
      c0 = parked[p]; c1 = parked[p + 1]; c2 = parked[p + 2]; c3 = parked[p + 3];
    }
    for (let r = 0, bo = jj; r < dep; r++, bo += w) {
      const v = a[a0 + r];
      c0 += v * b[bo];
      c1 += v * b[bo + 1];
      c2 += v * b[bo + 2];
      c3 += v * b[bo + 3];
    }
    if (this.last) {
      const o = i * this.J + j;
      this.put(o, c0); this.put(o + 1, c1); this.put(o + 2, c2); this.put(o + 3, c3);
    } else {
      parked[p] = c0; parked[p + 1] = c1; parked[p + 2] = c2; parked[p + 3] = c3;
    }
  }

  /** Row i x column j. */
  one1(i: number, j: number, ii: number, jj: number): void {
    const { dep, w } = this;
    const p = ii * this.ld + jj;
    const a0 = ii * dep;
    let c = this.first ? 0 : parked[p];
    for (let r = 0, bo = jj; r < dep; r++, bo += w) c += packedA[a0 + r] * packedB[bo];
    if (this.last) this.put(i * this.J + j, c);
    else parked[p] = c;
  }
}
