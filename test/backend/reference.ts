/**
 * Float64 reference implementations of the backend ops, for the conformance suite.
 *
 * Written the obvious way (dense, contiguous, no blocking, no paging) and independently of any
 * backend: inputs are the values the backend actually holds (downloaded after upload), outputs
 * are float64, and the suite compares with a tolerance per backend.
 */
import type { SamplingParams } from '../../src/backend/backend.ts';
import { uniformAt } from '../../src/backend/rng.ts';

type Vec = ArrayLike<number>;

/** x (T, K) @ w (N, K)^T + bias (N) -> (T, N) */
export function linearRef(x: Vec, w: Vec, bias: Vec | null, T: number, K: number, N: number): Float64Array {
  const y = new Float64Array(T * N);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += x[t * K + k] * w[n * K + k];
      y[t * N + n] = s;
    }
  }
  return y;
}

/** x (R, C), w (C) -> x / sqrt(mean(x^2) + eps) * w */
export function rmsnormRef(x: Vec, w: Vec, eps: number, R: number, C: number): Float64Array {
  const y = new Float64Array(R * C);
  for (let r = 0; r < R; r++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[r * C + c] ** 2;
    const inv = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) y[r * C + c] = x[r * C + c] * inv * w[c];
  }
  return y;
}

export function addRef(a: Vec, b: Vec): Float64Array {
  return Float64Array.from({ length: a.length }, (_, i) => a[i] + b[i]);
}

/**
 * Rotary embedding of x (T, heads, D), NeoX half-rotation. The angle is position * invFreq
 * rounded to f32, as transformers computes it (the backend contract follows transformers);
 * cos, sin and the rotation are float64.
 */
export function ropeRef(x: Vec, positions: Vec, invFreq: Vec, T: number, heads: number, D: number): Float64Array {
  const half = D / 2;
  const y = new Float64Array(T * heads * D);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * D;
      for (let j = 0; j < half; j++) {
        const angle = Math.fround(Math.fround(positions[t]) * invFreq[j]);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        const a = x[o + j];
        const b = x[o + j + half];
        y[o + j] = a * c - b * s;
        y[o + j + half] = b * c + a * s;
      }
    }
  }
  return y;
}

/** One sequence for attentionRef: its whole K/V, contiguous, and its query rows (the last qlen). */
export interface DenseSequence {
  k: Vec; // (ctx, Hkv, D)
  v: Vec; // (ctx, Hkv, D)
  q: Vec; // (qlen, H, D)
  ctx: number;
  qlen: number;
}

/** Causal GQA attention per sequence, packed back into (sum qlen, H, D). */
export function attentionRef(seqs: readonly DenseSequence[], H: number, Hkv: number, D: number, scale: number): Float64Array {
  const group = H / Hkv;
  const T = seqs.reduce((n, s) => n + s.qlen, 0);
  const out = new Float64Array(T * H * D);
  let row = 0;
  for (const s of seqs) {
    for (let i = 0; i < s.qlen; i++, row++) {
      const last = s.ctx - s.qlen + i;
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / group);
        const scores = new Float64Array(last + 1);
        for (let p = 0; p <= last; p++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += s.q[(i * H + h) * D + d] * s.k[(p * Hkv + g) * D + d];
          scores[p] = dot * scale;
        }
        const probs = softmaxRef(scores);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let p = 0; p <= last; p++) acc += probs[p] * s.v[(p * Hkv + g) * D + d];
          out[(row * H + h) * D + d] = acc;
        }
      }
    }
  }
  return out;
}

