/**
 * attentionPacked: causal GQA attention inside each packed sequence, without a KV cache (the
 * training forward), and its backward.
 *   q, out, dout, dq are (T, H, D); k, v, dk, dv are (T, Hkv, D); lse is (T, H);
 *   cuSeqlens is (S+1) i32: rows [cuSeqlens[s], cuSeqlens[s+1]) are sequence s.
 *
 * Row i of a sequence attends to rows 0..i of the same sequence; query head h reads KV head
 * floor(h / (H / Hkv)) (consecutive query heads share a KV head, as transformers' repeat_kv).
 * With scores s_j = scale * q . k_j (j <= i):
 *   forward:  lse = log(sum_j exp(s_j)),  out = sum_j exp(s_j - lse) v_j
 *   backward: p_j = exp(s_j - lse) (recomputed from the saved lse, as FlashAttention does),
 *             delta = dout . out,  ds_j = p_j (dout . v_j - delta),
 *             dq = scale * sum_j ds_j k_j,  dk_j += scale * ds_j q,  dv_j += p_j dout
 * where dk and dv sum over every query row and every query head of the KV head's group.
 *
 * Everything runs in double precision over j ascending (then heads ascending for dk / dv) and
 * rounds once on store, on one thread: the same bits on every run. The max is subtracted before
 * exp in the forward, so no score overflows; the backward's exponents s_j - lse are <= 0 up to
 * lse's f32 rounding.
 */

/** Per-call buffers, grown on demand and kept by the backend. */
export class PackedAttentionWorkspace {
  scores = new Float64Array(0);
  /** One output / dq row, then the dk and dv sums of one sequence's KV head. */
  row = new Float64Array(0);
  dk = new Float64Array(0);
  dv = new Float64Array(0);

  ensure(maxLen: number, D: number): void {
    if (this.scores.length < maxLen) this.scores = new Float64Array(maxLen);
    if (this.row.length < D) this.row = new Float64Array(D);
    if (this.dk.length < maxLen * D) {
      this.dk = new Float64Array(maxLen * D);
      this.dv = new Float64Array(maxLen * D);
    }
  }

  get bytes(): number {
    return this.scores.byteLength + this.row.byteLength + this.dk.byteLength + this.dv.byteLength;
  }
}

export interface PackedAttentionDims {
  S: number;
  H: number;
  Hkv: number;
  D: number;
}

/**
 * Whether cuSeqlens runs from 0 to T without decreasing; returns a description of the first
 * problem, or null. Also gives the longest sequence.
 */
export function checkCuSeqlens(cu: Int32Array, S: number, T: number): { error: string | null; maxLen: number } {
  if (cu[0] !== 0 || cu[S] !== T) return { error: `cuSeqlens must run from 0 to T = ${T}, got ${cu[0]} .. ${cu[S]}`, maxLen: 0 };
  let maxLen = 0;
  for (let s = 0; s < S; s++) {
    const len = cu[s + 1] - cu[s];
    if (len < 0) return { error: `cuSeqlens decreases at sequence ${s} (${cu[s]} -> ${cu[s + 1]})`, maxLen: 0 };
    maxLen = Math.max(maxLen, len);
  }
  return { error: null, maxLen };
}

export function attentionPackedForward(
  out: Float32Array,
  lse: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  cu: Int32Array,
  dims: PackedAttentionDims,
  scale: number,
  ws: PackedAttentionWorkspace,
): void {
  const { S, H, Hkv, D } = dims;
  const group = H / Hkv;
  const { scores, row } = ws;
  for (let s = 0; s < S; s++) {
    const r0 = cu[s];
    const len = cu[s + 1] - r0;
    for (let i = 0; i < len; i++) {
      for (let h = 0; h < H; h++) {
        const g = (h / group) | 0;
        const qo = ((r0 + i) * H + h) * D;
        let max = -Infinity;
        for (let j = 0; j <= i; j++) {
          const ko = ((r0 + j) * Hkv + g) * D;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qo + d] * k[ko + d];
          const sc = dot * scale;
          scores[j] = sc;
          if (sc > max) max = sc;
        }
        row.fill(0, 0, D);
        let sum = 0;
        for (let j = 0; j <= i; j++) {
          const e = Math.exp(scores[j] - max);
          sum += e;
          const vo = ((r0 + j) * Hkv + g) * D;
          for (let d = 0; d < D; d++) row[d] += e * v[vo + d];
        }
        for (let d = 0; d < D; d++) out[qo + d] = row[d] / sum;
        lse[(r0 + i) * H + h] = max + Math.log(sum);
      }
    }
  }
}

export function attentionPackedBackward(
  dq: Float32Array,
  dk: Float32Array,
  dv: Float32Array,
  dout: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  out: Float32Array,
  lse: Float32Array,
  cu: Int32Array,
  dims: PackedAttentionDims,
  scale: number,
  ws: PackedAttentionWorkspace,
): void {
  const { S, H, Hkv, D } = dims;
  const group = H / Hkv;
  const { row } = ws;
  const dkSum = ws.dk;
  const dvSum = ws.dv;
  for (let s = 0; s < S; s++) {
    const r0 = cu[s];
    const len = cu[s + 1] - r0;
    for (let g = 0; g < Hkv; g++) {
      dkSum.fill(0, 0, len * D);
      dvSum.fill(0, 0, len * D);
      for (let h = g * group; h < (g + 1) * group; h++) {
        for (let i = 0; i < len; i++) {
          const qo = ((r0 + i) * H + h) * D;
          const l = lse[(r0 + i) * H + h];
          let delta = 0;
          for (let d = 0; d < D; d++) delta += dout[qo + d] * out[qo + d];
          row.fill(0, 0, D);
          for (let j = 0; j <= i; j++) {
            const ko = ((r0 + j) * Hkv + g) * D;
            let dot = 0;
            let dp = 0;
            for (let d = 0; d < D; d++) {
              dot += q[qo + d] * k[ko + d];
              dp += dout[qo + d] * v[ko + d];
            }
            const p = Math.exp(dot * scale - l);
            const ds = p * (dp - delta);
            const dss = ds * scale;
            const jo = j * D;
            for (let d = 0; d < D; d++) {
              row[d] += ds * k[ko + d];
              dkSum[jo + d] += dss * q[qo + d];
              dvSum[jo + d] += p * dout[qo + d];
            }
          }
          for (let d = 0; d < D; d++) dq[qo + d] = scale * row[d];
        }
      }
      for (let j = 0; j < len; j++) {
        const ko = ((r0 + j) * Hkv + g) * D;
        for (let d = 0; d < D; d++) {
          dk[ko + d] = dkSum[j * D + d];
          dv[ko + d] = dvSum[j * D + d];
        }
      }
    }
  }
}
