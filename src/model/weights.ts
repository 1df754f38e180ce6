/**
 * Hugging Face tensor names -> backend tensors. Every tensor is read, checked against the
 * shape the config implies, uploaded, and dropped from host memory before the next one is
 * read, so loading needs the model's size once plus one tensor, not a copy of the file.
 */
import type { Backend, DType, Tensor } from '../backend/backend.ts';
import type { Checkpoint } from './checkpoint.ts';
import type { ModelConfig } from './config.ts';

export interface LayerWeights {
  inputNorm: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  o: Tensor;
  qBias?: Tensor;
  kBias?: Tensor;
  vBias?: Tensor;
  oBias?: Tensor;
  qNorm?: Tensor;
  kNorm?: Tensor;
  postNorm: Tensor;
  gate: Tensor;
  up: Tensor;
  down: Tensor;
  gateBias?: Tensor;
  upBias?: Tensor;
  downBias?: Tensor;
}

export interface ModelWeights {
  embed: Tensor;
  layers: LayerWeights[];
  finalNorm: Tensor;
  /** The same tensor as `embed` when the embeddings are tied. */
  lmHead: Tensor;
}

/** Every tensor a config implies, with its HF name and shape, in file order. */
export function expectedTensors(c: ModelConfig): { name: string; shape: number[] }[] {
  const C = c.hiddenSize;
  const qOut = c.numHeads * c.headDim;
  const kvOut = c.numKvHeads * c.headDim;
  const F = c.intermediateSize;
  const out: { name: string; shape: number[] }[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, C] }];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    out.push({ name: `${p}.input_layernorm.weight`, shape: [C] });
    out.push({ name: `${p}.self_attn.q_proj.weight`, shape: [qOut, C] });
    out.push({ name: `${p}.self_attn.k_proj.weight`, shape: [kvOut, C] });
    out.push({ name: `${p}.self_attn.v_proj.weight`, shape: [kvOut, C] });
    if (c.qkvBias) {
      out.push({ name: `${p}.self_attn.q_proj.bias`, shape: [qOut] });
      out.push({ name: `${p}.self_attn.k_proj.bias`, shape: [kvOut] });
      out.push({ name: `${p}.self_attn.v_proj.bias`, shape: [kvOut] });
    }
    out.push({ name: `${p}.self_attn.o_proj.weight`, shape: [C, qOut] });
    if (c.oBias) out.push({ name: `${p}.self_attn.o_proj.bias`, shape: [C] });
    if (c.qkNorm) {
      out.push({ name: `${p}.self_attn.q_norm.weight`, shape: [c.headDim] });
      out.push({ name: `${p}.self_attn.k_norm.weight`, shape: [c.headDim] });
    }
    out.push({ name: `${p}.post_attention_layernorm.weight`, shape: [C] });
    out.push({ name: `${p}.mlp.gate_proj.weight`, shape: [F, C] });
    out.push({ name: `${p}.mlp.up_proj.weight`, shape: [F, C] });
    out.push({ name: `${p}.mlp.down_proj.weight`, shape: [C, F] });
    if (c.mlpBias) {
      out.push({ name: `${p}.mlp.gate_proj.bias`, shape: [F] });
      out.push({ name: `${p}.mlp.up_proj.bias`, shape: [F] });
      out.push({ name: `${p}.mlp.down_proj.bias`, shape: [C] });
    }
  }
  out.push({ name: 'model.norm.weight', shape: [C] });
  if (!c.tieWordEmbeddings) out.push({ name: 'lm_head.weight', shape: [c.vocabSize, C] });
  return out;
}

/** Bytes the weights of `cfg` take stored in `dtype` (before any allocator rounding). */
export function weightBytes(cfg: ModelConfig, dtype: DType): number {
  const bytesPer = dtype === 'bf16' || dtype === 'f16' ? 2 : 4;
  let n = 0;
  for (const { shape } of expectedTensors(cfg)) n += shape.reduce((a, b) => a * b, 1);
  return n * bytesPer;
}

/** Load every weight of `cfg` from `ckpt` onto `backend` in `dtype` (default: the backend's preferred one). */
export function loadWeights(backend: Backend, cfg: ModelConfig, ckpt: Checkpoint, dtype: DType = backend.preferredDtype): ModelWeights {
  const loaded = new Map<string, Tensor>();
  for (const { name, shape } of expectedTensors(cfg)) loaded.set(name, backend.upload(ckpt.read(name, shape), shape, dtype));
  return assemble(cfg, loaded);
}

/**
 * The same, yielding to the event loop after every tensor, so a server stays responsive
 * (health answers 503 "loading") while a multi-gigabyte checkpoint streams in.
 */
export async function loadWeightsAsync(
  backend: Backend,
  cfg: ModelConfig,
  ckpt: Checkpoint,
  dtype: DType = backend.preferredDtype,
): Promise<ModelWeights> {
  const loaded = new Map<string, Tensor>();
  for (const { name, shape } of expectedTensors(cfg)) {
    loaded.set(name, backend.upload(ckpt.read(name, shape), shape, dtype));
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  return assemble(cfg, loaded);
}

function assemble(cfg: ModelConfig, loaded: Map<string, Tensor>): ModelWeights {
  const get = (name: string): Tensor => loaded.get(name)!;
  const opt = (name: string): Tensor | undefined => loaded.get(name);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    layers.push({
      inputNorm: get(`${p}.input_layernorm.weight`),
      q: get(`${p}.self_attn.q_proj.weight`),
      k: get(`${p}.self_attn.k_proj.weight`),
      v: get(`${p}.self_attn.v_proj.weight`),
      o: get(`${p}.self_attn.o_proj.weight`),
      qBias: opt(`${p}.self_attn.q_proj.bias`),
      kBias: opt(`${p}.self_attn.k_proj.bias`),
      vBias: opt(`${p}.self_attn.v_proj.bias`),
      oBias: opt(`${p}.self_attn.o_proj.bias`),
      qNorm: opt(`${p}.self_attn.q_norm.weight`),
      kNorm: opt(`${p}.self_attn.k_norm.weight`),
      postNorm: get(`${p}.post_attention_layernorm.weight`),
      gate: get(`${p}.mlp.gate_proj.weight`),
      up: get(`${p}.mlp.up_proj.weight`),
      down: get(`${p}.mlp.down_proj.weight`),
      gateBias: opt(`${p}.mlp.gate_proj.bias`),
      upBias: opt(`${p}.mlp.up_proj.bias`),
      downBias: opt(`${p}.mlp.down_proj.bias`),
    });
  }
  const embed = get('model.embed_tokens.weight');
  return {
    embed,
    layers,
    finalNorm: get('model.norm.weight'),
    lmHead: cfg.tieWordEmbeddings ? embed : get('lm_head.weight'),
  };
}
