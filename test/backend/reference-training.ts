/**
 * Float64 references for the backward and training ops, written the obvious way (dense loops,
 * explicit Jacobians where that is simplest) and independently of any backend. Like
 * reference.ts, inputs are the values a backend holds; outputs are float64.
 */
import type { AdamWStep } from '../../src/backend/backend.ts';
import { softmaxRef } from './reference.ts';

type Vec = ArrayLike<number>;

/** dx (T, K) = dy (T, N) @ w (N, K) */
export function linearBackwardInputRef(dy: Vec, w: Vec, T: number, K: number, N: number): Float64Array {
  const dx = new Float64Array(T * K);
  for (let t = 0; t < T; t++) {
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let n = 0; n < N; n++) s += dy[t * N + n] * w[n * K + k];
      dx[t * K + k] = s;
    }
  }
  return dx;
}

/** dw0 (N, K) + alpha * dy (T, N)^T @ x (T, K) */
export function linearBackwardWeightRef(dy: Vec, x: Vec, dw0: Vec, alpha: number, T: number, K: number, N: number): Float64Array {
  const dw = Float64Array.from(dw0);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let t = 0; t < T; t++) s += dy[t * N + n] * x[t * K + k];
      dw[n * K + k] += alpha * s;
    }
  }
  return dw;
}

/**
 * dx of y = x * rstd * w by its Jacobian, row by row:
 * dy_j/dx_c = w_j (delta_jc rstd - x_j x_c rstd^3 / C), rstd = 1 / sqrt(mean(x^2) + eps).
 */
export function rmsnormBackwardRef(dy: Vec, x: Vec, w: Vec, eps: number, R: number, C: number): Float64Array {
  const dx = new Float64Array(R * C);
  for (let r = 0; r < R; r++) {
    const o = r * C;
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[o + c] ** 2;
    const rstd = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let j = 0; j < C; j++) {
        const jac = w[j] * ((j === c ? rstd : 0) - (x[o + j] * x[o + c] * rstd ** 3) / C);
        s += dy[o + j] * jac;
      }
      dx[o + c] = s;
    }
  }
  return dx;
}

/**
 * The transpose of rope's rotation of (T, heads, D): for each pair (a, b) = (j, j + D/2) the
 * forward maps (a, b) -> (a c - b s, b c + a s), so the gradient maps (da, db) -> (da c + db s,
 * -da s + db c). Angles are position * invFreq rounded to f32, as in ropeRef.
 */
export function ropeBackwardRef(dy: Vec, positions: Vec, invFreq: Vec, T: number, heads: number, D: number): Float64Array {
  const half = D / 2;
  const dx = new Float64Array(T * heads * D);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * D;
      for (let j = 0; j < half; j++) {
        const angle = Math.fround(Math.fround(positions[t]) * invFreq[j]);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        dx[o + j] = dy[o + j] * c + dy[o + j + half] * s;
        dx[o + j + half] = -dy[o + j] * s + dy[o + j + half] * c;
      }
    }
  }
  return dx;
}

/** y = silu(g) * u: dGate = dy * u * silu'(g), dUp = dy * silu(g). */
export function swigluBackwardRef(dy: Vec, gate: Vec, up: Vec): { dGate: Float64Array; dUp: Float64Array } {
  const n = gate.length;
  const dGate = new Float64Array(n);
  const dUp = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    const sig = 1 / (1 + Math.exp(-g));
    dUp[i] = dy[i] * g * sig;
    dGate[i] = dy[i] * up[i] * (sig + g * sig * (1 - sig));
  }
  return { dGate, dUp };
}

/** Packed causal GQA attention: q (T, H, D), k and v (T, Hkv, D), sequences by cu (S+1). */
export function attentionPackedRef(
  q: Vec,
  k: Vec,
  v: Vec,
  cu: readonly number[],
  H: number,
  Hkv: number,
  D: number,
  scale: number,
): { out: Float64Array; lse: Float64Array } {
  const T = cu[cu.length - 1];
  const out = new Float64Array(T * H * D);
  const lse = new Float64Array(T * H);
  forEachRow(cu, H, Hkv, (t, h, g, r0) => {
    const scores = rowScores(q, k, t, h, g, r0, H, Hkv, D, scale);
    let max = -Infinity;
    for (const s of scores) max = Math.max(max, s);
    lse[t * H + h] = max + Math.log(scores.reduce((a, s) => a + Math.exp(s - max), 0));
    const p = softmaxRef(scores);
    for (let d = 0; d < D; d++) {
      let acc = 0;
      for (let j = 0; j < p.length; j++) acc += p[j] * v[((r0 + j) * Hkv + g) * D + d];
      out[(t * H + h) * D + d] = acc;
    }
  });
  return { out, lse };
}

/**
 * Gradients of sum(dout * attentionPacked(q, k, v)) by the textbook chain rule, from scratch:
 * P = softmax(S), dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(P * dP)), dQ = scale dS K,
 * dK = scale dS^T Q (summed over the query heads sharing a KV head).
 */
