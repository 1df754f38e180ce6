/**
 * A dense float64 forward pass of the same architecture, written independently of the
 * Backend (plain loops, no KV cache, no packing), as the whole-model reference for tests.
 */
import type { ModelConfig } from '../../src/model/config.ts';

export type WeightMap = Map<string, Float64Array>;

function linear(x: Float64Array, T: number, K: number, w: Float64Array, N: number, b?: Float64Array): Float64Array {
  const y = new Float64Array(T * N);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      let s = b ? b[n] : 0;
      for (let k = 0; k < K; k++) s += x[t * K + k] * w[n * K + k];
      y[t * N + n] = s;
    }
  }
  return y;
}

function rmsnorm(x: Float64Array, rows: number, C: number, w: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < C; i++) ss += x[r * C + i] ** 2;
    const inv = 1 / Math.sqrt(ss / C + eps);
    for (let i = 0; i < C; i++) y[r * C + i] = x[r * C + i] * inv * w[i];
  }
  return y;
}

function rope(x: Float64Array, T: number, heads: number, D: number, invFreq: Float32Array): void {
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * D;
      for (let j = 0; j < half; j++) {
        const a = t * invFreq[j];
        const c = Math.cos(a);
        const s = Math.sin(a);
        const x1 = x[base + j];
        const x2 = x[base + j + half];
        x[base + j] = x1 * c - x2 * s;
        x[base + j + half] = x2 * c + x1 * s;
      }
    }
  }
}

/** Logits [T, V] for one sequence `ids` starting at position 0. */
export function referenceLogits(cfg: ModelConfig, w: WeightMap, invFreq: Float32Array, ids: readonly number[]): Float64Array {
  const T = ids.length;
  const C = cfg.hiddenSize;
  const { numHeads: H, numKvHeads: Hkv, headDim: D, intermediateSize: F } = cfg;
  const get = (n: string): Float64Array => {
    const v = w.get(n);
    if (!v) throw new Error(`reference: missing ${n}`);
    return v;
  };
  const embed = get('model.embed_tokens.weight');
  let h: Float64Array = new Float64Array(T * C);
  ids.forEach((id, t) => h.set(embed.subarray(id * C, (id + 1) * C), t * C));
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const x = rmsnorm(h, T, C, get(`${p}.input_layernorm.weight`), cfg.rmsNormEps);
    let q = linear(x, T, C, get(`${p}.self_attn.q_proj.weight`), H * D, w.get(`${p}.self_attn.q_proj.bias`));
    let k = linear(x, T, C, get(`${p}.self_attn.k_proj.weight`), Hkv * D, w.get(`${p}.self_attn.k_proj.bias`));
    const v = linear(x, T, C, get(`${p}.self_attn.v_proj.weight`), Hkv * D, w.get(`${p}.self_attn.v_proj.bias`));
    if (cfg.qkNorm) {
      q = rmsnorm(q, T * H, D, get(`${p}.self_attn.q_norm.weight`), cfg.rmsNormEps);
      k = rmsnorm(k, T * Hkv, D, get(`${p}.self_attn.k_norm.weight`), cfg.rmsNormEps);
    }
    rope(q, T, H, D, invFreq);
    rope(k, T, Hkv, D, invFreq);
    const attn = new Float64Array(T * H * D);
    const group = H / Hkv;
    for (let t = 0; t < T; t++) {
      for (let hh = 0; hh < H; hh++) {
        const kh = Math.floor(hh / group);
        const scores = new Float64Array(t + 1);
        let max = -Infinity;
        for (let s = 0; s <= t; s++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[(t * H + hh) * D + d] * k[(s * Hkv + kh) * D + d];
          scores[s] = dot / Math.sqrt(D);
          max = Math.max(max, scores[s]);
        }
        let sum = 0;
        for (let s = 0; s <= t; s++) sum += (scores[s] = Math.exp(scores[s] - max));
        for (let s = 0; s <= t; s++) {
          for (let d = 0; d < D; d++) attn[(t * H + hh) * D + d] += (scores[s] / sum) * v[(s * Hkv + kh) * D + d];
        }
      }
    }
    const o = linear(attn, T, H * D, get(`${p}.self_attn.o_proj.weight`), C, w.get(`${p}.self_attn.o_proj.bias`));
    for (let i = 0; i < h.length; i++) h[i] += o[i];
    const x2 = rmsnorm(h, T, C, get(`${p}.post_attention_layernorm.weight`), cfg.rmsNormEps);
    const g = linear(x2, T, C, get(`${p}.mlp.gate_proj.weight`), F, w.get(`${p}.mlp.gate_proj.bias`));
    const u = linear(x2, T, C, get(`${p}.mlp.up_proj.weight`), F, w.get(`${p}.mlp.up_proj.bias`));
    for (let i = 0; i < g.length; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
    const d = linear(g, T, F, get(`${p}.mlp.down_proj.weight`), C, w.get(`${p}.mlp.down_proj.bias`));
    for (let i = 0; i < h.length; i++) h[i] += d[i];
  }
  h = rmsnorm(h, T, C, get('model.norm.weight'), cfg.rmsNormEps);
  const head = cfg.tieWordEmbeddings ? embed : get('lm_head.weight');
  return linear(h, T, C, head, cfg.vocabSize);
}
