/**
 * The decoder-only transformer (Qwen2 / Llama / Qwen3), written once against the Backend.
 *
 * One forward handles any mix of packed prefill (several sequences, each with a cached prefix
 * or none) and decode (one new token per sequence): the batch lists, per sequence, the new
 * tokens and where they sit in its paged KV cache. Logits are computed only for the rows the
 * caller asks for (the last token of each sequence when generating; every row for parity
 * checks), so no [T, V] tensor exists unless it is wanted.
 */
import type { AttnMeta, Backend, KvCache, KvCacheSpec, LinearPart, Tensor } from '../backend/backend.ts';
import type { ModelConfig } from './config.ts';
import type { LoraTarget } from './lora.ts';
import { loraForwardSegments, loraForwardSegmentsMany, type LoraSegment } from './lora-apply.ts';
import { servingBranch, type DeviceLora } from './lora-device.ts';
import type { ModelWeights } from './weights.ts';

/** Host-side description of one forward pass over a packed batch. */
export interface ForwardBatch {
  /** New token ids of all sequences, concatenated: [T]. */
  tokens: Int32Array;
  /** Absolute position of each new token in its sequence: [T]. */
  positions: Int32Array;
  /** Row offsets of each sequence in `tokens`: [S+1]. */
  cuSeqlensQ: Int32Array;
  /** Tokens in each sequence's cache after this pass (cached prefix + new): [S]. */
  contextLens: Int32Array;
  /** Block ids of each sequence, row-major [S, maxBlocksPerSeq], padded with -1. */
  blockTables: Int32Array;
  maxBlocksPerSeq: number;
  /** Cache slot (block * blockSize + offset) that each new token's K/V is written to: [T]. */
  slots: Int32Array;
  /** Rows of the batch whose logits are returned, in this order: [R]. */
  logitRows: Int32Array;
  /**
   * LoRA adapters by row range: each segment's adapter is added to every projection it targets,
   * on its rows only. Rows outside every segment use the base weights alone.
   */
  lora?: LoraSegment<DeviceLora>[];
  /** Tokens that are the previous step's sampled ids, still on the device (placed after the upload). */
  feed?: TokenFeed;
}

/**
 * A previous step's sampled ids feeding this step's tokens on the device: tokens[slots[i]] =
 * ids[i], slot -1 for a row that does not continue. The host holds placeholders there (the ids
 * have not come back when this step is queued).
 */
export interface TokenFeed {
  /** i32, at least slots.length elements (sample()'s keepIds). */
  ids: Tensor;
  slots: Int32Array;
}

/**
 * Place a feed's ids into a batch's tokens [T] on the device (queued after their upload).
 * slotsOnDevice: feed.slots already on the device (a decode graph's inputs carry them); else uploaded here.
 */
export function placeFeed(be: Backend, tokens: Tensor, feed: TokenFeed, slotsOnDevice?: Tensor): void {
  const n = feed.slots.length;
  be.placeRows(tokens, be.viewAt(feed.ids, 0, [n]), slotsOnDevice ?? be.upload(feed.slots, [n], 'i32', 'scratch'));
}

/**
 * A batch already on the device: what forwardDevice() reads. A CUDA graph keeps one per batch
 * size in persistent tensors and rewrites their contents before each replay.
 */
export interface DeviceBatch {
  tokens: Tensor; // [T] i32
  positions: Tensor; // [T] i32
  slots: Tensor; // [T] i32
  meta: AttnMeta;
  logitRows: Tensor; // [R] i32
  lora?: LoraSegment<DeviceLora>[];
}

/** What a sequence contributes to a batch: its new tokens and its cache layout. */
export interface SequenceSlice {
  /** Tokens to run now (the uncached suffix when prefilling, one token when decoding). */
  newTokens: readonly number[];
  /** Tokens of this sequence already in the cache (positions of newTokens start here). */
  numCached: number;
  /** Blocks holding positions [0, numCached + newTokens.length). */
  blockTable: readonly number[];
  /** Return logits for every new token (parity checks, scoring) instead of only the last. */
  allLogits?: boolean;
  /** The adapter this sequence runs with; absent or null: the base model. */
  lora?: DeviceLora | null;
}

/**
 * Lay out a list of sequences as one packed ForwardBatch for a cache of `blockSize`. Neighbours
 * with the same adapter share one LoRA segment, so list sequences grouped by adapter.
 */
