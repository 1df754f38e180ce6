/**
 * The adapter being trained, on the backend: fp32 master weights, gradient accumulators and
 * AdamW moments, each one flat tensor in the adapter's layout (lora-device.ts), so that a step
 * is one sum of squares (the global gradient norm), one fused AdamW and one zeroing.
 *
 * Semantics follow src/train/optimizer.ts (torch AdamW, clip_grad_norm_): the norm is taken
 * over all gradients; above maxGradNorm every gradient is scaled by maxNorm / (norm + 1e-6).
 * A step whose norm is not finite is skipped: no parameter or moment changes.
 */
import type { Backend, Tensor } from '../backend/backend.ts';
import type { ModelConfig } from '../model/config.ts';
import type { LoraAdapter } from '../model/lora.ts';
import { downloadLora, loraViews, uploadLora } from '../model/lora-device.ts';
import type { DeviceLora, LoraViews } from '../model/lora-device.ts';
import type { AdamWConfig } from './optimizer.ts';

export interface OptimizerState {
  /** Optimizer steps taken so far. */
  step: number;
  m: Float32Array;
  v: Float32Array;
}

export interface StepOutcome {
  /** Global gradient norm before clipping (NaN / Infinity when a gradient is not finite). */
  gradNorm: number;
  /** False when the step was skipped because the gradients were not finite. */
  applied: boolean;
}

export class DeviceOptimizer {
  readonly lora: DeviceLora;
  readonly grads: Tensor;
  readonly gradViews: LoraViews;
  private readonly m: Tensor;
  private readonly v: Tensor;
  /** Optimizer steps applied so far (AdamW's t). */
  step = 0;

  constructor(
    private readonly be: Backend,
    private readonly cfg: ModelConfig,
    adapter: LoraAdapter,
    private readonly adamw: AdamWConfig,
    state?: OptimizerState,
  ) {
    this.lora = uploadLora(be, cfg, adapter);
    const n = this.lora.layout.size;
    this.grads = be.alloc([n], 'f32', 'persistent');
    this.gradViews = loraViews(be, this.grads, this.lora.layout, cfg.numLayers);
    if (state !== undefined) {
      if (state.m.length !== n || state.v.length !== n) {
        throw new Error(`optimizer state has ${state.m.length} / ${state.v.length} moments, the adapter has ${n} parameters`);
      }
      this.m = be.upload(state.m, [n], 'f32');
      this.v = be.upload(state.v, [n], 'f32');
      this.step = state.step;
    } else {
      this.m = be.alloc([n], 'f32', 'persistent');
      this.v = be.alloc([n], 'f32', 'persistent');
    }
  }

  get parameterCount(): number {
    return this.lora.layout.size;
  }

  /** Bytes held on the backend: weights, gradients and two moments, all f32. */
  get bytes(): number {
    return 4 * 4 * this.lora.layout.size;
  }

  zeroGrads(): void {
    this.be.zero(this.grads);
  }

  async gradNorm(): Promise<number> {
    const sq = (await this.be.download(this.be.sumSquares(this.grads)))[0];
    return Math.sqrt(sq);
  }

  /**
   * Clip, then AdamW with learning rate `lr`, then zero the gradients. Scratch from this call
   * dies at the caller's next resetScratch().
   */
  async apply(lr: number, maxGradNorm: number): Promise<StepOutcome> {
    const gradNorm = await this.gradNorm();
    if (!Number.isFinite(gradNorm)) {
      this.zeroGrads();
      return { gradNorm, applied: false };
    }
    const gradScale = maxGradNorm > 0 && gradNorm > maxGradNorm ? maxGradNorm / (gradNorm + 1e-6) : 1;
    this.step++;
    const { beta1, beta2, eps, weightDecay } = this.adamw;
    this.be.adamw(this.lora.params, this.grads, this.m, this.v, { lr, beta1, beta2, eps, weightDecay, step: this.step, gradScale });
    this.zeroGrads();
    return { gradNorm, applied: true };
  }

  /** False when any weight is NaN or infinite (such an adapter is never published). */
  async weightsFinite(): Promise<boolean> {
    const sq = (await this.be.download(this.be.sumSquares(this.lora.params)))[0];
    return Number.isFinite(sq);
  }

  /** The current weights as a host adapter (for checkpoints and PEFT export). */
  adapter(): Promise<LoraAdapter> {
    return downloadLora(this.be, this.cfg, this.lora);
  }

  async state(): Promise<OptimizerState> {
    const [m, v] = await Promise.all([this.be.download(this.m), this.be.download(this.v)]);
    return { step: this.step, m: m as Float32Array, v: v as Float32Array };
  }

  free(): void {
    for (const t of [this.lora.params, this.grads, this.m, this.v]) this.be.free(t);
  }
}
