/**
 * sample: one token per row of logits (S, V) under per-row SamplingParams.
 *
 * The contract (backend.ts), per row, with tokens ordered by probability descending and ties by
 * lower id (equivalently by logit, since temperature > 0 is monotone):
 *   temperature 0       -> argmax of the raw logits, lowest id on ties;
 *   otherwise            p = softmax(logits / temperature), then
 *   top-k                keep the k first tokens of the order,
 *   top-p                keep the smallest prefix of those whose mass, renormalised over the
 *                        top-k set, reaches topP,
 *   min-p                drop tokens with p < minP * p_max (a ratio, so renormalising is moot),
 *   draw                 walk the kept tokens in the same order and pick the first whose
 *                        cumulative mass exceeds u * (kept mass), u = uniformAt(seed, step).
 *
 * Every filter keeps a prefix of the order, so only a prefix ever needs sorting:
 * - with top-k, a size-k heap selects the k best in one pass (no full sort), then sorts k;
 * - without it, tokens with weight >= tau are collected and sorted, tau starting high and
 *   dropping until the collected prefix provably contains the answer (every token left out
 *   weighs < tau, so they cannot hold the mass still needed). Flat distributions end up
 *   sorting more of the vocabulary; peaked ones, the usual case, a handful of tokens.
 * Weights are exp((logit - max) / temperature) in double precision, so the top token weighs 1.
 */
import type { SamplingParams } from '../backend.ts';

/** Reusable per-backend buffers sized to the vocabulary: weights, sort keys, candidate ids. */
export class SamplingWorkspace {
  weights = new Float64Array(0);
  keys = new Float64Array(0);
  ids = new Int32Array(0);

  ensure(V: number): void {
    if (this.weights.length < V) {
      this.weights = new Float64Array(V);
      this.keys = new Float64Array(V);
      this.ids = new Int32Array(V);
    }
  }

  get bytes(): number {
    return this.weights.byteLength + this.keys.byteLength + this.ids.byteLength;
  }
}

/**
 * Sort keys: a number whose ascending order is (logit descending, id ascending), so candidates
 * sort with the typed-array numeric sort (several times faster than a comparator). The f32
 * logit's bits, mapped to an unsigned integer in value order and complemented, fill the top 32
 * of 53 exact bits; the id the low 21 (vocabularies up to 2M tokens).
 */
const ID_BITS = 2 ** 21;

function sortKey(bits: Uint32Array, o: number, id: number): number {
  const b = bits[o + id] === 0x80000000 ? 0 : bits[o + id]; // -0 ties with +0
  const ordered = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
  return (0xffffffff - ordered) * ID_BITS + id;
}

/** Sort ids[0..n) into the order (logit desc, id asc), through ws.keys. */
function sortCandidates(bits: Uint32Array, o: number, ids: Int32Array, n: number, keys: Float64Array): void {
  for (let j = 0; j < n; j++) keys[j] = sortKey(bits, o, ids[j]);
  keys.subarray(0, n).sort();
  for (let j = 0; j < n; j++) ids[j] = keys[j] % ID_BITS;
}

/** Throws a message naming the row and the parameter when a row's params are unusable. */
export function checkSamplingParams(p: SamplingParams, row: number): void {
  // (no closure per call: this runs for every row of every step)
  if (!(p.temperature >= 0) || !Number.isFinite(p.temperature)) badRow(row, `temperature must be a finite number >= 0, got ${p.temperature}`);
  if (!Number.isInteger(p.topK)) badRow(row, `topK must be an integer (<= 0 disables it), got ${p.topK}`);
  if (!(p.topP > 0 && p.topP <= 1)) badRow(row, `topP must be in (0, 1] (1 disables it), got ${p.topP}`);
  if (!(p.minP >= 0 && p.minP <= 1)) badRow(row, `minP must be in [0, 1] (0 disables it), got ${p.minP}`);
  if (!Number.isSafeInteger(p.seed)) badRow(row, `seed must be a safe integer, got ${p.seed}`);
  if (!Number.isSafeInteger(p.step) || p.step < 0) badRow(row, `step must be an integer >= 0, got ${p.step}`);
}

/** The error of a row whose sampling params are unusable. */
export function badRow(row: number, what: string): never {
  throw new Error(`sample: row ${row}: ${what}`);
}

/** Index of the largest x[o + i], i < V; the lowest index on ties. */
export function argmax(x: Float32Array, o: number, V: number): number {
  let best = 0;
  let max = x[o];
  for (let i = 1; i < V; i++) {
    if (x[o + i] > max) {
      max = x[o + i];
      best = i;
    }
  }
  return best;
}

