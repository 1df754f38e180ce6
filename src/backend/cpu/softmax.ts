/**
 * logSoftmax over the last dim
 *   x and out are (S, V): out[s, i] = x[s, i] - max_s - log(sum_j exp(x[s, j] - max_s))
 *
 * Subtracting the row max first keeps exp() in range for logits of any magnitude; the sum
 * runs in double precision so a 150k-entry vocabulary loses nothing to accumulation.
 */

export function logSoftmaxForward(out: Float32Array, x: Float32Array, S: number, V: number): void {
  for (let s = 0; s < S; s++) {
    const o = s * V;
    const lse = logSumExp(x, o, V);
    for (let i = 0; i < V; i++) out[o + i] = x[o + i] - lse;
  }
}

/** log(sum_i exp(x[o + i])) for i < V, stable for any magnitudes. */
export function logSumExp(x: Float32Array, o: number, V: number): number {
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (x[o + i] > max) max = x[o + i];
  if (max === -Infinity || max === Infinity) return max;
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp(x[o + i] - max);
  return max + Math.log(sum);
}
