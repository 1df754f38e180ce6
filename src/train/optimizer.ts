/**
 * AdamW, the learning-rate schedule and gradient clipping, as PyTorch and transformers define
 * them, so a Tandem run and a TRL run with the same hyperparameters step the same way.
 *
 * This is the host (fp32 Float32Array) reference; a backend's fused `adamw` op must match it.
 *   AdamW (torch.optim.AdamW, decoupled weight decay):
 *     p <- p - lr * wd * p
 *     m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *     p <- p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 *   schedule (transformers get_cosine_schedule_with_warmup, one half cosine):
 *     step < warmup: lr * step / warmup;  else lr * 0.5 * (1 + cos(pi * (step - warmup) / (total - warmup)))
 *   clipping (torch.nn.utils.clip_grad_norm_): total L2 norm over all grads; if it exceeds
 *     maxNorm, every grad is scaled by maxNorm / (norm + 1e-6).
 */

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWConfig = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

/** State of one parameter tensor: first and second moments. */
export interface AdamWState {
  m: Float32Array;
  v: Float32Array;
}

export function newAdamWState(size: number): AdamWState {
  return { m: new Float32Array(size), v: new Float32Array(size) };
}

/** One AdamW update of `param` in place; `step` counts from 1. */
export function adamwStep(param: Float32Array, grad: Float32Array, state: AdamWState, cfg: AdamWConfig, lr: number, step: number): void {
  if (grad.length !== param.length || state.m.length !== param.length || state.v.length !== param.length) {
    throw new Error(`adamw: param has ${param.length} values, grad ${grad.length}, m ${state.m.length}, v ${state.v.length}`);
  }
  if (!Number.isInteger(step) || step < 1) throw new Error(`adamw: step counts from 1, got ${step}`);
  const { beta1, beta2, eps, weightDecay } = cfg;
  const bc1 = 1 - beta1 ** step;
  const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
  const decay = 1 - lr * weightDecay;
  const stepSize = lr / bc1;
  const { m, v } = state;
  for (let i = 0; i < param.length; i++) {
    const g = grad[i];
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    param[i] = param[i] * decay - (stepSize * m[i]) / (Math.sqrt(v[i]) / bc2Sqrt + eps);
  }
}

export interface ScheduleConfig {
  lr: number;
  warmupSteps: number;
  totalSteps: number;
  kind: 'cosine' | 'linear' | 'constant';
}

/** Learning rate for optimizer step `step` (0-based, as transformers' LambdaLR sees it). */
export function learningRate(s: ScheduleConfig, step: number): number {
  if (step < s.warmupSteps) return (s.lr * step) / Math.max(1, s.warmupSteps);
  if (s.kind === 'constant') return s.lr;
  const progress = (step - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps);
  if (s.kind === 'linear') return s.lr * Math.max(0, 1 - progress);
  return s.lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}

/** Global L2 norm of all grads; scales them in place when it exceeds maxNorm. Returns the norm before clipping. */
export function clipGradNorm(grads: readonly Float32Array[], maxNorm: number): number {
  let sq = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  const norm = Math.sqrt(sq);
  if (Number.isFinite(norm) && maxNorm > 0 && norm > maxNorm) {
    const scale = maxNorm / (norm + 1e-6);
    for (const g of grads) for (let i = 0; i < g.length; i++) g[i] *= scale;
  }
  return norm;
}
