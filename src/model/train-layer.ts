/**
 * One decoder layer for training: forward keeping what the backward needs, and the backward.
 *
 * The forward is the same network as Transformer.forward (pre-norm attention + SwiGLU MLP,
 * optional q/k norm, biases), but over whole packed sequences without a KV cache, with the
 * residual adds explicit, and with each LoRA branch's x A^T kept. Base weights are frozen:
 * the backward computes input gradients through them and accumulates gradients only into
 * the LoRA A and B matrices (llm.c's layer backward, with the weight gradients restricted).
 *
 * Gradient checkpointing: the caller keeps only each layer's input and calls layerForward
 * again just before layerBackward, so one layer's activations are alive at a time.
 */
import type { Backend, Tensor } from '../backend/backend.ts';
import type { ModelConfig } from './config.ts';
import type { LoraTarget } from './lora.ts';
import type { LoraViews } from './lora-device.ts';
import { loraBackward } from './lora-apply.ts';
import type { LayerWeights } from './weights.ts';

/** Everything a layer's forward needs besides the weights. */
export interface LayerContext {
  be: Backend;
  cfg: ModelConfig;
  positions: Tensor; // [T] i32
  cuSeqlens: Tensor; // [S+1] i32
  invFreq: Tensor; // [D/2]
  attnScale: number;
}

/** The LoRA applied to one layer: its matrices, and gradient accumulators in the same layout. */
export interface LayerLora {
  views: LoraViews[number];
  grads?: LoraViews[number];
  scale: number;
}

/** Activations of one layer's forward, kept for its backward. */
export interface LayerActivations {
  h: Tensor; // layer input [T, C]
  n1: Tensor;
  qLin?: Tensor; // q before q-norm [T*H, D] (q/k norm models only)
  kLin?: Tensor;
  q: Tensor; // after norm and rope [T, H, D]
  k: Tensor;
  v: Tensor;
  attn: Tensor; // [T, H, D]
  lse: Tensor;
  attnFlat: Tensor; // [T, H*D]
  h2: Tensor; // h + o
  n2: Tensor;
  gate: Tensor;
  up: Tensor;
  act: Tensor; // swiglu(gate, up)
  out: Tensor; // h2 + down
  /** x A^T of each LoRA branch. */
  u: Map<LoraTarget, Tensor>;
}

function project(
  ctx: LayerContext,
  x: Tensor,
  w: Tensor,
  bias: Tensor | undefined,
  lora: LayerLora | null,
  target: LoraTarget,
  u: Map<LoraTarget, Tensor>,
): Tensor {
  const be = ctx.be;
  const y = be.linear(x, w, bias);
  const m = lora?.views.get(target);
  if (lora && m) {
    const ux = be.linear(x, m.a);
    be.axpy(y, be.linear(ux, m.b), lora.scale);
    u.set(target, ux);
  }
  return y;
}

export function layerForward(ctx: LayerContext, L: LayerWeights, lora: LayerLora | null, h: Tensor): LayerActivations {
  const { be, cfg } = ctx;
  const T = h.shape[0];
  const { numHeads: H, numKvHeads: Hkv, headDim: D, rmsNormEps: eps } = cfg;
  const u = new Map<LoraTarget, Tensor>();
  const n1 = be.rmsnorm(h, L.inputNorm, eps).y;
  let qLin: Tensor | undefined;
  let kLin: Tensor | undefined;
  let q = be.view(project(ctx, n1, L.q, L.qBias, lora, 'q_proj', u), [T, H, D]);
  let k = be.view(project(ctx, n1, L.k, L.kBias, lora, 'k_proj', u), [T, Hkv, D]);
  const v = be.view(project(ctx, n1, L.v, L.vBias, lora, 'v_proj', u), [T, Hkv, D]);
  if (L.qNorm && L.kNorm) {
    qLin = be.view(q, [T * H, D]);
    kLin = be.view(k, [T * Hkv, D]);
    q = be.view(be.rmsnorm(qLin, L.qNorm, eps).y, [T, H, D]);
    k = be.view(be.rmsnorm(kLin, L.kNorm, eps).y, [T, Hkv, D]);
  }
  be.rope(q, k, ctx.positions, ctx.invFreq);
  const { out: attn, lse } = be.attentionPacked(q, k, v, ctx.cuSeqlens, ctx.attnScale);
  const attnFlat = be.view(attn, [T, H * D]);
  const o = project(ctx, attnFlat, L.o, L.oBias, lora, 'o_proj', u);
  const h2 = be.add(h, o);
  const n2 = be.rmsnorm(h2, L.postNorm, eps).y;
  const gate = project(ctx, n2, L.gate, L.gateBias, lora, 'gate_proj', u);
  const up = project(ctx, n2, L.up, L.upBias, lora, 'up_proj', u);
  const act = be.swiglu(gate, up);
  const down = project(ctx, act, L.down, L.downBias, lora, 'down_proj', u);
  const out = be.add(h2, down);
  return { h, n1, qLin, kLin, q, k, v, attn, lse, attnFlat, h2, n2, gate, up, act, out, u };
}