export function attentionPackedBackwardRef(
  dout: Vec,
  q: Vec,
  k: Vec,
  v: Vec,
  cu: readonly number[],
  H: number,
  Hkv: number,
  D: number,
  scale: number,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const T = cu[cu.length - 1];
  const dq = new Float64Array(T * H * D);
  const dk = new Float64Array(T * Hkv * D);
  const dv = new Float64Array(T * Hkv * D);
  forEachRow(cu, H, Hkv, (t, h, g, r0) => {
    const p = softmaxRef(rowScores(q, k, t, h, g, r0, H, Hkv, D, scale));
    const qo = (t * H + h) * D;
    const dp = p.map((_, j) => {
      let s = 0;
      for (let d = 0; d < D; d++) s += dout[qo + d] * v[((r0 + j) * Hkv + g) * D + d];
      return s;
    });
    const rowDot = p.reduce((a, pj, j) => a + pj * dp[j], 0);
    for (let j = 0; j < p.length; j++) {
      const ko = ((r0 + j) * Hkv + g) * D;
      const ds = p[j] * (dp[j] - rowDot);
      for (let d = 0; d < D; d++) {
        dv[ko + d] += p[j] * dout[qo + d];
        dq[qo + d] += scale * ds * k[ko + d];
        dk[ko + d] += scale * ds * q[qo + d];
      }
    }
  });
  return { dq, dk, dv };
}

/** Calls fn(row, head, kvHead, firstRowOfSequence) for every query row and head. */
function forEachRow(cu: readonly number[], H: number, Hkv: number, fn: (t: number, h: number, g: number, r0: number) => void): void {
  for (let s = 0; s + 1 < cu.length; s++) {
    for (let t = cu[s]; t < cu[s + 1]; t++) {
      for (let h = 0; h < H; h++) fn(t, h, Math.floor(h / (H / Hkv)), cu[s]);
    }
  }
}

/** scale * q[t, h] . k[j, g] for the rows j = r0..t of t's sequence. */
function rowScores(q: Vec, k: Vec, t: number, h: number, g: number, r0: number, H: number, Hkv: number, D: number, scale: number): Float64Array {
  const scores = new Float64Array(t - r0 + 1);
  for (let j = r0; j <= t; j++) {
    let dot = 0;
    for (let d = 0; d < D; d++) dot += q[(t * H + h) * D + d] * k[(j * Hkv + g) * D + d];
    scores[j - r0] = dot * scale;
  }
  return scores;
}

/** log softmax(logits[r] / temperature)[targets[r]] for each row of logits (R, V). */
export function tokenLogprobsRef(logits: Vec, targets: Vec, temperature: number, R: number, V: number): Float64Array {
  const out = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    const z = Array.from({ length: V }, (_, i) => logits[r * V + i] / temperature);
    // A loop, not Math.max(...z): a 150k-entry spread overflows the call stack.
    const max = z.reduce((m, zi) => (zi > m ? zi : m), -Infinity);
    const lse = max + Math.log(z.reduce((a, zi) => a + Math.exp(zi - max), 0));
    out[r] = z[targets[r]] - lse;
  }
  return out;
}

/** d/dlogits of sum_r dlogp[r] * tokenLogprobs[r] = (onehot - softmax(z)) * dlogp / temperature. */
export function tokenLogprobsBackwardRef(logits: Vec, targets: Vec, temperature: number, dlogp: Vec, R: number, V: number): Float64Array {
  const out = new Float64Array(R * V);
  for (let r = 0; r < R; r++) {
    const p = softmaxRef(Array.from({ length: V }, (_, i) => logits[r * V + i] / temperature));
    for (let i = 0; i < V; i++) out[r * V + i] = ((i === targets[r] ? 1 : 0) - p[i]) * (dlogp[r] / temperature);
  }
  return out;
}

/** Rows of src (R, C) added into rows idx of zeros (T, C). */
export function scatterRowsRef(src: Vec, idx: Vec, T: number, C: number): Float64Array {
  const out = new Float64Array(T * C);
  for (let r = 0; r < idx.length; r++) for (let c = 0; c < C; c++) out[idx[r] * C + c] += src[r * C + c];
  return out;
}

export function sumSquaresRef(x: Vec): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return s;
}

/** One torch.optim.AdamW step in float64: returns the new param, m and v. */
export function adamwRef(param: Vec, grad: Vec, m: Vec, v: Vec, h: AdamWStep): { param: Float64Array; m: Float64Array; v: Float64Array } {
  const n = param.length;
  const p1 = new Float64Array(n);
  const m1 = new Float64Array(n);
  const v1 = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const g = grad[i] * h.gradScale;
    m1[i] = h.beta1 * m[i] + (1 - h.beta1) * g;
    v1[i] = h.beta2 * v[i] + (1 - h.beta2) * g * g;
    const mHat = m1[i] / (1 - h.beta1 ** h.step);
    const vHat = v1[i] / (1 - h.beta2 ** h.step);
    p1[i] = param[i] * (1 - h.lr * h.weightDecay) - (h.lr * mHat) / (Math.sqrt(vHat) + h.eps);
  }
  return { param: p1, m: m1, v: v1 };
}
