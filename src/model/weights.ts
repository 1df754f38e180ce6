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

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Bytes the weights of `cfg` take stored in `dtype` (before any allocator rounding). */
export function weightBytes(cfg: ModelConfig, dtype: DType): number {
  const bytesPer = dtype === 'bf16' || dtype === 'f16' ? 2 : 4;
  let n = 0;
  for (const { shape } of expectedTensors(cfg)) n += numel(shape);
  return n * bytesPer;
}

/**
 * Tensors that share one allocation, one after another, where backend.jointProjections asks
 * for it: each layer's q, k and v weights, and their biases. A product over the parts can then run
 * as one over the whole (the CUDA backend's linearMany). Each part starts at a multiple of
 * JOINT_ALIGN elements (at least 256 bytes, as the kernels' fast paths like), so parts are adjacent
 * only where the sizes allow: then the product over them is one.
 */
function jointGroups(cfg: ModelConfig): string[][] {
  const groups: string[][] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const a = `model.layers.${l}.self_attn`;
    groups.push([`${a}.q_proj.weight`, `${a}.k_proj.weight`, `${a}.v_proj.weight`]);
    if (cfg.qkvBias) groups.push([`${a}.q_proj.bias`, `${a}.k_proj.bias`, `${a}.v_proj.bias`]);
  }
  return groups;
}
const JOINT_ALIGN = 128;

/**
 * Where each tensor of `cfg` goes: its own upload, or a view of a joint allocation made when the
 * first name of its group comes (see jointGroups). Yields the name and a function storing it.
 */
function placements(backend: Backend, cfg: ModelConfig, dtype: DType) {
  const expected = expectedTensors(cfg);
  const shapeOf = new Map(expected.map((e) => [e.name, e.shape]));
  const groupOf = new Map<string, string[]>();
  if (backend.jointProjections) for (const g of jointGroups(cfg)) for (const name of g) groupOf.set(name, g);
  const views = new Map<string, Tensor>();
  return expected.map(({ name, shape }) => ({
    name,
    shape,
    store(data: Float32Array): Tensor {
      const group = groupOf.get(name);
      if (group === undefined) return backend.upload(data, shape, dtype);
      if (!views.has(name)) {
        let total = 0;
        const offsets = group.map((n) => {
          const at = total;
          total = Math.ceil((at + numel(shapeOf.get(n)!)) / JOINT_ALIGN) * JOINT_ALIGN;
          return at;
        });
        const joint = backend.alloc([total], dtype, 'persistent');
        group.forEach((n, i) => views.set(n, backend.viewAt(joint, offsets[i], shapeOf.get(n)!)));
      }
      const view = views.get(name)!;
      backend.write(view, data);
      return view;
    },
  }));
}

/** Load every weight of `cfg` from `ckpt` onto `backend` in `dtype` (default: the backend's preferred one). */
export function loadWeights(backend: Backend, cfg: ModelConfig, ckpt: Checkpoint, dtype: DType = backend.preferredDtype): ModelWeights {
  const loaded = new Map<string, Tensor>();
  for (const { name, shape, store } of placements(backend, cfg, dtype)) loaded.set(name, store(ckpt.read(name, shape)));
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
  for (const { name, shape, store } of placements(backend, cfg, dtype)) {
    loaded.set(name, store(ckpt.read(name, shape)));
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
