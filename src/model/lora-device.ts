/**
 * LoRA adapters on a backend: one flat f32 buffer per adapter, with a view per matrix.
 *
 * Layout: layer by layer, and within a layer in LORA_TARGETS order (the targets the spec
 * names), A [rank, in] then B [out, rank]. One buffer means one upload to publish, one
 * download to save, and one fused AdamW / one sum of squares over all parameters; gradients
 * and Adam moments use the same layout, so the same offsets address them.
 */
import type { Backend, Tensor } from '../backend/backend.ts';
import type { ModelConfig } from './config.ts';
import { LORA_TARGETS, loraShapes, validateLoraSpec } from './lora.ts';
import type { LoraAdapter, LoraSpec, LoraTarget, LoraWeights } from './lora.ts';

export interface LoraLayoutEntry {
  layer: number;
  target: LoraTarget;
  inFeatures: number;
  outFeatures: number;
  /** Element offsets of A [rank, in] and B [out, rank] in the flat buffer. */
  aOffset: number;
  bOffset: number;
}

export interface LoraLayout {
  rank: number;
  entries: LoraLayoutEntry[];
  /** Elements of the flat buffer. */
  size: number;
}

export function loraLayout(cfg: ModelConfig, spec: LoraSpec): LoraLayout {
  validateLoraSpec(spec, cfg);
  const R = spec.rank;
  const entries: LoraLayoutEntry[] = [];
  let off = 0;
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const target of LORA_TARGETS) {
      if (!spec.targets.includes(target)) continue;
      const { inFeatures, outFeatures } = loraShapes(cfg, target);
      entries.push({ layer, target, inFeatures, outFeatures, aOffset: off, bOffset: off + R * inFeatures });
      off += R * (inFeatures + outFeatures);
    }
  }
  return { rank: R, entries, size: off };
}

/** The adapter's weights as one flat array in `layout` order. */
export function packLora(adapter: LoraAdapter, layout: LoraLayout): Float32Array {
  const flat = new Float32Array(layout.size);
  for (const e of layout.entries) {
    const w = adapter.layers[e.layer]?.get(e.target);
    if (w === undefined) throw new Error(`packLora: the adapter has no ${e.target} in layer ${e.layer}`);
    if (w.a.length !== layout.rank * e.inFeatures || w.b.length !== e.outFeatures * layout.rank) {
      throw new Error(`packLora: ${e.target} of layer ${e.layer} has A ${w.a.length} / B ${w.b.length} values, the layout wants ${layout.rank * e.inFeatures} / ${e.outFeatures * layout.rank}`);
    }
    flat.set(w.a, e.aOffset);
    flat.set(w.b, e.bOffset);
  }
  return flat;
}

/** The inverse of packLora: host adapter (copies) from a flat array. */
export function unpackLora(flat: Float32Array, layout: LoraLayout, spec: LoraSpec, scale: number, numLayers: number): LoraAdapter {
  if (flat.length !== layout.size) throw new Error(`unpackLora: ${flat.length} values, the layout has ${layout.size}`);
  const layers: Map<LoraTarget, LoraWeights>[] = Array.from({ length: numLayers }, () => new Map());
  const R = layout.rank;
  for (const e of layout.entries) {
    layers[e.layer].set(e.target, {
      a: flat.slice(e.aOffset, e.aOffset + R * e.inFeatures),
      b: flat.slice(e.bOffset, e.bOffset + e.outFeatures * R),
      inFeatures: e.inFeatures,
      outFeatures: e.outFeatures,
    });
  }
  return { spec: { ...spec, targets: [...spec.targets] }, scale, layers };
}

/** Views of A and B of every (layer, target) inside a flat tensor of `layout.size` elements. */
export type LoraViews = Map<LoraTarget, { a: Tensor; b: Tensor }>[];

export function loraViews(be: Backend, flat: Tensor, layout: LoraLayout, numLayers: number): LoraViews {
  const views: LoraViews = Array.from({ length: numLayers }, () => new Map());
  const R = layout.rank;
  for (const e of layout.entries) {
    views[e.layer].set(e.target, {
      a: be.viewAt(flat, e.aOffset, [R, e.inFeatures]),
      b: be.viewAt(flat, e.bOffset, [e.outFeatures, R]),
    });
  }
  return views;
}

