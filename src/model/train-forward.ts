/**
 * The training forward and backward of the whole model with a LoRA adapter.
 *
 * forward: log-probabilities of a packed batch's targets (TRL's per-token logps: logits divided
 * by the sampling temperature), optionally keeping each layer's input for the backward.
 * backward: given dLoss/dLogp per target, accumulates dLoss/dA and dLoss/dB of every LoRA matrix.
 *
 * Memory: only the L+1 layer inputs [T, C] survive between layers (gradient checkpointing); the
 * backward recomputes one layer at a time. Logits exist for one chunk of target rows at a time
 * (at most LOGIT_CHUNK_ELEMENTS values), so no [tokens, vocab] tensor is ever held. The layer
 * inputs and the two gradient buffers are persistent tensors of this object (the training
 * workspace), so the work can be cut into slices that each end with resetScratch(): between
 * slices the serving engine may run its steps on the same backend (see runSlice).
 */
import type { Backend, Tensor } from '../backend/backend.ts';
import type { DeviceLora, LoraViews } from './lora-device.ts';
import type { TrainBatch } from './train-batch.ts';
import { layerBackward, layerForward } from './train-layer.ts';
import type { LayerContext, LayerLora } from './train-layer.ts';
import type { Transformer } from './transformer.ts';

/** Elements of one chunk of logits ([rows, V]): 16 Mi floats = 64 MiB in f32. */
export const LOGIT_CHUNK_ELEMENTS = 1 << 24;

/**
 * Runs one slice of device work. The work's scratch tensors die when it ends (the runner calls
 * resetScratch()). A runner shared with the engine serialises slices with engine steps.
 */
export type SliceRunner = <R>(work: () => R | Promise<R>) => Promise<R>;

/** Run each slice at once, then reset the scratch arena. */
export function directSlices(be: Backend): SliceRunner {
  return async <R>(work: () => R | Promise<R>): Promise<R> => {
    try {
      return await work();
    } finally {
      be.resetScratch();
    }
  };
}

export interface TrainForwardOptions {
  /** Logits are divided by this before the softmax (the rollouts' sampling temperature). */
  temperature: number;
  /** Keep the layer inputs so that backward() can follow. */
  forBackward: boolean;
  runSlice?: SliceRunner;
}

export class TrainableModel {
  private capacity = 0;
  private layerInputs: Tensor[] = [];
  private grad: Tensor[] = [];
  private pending: { batch: TrainBatch; lora: DeviceLora; temperature: number } | null = null;
  private readonly invFreq: Tensor;
  private readonly attnScale: number;

  constructor(readonly model: Transformer, private readonly logitChunkElements = LOGIT_CHUNK_ELEMENTS) {
    this.invFreq = model.invFreq;
    this.attnScale = 1 / Math.sqrt(model.config.headDim);
  }

  get backend(): Backend {
    return this.model.backend;
  }

  /** Bytes of the training workspace (layer inputs and gradient buffers). */
  get workspaceBytes(): number {
    const bytesPer = this.backend.preferredDtype === 'bf16' || this.backend.preferredDtype === 'f16' ? 2 : 4;
    return (this.layerInputs.length + this.grad.length) * this.capacity * this.model.config.hiddenSize * bytesPer;
  }

  /** Release the workspace (it is allocated again on the next forward). */
  free(): void {
    for (const t of [...this.layerInputs, ...this.grad]) this.backend.free(t);
    this.layerInputs = [];
    this.grad = [];
    this.capacity = 0;
    this.pending = null;
  }

  /** Log-probabilities of `batch.targets` [R] under the model with `lora` (null: the base model). */
  async forward(batch: TrainBatch, lora: DeviceLora | null, opts: TrainForwardOptions): Promise<Float32Array> {
    const be = this.backend;
    const cfg = this.model.config;
    const w = this.model.weights;
    const run = opts.runSlice ?? directSlices(be);
    const T = batch.tokens.length;
    const C = cfg.hiddenSize;
    checkTemperature(opts.temperature);
    if (opts.forBackward && lora === null) throw new Error('TrainableModel.forward: forBackward needs a LoRA adapter to train');
    this.pending = null;
    this.ensureCapacity(T);
    const hIn = (l: number): Tensor => be.viewAt(this.layerInputs[l], 0, [T, C]);

    await run(() => {
      const h0 = be.embedding(be.upload(batch.tokens, [T], 'i32', 'scratch'), w.embed);
      be.copy(hIn(0), h0);
    });
    for (let l = 0; l < cfg.numLayers; l++) {
      await run(() => {
        const ctx = this.context(batch);
        const a = layerForward(ctx, w.layers[l], layerLora(lora, null, l), hIn(l));
        be.copy(hIn(l + 1), a.out);
      });
    }
    const R = batch.targetRows.length;
    const logp = new Float32Array(R);
    for (const [r0, r1] of this.chunks(R)) {
      const part = await run(async () => {
        const logits = this.chunkLogits(batch, r0, r1, hIn(cfg.numLayers)).logits;
        const targets = be.upload(batch.targets.subarray(r0, r1), [r1 - r0], 'i32', 'scratch');
        return (await be.download(be.tokenLogprobs(logits, targets, opts.temperature))) as Float32Array;
      });
      logp.set(part, r0);
    }
    if (opts.forBackward && lora !== null) this.pending = { batch, lora, temperature: opts.temperature };
    return logp;
  }