/** The token of row x[o .. o+V) under `p` (temperature > 0) with uniform u in [0, 1). */
export function sampleFiltered(x: Float32Array, o: number, V: number, p: SamplingParams, u: number, ws: SamplingWorkspace): number {
  ws.ensure(V);
  const w = ws.weights;
  const ids = ws.ids;
  if (V > ID_BITS) throw new Error(`sample: a vocabulary of ${V} exceeds the ${ID_BITS} this sampler handles`);
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const top = argmax(x, o, V);
  const max = x[o + top];
  if (max === Infinity) return top; // all the mass is on the (first) +inf logit
  for (let i = 0; i < V; i++) w[i] = Math.exp((x[o + i] - max) / p.temperature);
  const minW = p.minP; // the top token weighs exactly 1, so min-p is a weight floor
  const topP = p.topP < 1 ? p.topP : 0;

  if (p.topK > 0 && p.topK < V) {
    const n = selectTopK(x, o, V, p.topK, ids);
    sortCandidates(bits, o, ids, n, ws.keys);
    let mass = 0;
    for (let j = 0; j < n; j++) mass += w[ids[j]];
    return drawFromPrefix(w, ids, n, true, mass, 0, topP, minW, u);
  }

  let total = 0;
  let keptByMinP = 0;
  for (let i = 0; i < V; i++) {
    total += w[i];
    if (w[i] >= minW) keptByMinP += w[i];
  }
  let tau = Math.max(minW, 1 / 64);
  for (;;) {
    let n = 0;
    for (let i = 0; i < V; i++) if (w[i] >= tau) ids[n++] = i;
    sortCandidates(bits, o, ids, n, ws.keys);
    const complete = tau <= minW || tau === 0;
    const id = drawFromPrefix(w, ids, n, complete, total, keptByMinP, topP, minW, u);
    if (id >= 0) return id;
    // Everything left out weighs < tau each, < V * tau in all; below 2^-80 that is under one
    // rounding error of the mass (>= 1), so the next round takes every remaining token.
    tau /= 64;
    if (tau <= minW) tau = minW;
    else if (tau < 2 ** -80) tau = 0;
  }
}

/**
 * Decide the kept prefix and draw from it, given the first n tokens of the order in ids.
 * `complete` says these n include every token that could be kept. `total` is the top-p
 * normaliser; `keptByMinP` the mass of all tokens passing min-p (used when top-p is off).
 * Returns -1 when the prefix is too short to decide.
 */
function drawFromPrefix(
  w: Float64Array,
  ids: Int32Array,
  n: number,
  complete: boolean,
  total: number,
  keptByMinP: number,
  topP: number,
  minW: number,
  u: number,
): number {
  let kept = -1;
  let mass = 0;
  for (let j = 0; j < n; j++) {
    const wj = w[ids[j]];
    if (wj < minW) {
      kept = j;
      break;
    }
    mass += wj;
    if (topP > 0 && mass >= topP * total) {
      kept = j + 1;
      break;
    }
  }
  if (kept < 0) {
    if (complete) kept = n;
    else if (topP > 0) return -1; // the top-p prefix runs past the candidates
    else {
      // No top-p: the kept set is everything passing min-p, whose mass is known; the draw is
      // decided if it lands inside the candidates.
      const target = u * keptByMinP;
      let cum = 0;
      for (let j = 0; j < n; j++) {
        cum += w[ids[j]];
        if (cum > target) return ids[j];
      }
      return -1;
    }
  }
  const target = u * mass;
  let cum = 0;
  for (let j = 0; j < kept; j++) {
    cum += w[ids[j]];
    if (cum > target) return ids[j];
  }
  return ids[kept - 1]; // only reachable through rounding: u * mass rounded up to mass
}

/**
 * The k best tokens (by logit, lower id on ties) in ids[0..k), unordered: a min-heap whose root
 * is the worst kept token, so most tokens cost one comparison.
 */
function selectTopK(x: Float32Array, o: number, V: number, k: number, ids: Int32Array): number {
  // worse(a, b): a ranks after b.
  const worse = (a: number, b: number): boolean => {
    const xa = x[o + a];
    const xb = x[o + b];
    return xa < xb || (xa === xb && a > b);
  };
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      if (l >= k) return;
      const r = l + 1;
      const c = r < k && worse(ids[r], ids[l]) ? r : l;
      if (!worse(ids[c], ids[i])) return;
      const t = ids[i];
      ids[i] = ids[c];
      ids[c] = t;
      i = c;
    }
  };
  for (let i = 0; i < k; i++) ids[i] = i;
  for (let i = (k >> 1) - 1; i >= 0; i--) siftDown(i);
  for (let i = k; i < V; i++) {
    if (worse(ids[0], i)) {
      ids[0] = i;
      siftDown(0);
    }
  }
  return k;
}