export function softmaxRef(x: Vec): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) max = Math.max(max, x[i]);
  const e = Float64Array.from({ length: x.length }, (_, i) => Math.exp(x[i] - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

/** Log-softmax of each row of x (S, V). */
export function logSoftmaxRef(x: Vec, S: number, V: number): Float64Array {
  const y = new Float64Array(S * V);
  for (let s = 0; s < S; s++) {
    let max = -Infinity;
    for (let i = 0; i < V; i++) max = Math.max(max, x[s * V + i]);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += Math.exp(x[s * V + i] - max);
    const lse = max + Math.log(sum);
    for (let i = 0; i < V; i++) y[s * V + i] = x[s * V + i] - lse;
  }
  return y;
}

/** silu(gate) * up */
export function swigluRef(gate: Vec, up: Vec): Float64Array {
  return Float64Array.from({ length: gate.length }, (_, i) => (gate[i] / (1 + Math.exp(-gate[i]))) * up[i]);
}

/** Rows idx of x (rows, C). */
export function gatherRowsRef(x: Vec, idx: Vec, C: number): Float64Array {
  const y = new Float64Array(idx.length * C);
  for (let r = 0; r < idx.length; r++) for (let c = 0; c < C; c++) y[r * C + c] = x[idx[r] * C + c];
  return y;
}

export function argmaxRef(x: Vec): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** The tokens a row may produce under `p` (temperature > 0), in draw order, with their probabilities. */
export interface KeptSet {
  ids: number[];
  /** Renormalised over the kept set, in the order of `ids`. */
  probs: number[];
  /**
   * How far the top-p and min-p decisions were from flipping (relative); a test whose set
   * must be unambiguous checks this is not tiny.
   */
  margin: number;
}

/**
 * The sampling filters of the contract, by full sort: order by probability (ties by lower id),
 * top-k prefix, renormalise, top-p prefix, min-p, renormalise.
 */
export function keptSetRef(logits: Vec, p: SamplingParams): KeptSet {
  const V = logits.length;
  const scaled = Array.from({ length: V }, (_, i) => logits[i] / p.temperature);
  const probs = softmaxRef(scaled);
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => (probs[a] !== probs[b] ? probs[b] - probs[a] : a - b));
  let ids = p.topK > 0 && p.topK < V ? order.slice(0, p.topK) : order;
  let margin = Infinity;
  if (p.topP < 1) {
    const mass = ids.reduce((s, i) => s + probs[i], 0);
    let cum = 0;
    let cut = ids.length;
    for (let j = 0; j < ids.length; j++) {
      const before = cum;
      cum += probs[ids[j]] / mass;
      if (cum >= p.topP) {
        cut = j + 1;
        margin = Math.min(margin, cum - p.topP, p.topP - before);
        break;
      }
    }
    ids = ids.slice(0, cut);
  }
  if (p.minP > 0) {
    const pmax = probs[ids[0]];
    const kept = ids.filter((i) => probs[i] >= p.minP * pmax);
    for (const i of ids) margin = Math.min(margin, Math.abs(probs[i] / pmax - p.minP));
    ids = kept;
  }
  const total = ids.reduce((s, i) => s + probs[i], 0);
  return { ids, probs: ids.map((i) => probs[i] / total), margin };
}

/**
 * The token the contract prescribes for (logits, params): argmax at temperature 0, else the
 * inverse-CDF draw over keptSetRef with u = uniformAt(seed, step). `ambiguous` flags draws that
 * land within 1e-6 of a boundary, where float rounding may legitimately go either way.
 */
export function sampleRef(logits: Vec, p: SamplingParams): { id: number; ambiguous: boolean } {
  if (p.temperature === 0) return { id: argmaxRef(logits), ambiguous: false };
  const kept = keptSetRef(logits, p);
  const u = uniformAt(p.seed, p.step);
  let cum = 0;
  for (let j = 0; j < kept.ids.length; j++) {
    cum += kept.probs[j];
    if (cum > u) return { id: kept.ids[j], ambiguous: Math.abs(cum - u) < 1e-6 || (j > 0 && Math.abs(cum - kept.probs[j] - u) < 1e-6) };
  }
  return { id: kept.ids[kept.ids.length - 1], ambiguous: true };
}