  /** Forget the last forward's saved state without differentiating it (a skipped micro-batch). */
  discard(): void {
    this.pending = null;
  }

  /**
   * Accumulate dLoss/d(LoRA params) into `grads` (views in the adapter's layout), given
   * dLoss/dLogp [R] of the last forward (which must have had forBackward).
   */
  async backward(dlogp: Float32Array, grads: LoraViews, runSlice?: SliceRunner): Promise<void> {
    const p = this.pending;
    if (p === null) throw new Error('TrainableModel.backward: no forward with forBackward to differentiate (or it was already used)');
    this.pending = null;
    const { batch, lora, temperature } = p;
    const be = this.backend;
    const cfg = this.model.config;
    const w = this.model.weights;
    const run = runSlice ?? directSlices(be);
    const T = batch.tokens.length;
    const C = cfg.hiddenSize;
    const R = batch.targetRows.length;
    if (dlogp.length !== R) throw new Error(`TrainableModel.backward: ${dlogp.length} gradients for ${R} targets`);
    const hIn = (l: number): Tensor => be.viewAt(this.layerInputs[l], 0, [T, C]);
    const gradBuf = (i: number): Tensor => be.viewAt(this.grad[i % 2], 0, [T, C]);

    // Through the head: dLoss/d(final hidden) lands in gradient buffer 0.
    await run(() => be.zero(gradBuf(0)));
    for (const [r0, r1] of this.chunks(R)) {
      await run(() => {
        const { logits, x, rows } = this.chunkLogits(batch, r0, r1, hIn(cfg.numLayers));
        const targets = be.upload(batch.targets.subarray(r0, r1), [r1 - r0], 'i32', 'scratch');
        const dl = be.upload(dlogp.subarray(r0, r1), [r1 - r0], 'f32', 'scratch');
        const dLogits = be.tokenLogprobsBackward(logits, targets, temperature, dl);
        const dNormed = be.linearBackwardInput(dLogits, w.lmHead);
        const dx = be.rmsnormBackward(dNormed, x, w.finalNorm, cfg.rmsNormEps);
        be.axpy(gradBuf(0), be.scatterRows(dx, rows, T), 1);
      });
    }
    // Layers, last to first: recompute the layer from its saved input, then differentiate it.
    let cur = 0;
    for (let l = cfg.numLayers - 1; l >= 0; l--) {
      const from = cur;
      await run(() => {
        const ctx = this.context(batch);
        const ll = layerLora(lora, grads, l);
        const a = layerForward(ctx, w.layers[l], ll, hIn(l));
        const dh = layerBackward(ctx, w.layers[l], ll, a, gradBuf(from));
        be.copy(gradBuf(from + 1), dh);
      });
      cur = from + 1;
    }
  }

  private context(batch: TrainBatch): LayerContext {
    const be = this.backend;
    const T = batch.tokens.length;
    const S = batch.cuSeqlens.length - 1;
    return {
      be,
      cfg: this.model.config,
      positions: be.upload(batch.positions, [T], 'i32', 'scratch'),
      cuSeqlens: be.upload(batch.cuSeqlens, [S + 1], 'i32', 'scratch'),
      invFreq: this.invFreq,
      attnScale: this.attnScale,
    };
  }

  /** Final-norm input rows, and logits, of target rows [r0, r1). */
  private chunkLogits(batch: TrainBatch, r0: number, r1: number, hLast: Tensor): { logits: Tensor; x: Tensor; rows: Tensor } {
    const be = this.backend;
    const rows = be.upload(batch.targetRows.subarray(r0, r1), [r1 - r0], 'i32', 'scratch');
    const x = be.gatherRows(hLast, rows);
    const normed = be.rmsnorm(x, this.model.weights.finalNorm, this.model.config.rmsNormEps).y;
    return { logits: be.linear(normed, this.model.weights.lmHead, undefined, 'f32'), x, rows };
  }

  private *chunks(R: number): Generator<[number, number]> {
    const rowsPerChunk = Math.max(1, Math.floor(this.logitChunkElements / this.model.config.vocabSize));
    for (let r = 0; r < R; r += rowsPerChunk) yield [r, Math.min(R, r + rowsPerChunk)];
  }

  private ensureCapacity(T: number): void {
    if (T <= this.capacity) return;
    this.free();
    const be = this.backend;
    const n = T * this.model.config.hiddenSize;
    // Activations and their gradients in the backend's dtype (bf16 on cuda); LoRA stays f32.
    const dtype = be.preferredDtype;
    for (let l = 0; l <= this.model.config.numLayers; l++) this.layerInputs.push(be.alloc([n], dtype, 'persistent'));
    this.grad = [be.alloc([n], dtype, 'persistent'), be.alloc([n], dtype, 'persistent')];
    this.capacity = T;
  }
}

function layerLora(lora: DeviceLora | null, grads: LoraViews | null, l: number): LayerLora | null {
  if (lora === null) return null;
  return { views: lora.views[l], grads: grads?.[l], scale: lora.scale };
}

function checkTemperature(t: number): void {
  if (!Number.isFinite(t) || t <= 0) throw new Error(`temperature must be a positive number, got ${t}`);
}