/** An adapter living on a backend: the flat f32 parameter tensor and views of its matrices. */
export interface DeviceLora {
  spec: LoraSpec;
  scale: number;
  layout: LoraLayout;
  params: Tensor;
  /**
   * The matrices again in the backend's compute dtype (bf16 on cuda), for serving: made once when
   * a version is published (attachComputeCopy), so a forward's products read them as they are
   * instead of rounding the f32 matrices into scratch at every step (two launches per adapted
   * projection and layer). Same values as those per-step casts. Training reads `params`.
   */
  compute?: { params: Tensor; views: LoraViews };
  views: LoraViews;
}

/** Upload a host adapter as a persistent flat f32 tensor (free with freeDeviceLora). */
export function uploadLora(be: Backend, cfg: ModelConfig, adapter: LoraAdapter): DeviceLora {
  const layout = loraLayout(cfg, adapter.spec);
  const params = be.upload(packLora(adapter, layout), [layout.size], 'f32');
  return { spec: adapter.spec, scale: adapter.scale, layout, params, views: loraViews(be, params, layout, cfg.numLayers) };
}

/** A persistent copy of a device adapter (an immutable published version of a training adapter). */
export function cloneDeviceLora(be: Backend, cfg: ModelConfig, src: DeviceLora): DeviceLora {
  const params = be.alloc([src.layout.size], 'f32', 'persistent');
  be.copy(params, src.params);
  return { ...src, params, views: loraViews(be, params, src.layout, cfg.numLayers), compute: undefined };
}

/**
 * Where the compute copy puts each matrix: at 256-byte boundaries, as the scratch casts it replaces
 * did (cuBLASLt's fast paths want 256-byte aligned operands, gemv 16-byte; a view into the packed
 * f32 buffer would sit at any element).
 */
const COMPUTE_ALIGN_BYTES = 256;

/**
 * Give `lora` its compute-dtype copy (DeviceLora.compute) where the backend computes in a dtype
 * other than f32; returns whether it has one. A copy that does not fit (a full adapter budget)
 * is skipped: the adapter still serves, its products casting per step as before.
 */
export function attachComputeCopy(be: Backend, cfg: ModelConfig, lora: DeviceLora): boolean {
  if (lora.compute !== undefined) return true;
  const dtype = be.preferredDtype;
  if (dtype === 'f32') return false;
  const align = COMPUTE_ALIGN_BYTES / (dtype === 'bf16' || dtype === 'f16' ? 2 : 4);
  const up = (n: number): number => Math.ceil(n / align) * align;
  const R = lora.layout.rank;
  let size = 0;
  const placed = lora.layout.entries.map((e) => {
    const a = up(size);
    const b = up(a + R * e.inFeatures);
    size = b + e.outFeatures * R;
    return { e, a, b };
  });
  let params: Tensor;
  try {
    params = be.alloc([size], dtype, 'persistent');
  } catch {
    return false;
  }
  const views: LoraViews = Array.from({ length: cfg.numLayers }, () => new Map());
  for (const { e, a, b } of placed) {
    const src = lora.views[e.layer].get(e.target)!;
    const view = { a: be.viewAt(params, a, [R, e.inFeatures]), b: be.viewAt(params, b, [e.outFeatures, R]) };
    // Rounds to the compute dtype as each product's per-step cast did.
    be.copy(view.a, src.a);
    be.copy(view.b, src.b);
    views[e.layer].set(e.target, view);
  }
  lora.compute = { params, views };
  return true;
}

/** The branch serving applies for (layer, target): the compute copy's matrices where the version has one. */
export function servingBranch(lora: DeviceLora, layer: number, target: LoraTarget): { a: Tensor; b: Tensor; scale: number } | undefined {
  const m = (lora.compute?.views ?? lora.views)[layer]?.get(target);
  return m && { a: m.a, b: m.b, scale: lora.scale };
}

export function freeDeviceLora(be: Backend, dev: DeviceLora): void {
  be.free(dev.params);
  if (dev.compute !== undefined) be.free(dev.compute.params);
}

/** Bytes the adapter's tensors hold at their dtypes: the f32 parameters and any compute-dtype copy. */
export function deviceLoraBytes(dev: DeviceLora): number {
  const elem = (t: Tensor): number => (t.dtype === 'bf16' || t.dtype === 'f16' ? 2 : 4);
  const copy = dev.compute === undefined ? 0 : dev.compute.params.shape[0] * elem(dev.compute.params);
  return dev.layout.size * elem(dev.params) + copy;
}

export async function downloadLora(be: Backend, cfg: ModelConfig, dev: DeviceLora): Promise<LoraAdapter> {
  const flat = (await be.download(dev.params)) as Float32Array;
  return unpackLora(flat, dev.layout, dev.spec, dev.scale, cfg.numLayers);
}