export function packBatch(seqs: readonly SequenceSlice[], blockSize: number): ForwardBatch {
  if (seqs.length === 0) throw new Error('packBatch: empty batch');
  let total = 0;
  let maxBlocks = 1;
  for (const s of seqs) {
    if (s.newTokens.length === 0) throw new Error('packBatch: a sequence has no new tokens');
    const ctx = s.numCached + s.newTokens.length;
    const needed = Math.ceil(ctx / blockSize);
    if (s.blockTable.length < needed) {
      throw new Error(`packBatch: ${ctx} tokens need ${needed} blocks of ${blockSize}, block table has ${s.blockTable.length}`);
    }
    total += s.newTokens.length;
    maxBlocks = Math.max(maxBlocks, needed);
  }
  const tokens = new Int32Array(total);
  const positions = new Int32Array(total);
  const slots = new Int32Array(total);
  const cuSeqlensQ = new Int32Array(seqs.length + 1);
  const contextLens = new Int32Array(seqs.length);
  const blockTables = new Int32Array(seqs.length * maxBlocks).fill(-1);
  const logitRows: number[] = [];
  const lora: LoraSegment<DeviceLora>[] = [];
  let row = 0;
  seqs.forEach((s, i) => {
    cuSeqlensQ[i] = row;
    if (s.lora) {
      const last = lora[lora.length - 1];
      if (last !== undefined && last.lora === s.lora && last.end === row) last.end = row + s.newTokens.length;
      else lora.push({ start: row, end: row + s.newTokens.length, lora: s.lora });
    }
    contextLens[i] = s.numCached + s.newTokens.length;
    const needed = Math.ceil(contextLens[i] / blockSize);
    for (let b = 0; b < needed; b++) blockTables[i * maxBlocks + b] = s.blockTable[b];
    for (let j = 0; j < s.newTokens.length; j++, row++) {
      const pos = s.numCached + j;
      tokens[row] = s.newTokens[j];
      positions[row] = pos;
      slots[row] = s.blockTable[Math.floor(pos / blockSize)] * blockSize + (pos % blockSize);
      if (s.allLogits || j === s.newTokens.length - 1) logitRows.push(row);
    }
  });
  cuSeqlensQ[seqs.length] = row;
  return {
    tokens,
    positions,
    cuSeqlensQ,
    contextLens,
    blockTables,
    maxBlocksPerSeq: maxBlocks,
    slots,
    logitRows: Int32Array.from(logitRows),
    ...(lora.length > 0 ? { lora } : {}),
  };
}

