/**
 * LoRA adapters on the host: the spec, shapes, peft's default initialisation and fp32 master
 * weights. No compute here; the backend's LoRA ops consume these arrays.
 *
 * A LoRA on a linear layer y = x W^T adds scale * (x A^T) B^T with A [rank, in], B [out, rank].
 */
import type { ModelConfig } from './config.ts';
import { SeededRandom } from '../util/random.ts';

export type LoraTarget = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';

/** Every target, in the order the modules appear in a decoder layer (and in peft's state dict). */
export const LORA_TARGETS: readonly LoraTarget[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export interface LoraSpec {
  rank: number;
  alpha: number;
  targets: LoraTarget[];
  /** Rank-stabilised LoRA: scale alpha / sqrt(rank) instead of alpha / rank. */
  useRslora: boolean;
  /** Dropout on the LoRA branch's input during training (peft's lora_dropout); 0 when absent. */
  dropout?: number;
}

export interface LoraWeights {
  /** [rank, inFeatures], row-major. */
  a: Float32Array;
  /** [outFeatures, rank], row-major. */
  b: Float32Array;
  inFeatures: number;
  outFeatures: number;
}

/** fp32 master weights on the host. */
export interface LoraAdapter {
  spec: LoraSpec;
  /** alpha / rank, or alpha / sqrt(rank) with rsLoRA (peft's rule). */
  scale: number;
  /** Per layer, per target. Maps iterate in LORA_TARGETS order. */
  layers: Map<LoraTarget, LoraWeights>[];
}

/** in/out features of a target's base linear layer. */
export function loraShapes(cfg: ModelConfig, target: LoraTarget): { inFeatures: number; outFeatures: number } {
  const C = cfg.hiddenSize;
  const qOut = cfg.numHeads * cfg.headDim;
  const kvOut = cfg.numKvHeads * cfg.headDim;
  const F = cfg.intermediateSize;
  switch (target) {
    case 'q_proj': return { inFeatures: C, outFeatures: qOut };
    case 'k_proj':
    case 'v_proj': return { inFeatures: C, outFeatures: kvOut };
    case 'o_proj': return { inFeatures: qOut, outFeatures: C };
    case 'gate_proj':
    case 'up_proj': return { inFeatures: C, outFeatures: F };
    case 'down_proj': return { inFeatures: F, outFeatures: C };
  }
}

export function isLoraTarget(name: string): name is LoraTarget {
  return (LORA_TARGETS as readonly string[]).includes(name);
}

/**
 * peft's scaling (tuners/lora/layer.py, LoraLayer.update_layer):
 * `lora_alpha / math.sqrt(r)` with use_rslora, else `lora_alpha / r`, in double precision.
 */
export function loraScale(spec: Pick<LoraSpec, 'rank' | 'alpha' | 'useRslora'>): number {
  return spec.useRslora ? spec.alpha / Math.sqrt(spec.rank) : spec.alpha / spec.rank;
}

/** Throws, naming the field, unless `spec` can be applied to a model of `cfg`. */
export function validateLoraSpec(spec: LoraSpec, cfg: ModelConfig): void {
  const fail = (msg: string): never => {
    throw new Error(`LoRA spec: ${msg}`);
  };
  if (spec.targets.length === 0) fail(`targets is empty; choose from ${LORA_TARGETS.join(', ')}`);
  const seen = new Set<string>();
  for (const t of spec.targets) {
    if (!isLoraTarget(t)) fail(`target "${String(t)}" is unknown; choose from ${LORA_TARGETS.join(', ')}`);
    if (seen.has(t)) fail(`target "${t}" is listed twice`);
    seen.add(t);
  }
  if (!Number.isInteger(spec.rank) || spec.rank < 1) fail(`rank must be a positive integer, found ${spec.rank}`);
  for (const t of spec.targets) {
    const { inFeatures, outFeatures } = loraShapes(cfg, t);
    const limit = Math.min(inFeatures, outFeatures);
    // Beyond min(in, out) the update B A cannot gain rank; only memory and compute are wasted.
    if (spec.rank > limit) fail(`rank ${spec.rank} exceeds min(in, out) = ${limit} of ${t} [${outFeatures}, ${inFeatures}]`);
  }
  if (!Number.isFinite(spec.alpha) || !(spec.alpha > 0)) fail(`alpha must be a positive number, found ${spec.alpha}`);
  const d = spec.dropout;
  if (d !== undefined && !(Number.isFinite(d) && d >= 0 && d < 1)) fail(`dropout must be in [0, 1), found ${d}`);
}

/** Trainable parameters: rank * (in + out) per target per layer. */
export function loraParameterCount(cfg: ModelConfig, spec: LoraSpec): number {
  let perLayer = 0;
  for (const t of spec.targets) {
    const { inFeatures, outFeatures } = loraShapes(cfg, t);
    perLayer += spec.rank * (inFeatures + outFeatures);
  }
  return perLayer * cfg.numLayers;
}

/**
 * peft's default init (init_lora_weights=True, tuners/lora/layer.py reset_lora_parameters):
 * A gets `kaiming_uniform_(a=sqrt(5))`, B zeros, so a fresh adapter changes nothing.
 * kaiming_uniform bound = gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + a^2)) = sqrt(1/3),
 * fan_in = in (A is [rank, in]), so A ~ U(-1/sqrt(in), 1/sqrt(in)).
 * Draws are in layer order, then LORA_TARGETS order, so the seed alone fixes the weights.
 */
export function initLoraAdapter(cfg: ModelConfig, spec: LoraSpec, seed: number): LoraAdapter {
  validateLoraSpec(spec, cfg);
  const rng = new SeededRandom(seed);
  const layers: Map<LoraTarget, LoraWeights>[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const layer = new Map<LoraTarget, LoraWeights>();
    for (const t of LORA_TARGETS) {
      if (!spec.targets.includes(t)) continue;
      const { inFeatures, outFeatures } = loraShapes(cfg, t);
      const bound = 1 / Math.sqrt(inFeatures);
      const a = new Float32Array(spec.rank * inFeatures);
      for (let i = 0; i < a.length; i++) a[i] = (2 * rng.uniform() - 1) * bound;
      layer.set(t, { a, b: new Float32Array(outFeatures * spec.rank), inFeatures, outFeatures });
    }
    layers.push(layer);
  }
  return { spec: { ...spec, targets: [...spec.targets] }, scale: loraScale(spec), layers };
}

/** False if any weight is NaN or infinite (a diverged step must not be published). */
export function adapterIsFinite(adapter: LoraAdapter): boolean {
  for (const layer of adapter.layers) {
    for (const { a, b } of layer.values()) {
      for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
      for (let i = 0; i < b.length; i++) if (!Number.isFinite(b[i])) return false;
    }
  }
  return true;
}