/**
 * dx += gradient through a projection y = x W^T (+ LoRA) given dy; accumulates the LoRA's
 * gradients. With dx undefined, returns a fresh input gradient instead.
 */
function projectBackward(
  ctx: LayerContext,
  dy: Tensor,
  x: Tensor,
  w: Tensor,
  lora: LayerLora | null,
  target: LoraTarget,
  act: LayerActivations,
  dx: Tensor | undefined,
): Tensor {
  const be = ctx.be;
  const base = be.linearBackwardInput(dy, w);
  let into: Tensor;
  if (dx === undefined) into = base;
  else {
    be.axpy(dx, base, 1);
    into = dx;
  }
  const m = lora?.views.get(target);
  const g = lora?.grads?.get(target);
  const u = act.u.get(target);
  if (lora && m && u) {
    if (!g) throw new Error(`layerBackward: no gradient buffers for ${target}`);
    loraBackward(be, { dy, x, u, a: m.a, b: m.b, da: g.a, db: g.b, dx: into, scale: lora.scale });
  }
  return into;
}

/** Given dOut = dLoss/d(layer output) [T, C], returns dLoss/d(layer input) and accumulates LoRA grads. */
export function layerBackward(ctx: LayerContext, L: LayerWeights, lora: LayerLora | null, a: LayerActivations, dOut: Tensor): Tensor {
  const { be, cfg } = ctx;
  const T = a.h.shape[0];
  const { numHeads: H, numKvHeads: Hkv, headDim: D, rmsNormEps: eps } = cfg;

  // MLP: out = h2 + down(swiglu(gate(n2), up(n2))), n2 = norm(h2)
  const dAct = projectBackward(ctx, dOut, a.act, L.down, lora, 'down_proj', a, undefined);
  const { dGate, dUp } = be.swigluBackward(dAct, a.gate, a.up);
  const dn2 = projectBackward(ctx, dGate, a.n2, L.gate, lora, 'gate_proj', a, undefined);
  projectBackward(ctx, dUp, a.n2, L.up, lora, 'up_proj', a, dn2);
  const dh2 = be.rmsnormBackward(dn2, a.h2, L.postNorm, eps);
  be.axpy(dh2, dOut, 1);

  // Attention: h2 = h + o(attn(rope(q(n1)), rope(k(n1)), v(n1))), n1 = norm(h)
  const dAttn = projectBackward(ctx, dh2, a.attnFlat, L.o, lora, 'o_proj', a, undefined);
  const g = be.attentionPackedBackward(be.view(dAttn, [T, H, D]), a.q, a.k, a.v, a.attn, a.lse, ctx.cuSeqlens, ctx.attnScale);
  be.ropeBackward(g.dq, g.dk, ctx.positions, ctx.invFreq);
  let dq = g.dq;
  let dk = g.dk;
  if (L.qNorm && L.kNorm && a.qLin && a.kLin) {
    dq = be.rmsnormBackward(be.view(dq, [T * H, D]), a.qLin, L.qNorm, eps);
    dk = be.rmsnormBackward(be.view(dk, [T * Hkv, D]), a.kLin, L.kNorm, eps);
  }
  const dn1 = projectBackward(ctx, be.view(dq, [T, H * D]), a.n1, L.q, lora, 'q_proj', a, undefined);
  projectBackward(ctx, be.view(dk, [T, Hkv * D]), a.n1, L.k, lora, 'k_proj', a, dn1);
  projectBackward(ctx, be.view(g.dv, [T, Hkv * D]), a.n1, L.v, lora, 'v_proj', a, dn1);
  const dh = be.rmsnormBackward(dn1, a.h, L.inputNorm, eps);
  be.axpy(dh, dh2, 1);
  return dh;
}