export class Transformer {
  readonly invFreq: Tensor;
  private readonly scale: number;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    invFreq: Float32Array,
  ) {
    if (invFreq.length !== config.headDim / 2) {
      throw new Error(`rope table has ${invFreq.length} frequencies, head_dim ${config.headDim} needs ${config.headDim / 2}`);
    }
    this.invFreq = backend.upload(invFreq, [invFreq.length], 'f32');
    this.scale = 1 / Math.sqrt(config.headDim);
  }

  /**
   * The KV cache layout this model needs, for `numBlocks` blocks of `blockSize` tokens, in the
   * backend's preferred dtype (K and V are written from activations of that dtype).
   */
  kvCacheSpec(numBlocks: number, blockSize: number): KvCacheSpec {
    const c = this.config;
    const dtype = this.backend.preferredDtype;
    return { numLayers: c.numLayers, numBlocks, blockSize, numKvHeads: c.numKvHeads, headDim: c.headDim, dtype };
  }

  /**
   * Run the batch, writing its K/V into `cache`, and return logits [R, V] for
   * `batch.logitRows` (a scratch tensor: read it before the next resetScratch()).
   */
  forward(batch: ForwardBatch, cache: KvCache): Tensor {
    const be = this.backend;
    const T = batch.tokens.length;
    const S = batch.contextLens.length;
    const tokens = be.upload(batch.tokens, [T], 'i32', 'scratch');
    if (batch.feed) placeFeed(be, tokens, batch.feed);
    return this.forwardDevice(
      {
        tokens,
        positions: be.upload(batch.positions, [T], 'i32', 'scratch'),
        slots: be.upload(batch.slots, [T], 'i32', 'scratch'),
        meta: {
          cuSeqlensQ: be.upload(batch.cuSeqlensQ, [S + 1], 'i32', 'scratch'),
          contextLens: be.upload(batch.contextLens, [S], 'i32', 'scratch'),
          blockTables: be.upload(batch.blockTables, [S, batch.maxBlocksPerSeq], 'i32', 'scratch'),
          maxSeqlenQ: maxDiff(batch.cuSeqlensQ),
          maxContextLen: Math.max(...batch.contextLens),
        },
        logitRows: be.upload(batch.logitRows, [batch.logitRows.length], 'i32', 'scratch'),
        ...(batch.lora ? { lora: batch.lora } : {}),
      },
      cache,
    );
  }

  /**
   * forward() on inputs already on the device: no uploads, so it can be captured in a CUDA graph.
   * Returns logits [R, V] f32 for `batch.logitRows`.
   */
  forwardDevice(batch: DeviceBatch, cache: KvCache): Tensor {
    const be = this.backend;
    const c = this.config;
    const w = this.weights;
    const T = batch.tokens.shape[0];
    const { H, Hkv, D } = { H: c.numHeads, Hkv: c.numKvHeads, D: c.headDim };
    const { tokens, positions, slots, meta } = batch;

    const segments = batch.lora ?? [];
    checkSegments(segments, T);
    /** Each segment's LoRA for `target`, added on its rows to y = the base projection of x. */
    const addLora = (y: Tensor, x: Tensor, layer: number, target: LoraTarget): Tensor => {
      if (segments.length > 0) {
        loraForwardSegments(be, y, x, segments, (lora) => servingBranch(lora, layer, target));
      }
      return y;
    };
    /** A projection: the base linear (bias included), then each segment's LoRA on its rows. */
    const project = (x: Tensor, weight: Tensor, bias: Tensor | undefined, layer: number, target: LoraTarget): Tensor =>
      addLora(be.linear(x, weight, bias), x, layer, target);
    const adapted = (layer: number, target: LoraTarget): boolean =>
      segments.some((s) => s.lora.views[layer]?.has(target) === true);
    /** Several projections of one x with their LoRA: each segment's shrinks in one linearMany. */
    const projectMany = (x: Tensor, parts: readonly LinearPart[], layer: number, targets: readonly LoraTarget[]): Tensor[] => {
      const ys = be.linearMany(x, parts);
      loraForwardSegmentsMany(be, ys, x, segments, (lora, i) => servingBranch(lora, layer, targets[i]));
      return ys;
    };

    // Pre-norm blocks with the residual add fused into the next norm: `pending` is the output
    // of the last sub-block, not yet added to the residual stream.
    let pending = be.embedding(tokens, w.embed);
    let residual: Tensor | undefined;
    for (let l = 0; l < c.numLayers; l++) {
      const L = w.layers[l];
      // norm + q, k and v in one launch where the backend can (decode). With adapters in the
      // batch the normalised rows are kept: each LoRA's shrink reads them.
      const qkv = [
        { w: L.q, bias: L.qBias },
        { w: L.k, bias: L.kBias },
        { w: L.v, bias: L.vBias },
      ];
      let projected: Tensor[];
      if (segments.length === 0) {
        const r = be.normLinearMany(pending, { w: L.inputNorm, eps: c.rmsNormEps, residual }, qkv);
        residual = r.sum;
        projected = r.outs;
      } else {
        const n1 = be.rmsnorm(pending, L.inputNorm, c.rmsNormEps, residual);
        residual = n1.sum;
        projected = projectMany(n1.y, qkv, l, ['q_proj', 'k_proj', 'v_proj']);
      }
      let q = be.view(projected[0], [T, H, D]);
      let k = be.view(projected[1], [T, Hkv, D]);
      const v = be.view(projected[2], [T, Hkv, D]);
      if (L.qNorm && L.kNorm) {
        q = be.view(be.rmsnorm(be.view(q, [T * H, D]), L.qNorm, c.rmsNormEps).y, [T, H, D]);
        k = be.view(be.rmsnorm(be.view(k, [T * Hkv, D]), L.kNorm, c.rmsNormEps).y, [T, Hkv, D]);
      }
      // rope + K/V store + attention: one kernel for decode batches where the backend can.
      const attn = be.ropeAttentionDecode(q, k, v, positions, this.invFreq, cache, l, slots, meta, this.scale);
      const o = project(be.view(attn, [T, H * D]), L.o, L.oBias, l, 'o_proj');

      const gate = { w: L.gate, bias: L.gateBias };
      const up = { w: L.up, bias: L.upBias };
      let hidden: Tensor;
      if (segments.length === 0) {
        const r = be.normLinearSwiglu(o, { w: L.postNorm, eps: c.rmsNormEps, residual }, gate, up);
        residual = r.sum;
        hidden = r.out;
      } else {
        const n2 = be.rmsnorm(o, L.postNorm, c.rmsNormEps, residual);
        residual = n2.sum;
        // The SwiGLU sits between the products and their LoRA: fused only when no adapter here has them.
        if (adapted(l, 'gate_proj') || adapted(l, 'up_proj')) {
          const [g, u] = projectMany(n2.y, [gate, up], l, ['gate_proj', 'up_proj']);
          hidden = be.swiglu(g, u);
        } else {
          hidden = be.linearSwiglu(n2.y, gate, up);
        }
      }
      pending = project(hidden, L.down, L.downBias, l, 'down_proj');
    }
    const final = be.rmsnorm(pending, w.finalNorm, c.rmsNormEps, residual).y;
    const rows = be.gatherRows(final, batch.logitRows);
    // f32 logits whatever the activations are: sampling and logprobs want their full precision.
    return be.linear(rows, w.lmHead, undefined, 'f32');
  }
}

/** Two adapters on one row would add both; a row range past the batch is a packing bug. */
function checkSegments(segments: readonly LoraSegment<DeviceLora>[], T: number): void {
  const sorted = [...segments].sort((a, b) => a.start - b.start);
  let end = 0;
  for (const s of sorted) {
    if (!(Number.isInteger(s.start) && Number.isInteger(s.end) && s.start >= 0 && s.start <= s.end && s.end <= T)) {
      throw new Error(`forward: LoRA segment [${s.start}, ${s.end}) is not a row range of the batch's ${T} rows`);
    }
    if (s.start < end) throw new Error(`forward: LoRA segments overlap at row ${s.start}; each row takes at most one adapter`);
    end = s.end;
  }
}

function maxDiff(offsets: Int32Array): number {
  let m = 0;
  for (let i = 1; i < offsets.length; i++) m = Math.max(m, offsets[i] - offsets[i - 1]);
  return m;
}
