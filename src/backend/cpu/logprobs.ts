/**
 * tokenLogprobs: log-probability of each row's target token under softmax(logits / temperature)
 *   logits is (R, V), targets is (R) i32, out is (R):
 *     out[r] = z[t] - log(sum_v exp(z[v])),  z = logits[r] / temperature,  t = targets[r]
 * tokenLogprobsBackward: the gradient of sum_r dlogp[r] * out[r] w.r.t. logits, (R, V):
 *     dlogits[r, v] = (onehot(t)[v] - softmax(z)[v]) * dlogp[r] / temperature
 *
 * The row max is subtracted before exp (temperature > 0, so it is also z's max), so logits of
 * any magnitude stay finite; sums run in double precision, one rounding on store. The backward
 * recomputes the softmax from the logits (two passes over the row, then one to write), so the
 * caller keeps nothing of [R, V] between forward and backward.
 */

/** max of the row and log(sum exp((x - max) / temperature)), in double. */
function rowStats(logits: Float32Array, o: number, V: number, invT: number): { max: number; logSum: number } {
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (logits[o + i] > max) max = logits[o + i];
  let sum = 0;
  for (let i = 0; i < V; i++) sum += Math.exp((logits[o + i] - max) * invT);
  return { max, logSum: Math.log(sum) };
}

export function tokenLogprobsForward(
  out: Float32Array,
  logits: Float32Array,
  targets: Int32Array,
  temperature: number,
  R: number,
  V: number,
): void {
  const invT = 1 / temperature;
  for (let r = 0; r < R; r++) {
    const o = r * V;
    const { max, logSum } = rowStats(logits, o, V, invT);
    out[r] = (logits[o + targets[r]] - max) * invT - logSum;
  }
}

export function tokenLogprobsBackward(
  dlogits: Float32Array,
  logits: Float32Array,
  targets: Int32Array,
  temperature: number,
  dlogp: Float32Array,
  R: number,
  V: number,
): void {
  const invT = 1 / temperature;
  for (let r = 0; r < R; r++) {
    const o = r * V;
    const c = dlogp[r] * invT;
    if (c === 0) {
      // A row that does not reach the loss (padding, a masked token): no need to look at it.
      dlogits.fill(0, o, o + V);
      continue;
    }
    const { max, logSum } = rowStats(logits, o, V, invT);
    for (let i = 0; i < V; i++) dlogits[o + i] = -c * Math.exp((logits[o + i] - max) * invT - logSum);
    const t = o + targets[r];
    dlogits[t] = c * (1 - Math.exp((logits[t] - max) * invT - logSum));
  }
}
