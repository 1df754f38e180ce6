/**
 * Row gathers.
 *   embedding:  ids is (T) i32, table is (V, C), out is (T, C): out[t] = table[ids[t]]
 *   gatherRows: idx is (R) i32, x is (T, C), out is (R, C):    out[r] = x[idx[r]]
 * Both are the same copy; the callers check the index range with their own error messages.
 *   scatterRows: src is (R, C), idx is (R) i32, out is (T, C): out = 0, then out[idx[r]] += src[r]
 *     for r ascending; the adjoint of gatherRows, so rows named twice add up.
 */

export function gatherRowsForward(out: Float32Array, src: Float32Array, idx: Int32Array, R: number, C: number): void {
  for (let r = 0; r < R; r++) {
    const from = idx[r] * C;
    out.set(src.subarray(from, from + C), r * C);
  }
}

/** Index of the first id outside [0, rows), or -1 when all are in range. */
export function firstOutOfRange(idx: Int32Array, n: number, rows: number): number {
  for (let i = 0; i < n; i++) if (idx[i] < 0 || idx[i] >= rows) return i;
  return -1;
}

export function scatterRowsForward(out: Float32Array, src: Float32Array, idx: Int32Array, R: number, C: number): void {
  out.fill(0);
  for (let r = 0; r < R; r++) {
    const to = idx[r] * C;
    const from = r * C;
    for (let c = 0; c < C; c++) out[to + c] += src[from + c];
  }
}
