/**
 * What a decode step must cost at least, from the model's shapes and the card's measured limits.
 *
 * A decode step reads every weight once (the lm head included; with tied embeddings that is the
 * embedding table, read once) and, for each sequence, the K and V of its whole context in every
 * layer. Its matrix math is 2 FLOPs per weight per token plus attention's 4*H*D per context
 * position per layer. The step can be no faster than the slower of: those bytes at the card's
 * copy bandwidth, and those FLOPs at its bf16 GEMM rate. (Activations, norms' reads and K/V
 * writes are left out: a few MB against gigabytes, which makes the floor a little easier to
 * beat, never harder.)
 */
import type { DType } from '../src/backend/backend.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { expectedTensors } from '../src/model/weights.ts';

export function bytesOf(dtype: DType): number {
  return dtype === 'bf16' || dtype === 'f16' ? 2 : 4;
}

export interface DecodeCosts {
  /** Weight bytes one decode step reads, whatever the batch (plus embeddingRowBytes per row if untied). */
  weightBytesPerStep: number;
  /** Untied embeddings: a step reads only the rows of its batch's tokens from the input table. */
  embeddingRowBytes: number;
  /** K and V bytes of one context position over all layers. */
  kvBytesPerPosition: number;
  /** Linear-layer FLOPs of one token (projections, MLP, lm head). */
  linearFlopsPerToken: number;
  /** Attention FLOPs per token per context position (QK^T and PV over all layers). */
  attentionFlopsPerPosition: number;
}

export function decodeCosts(c: ModelConfig, weightDtype: DType, kvDtype: DType): DecodeCosts {
  const wb = bytesOf(weightDtype);
  let weightElems = 0;
  for (const { name, shape } of expectedTensors(c)) {
    // Untied: the input table is only gathered from (embeddingRowBytes); the lm head is read in full.
    if (!c.tieWordEmbeddings && name === 'model.embed_tokens.weight') continue;
    weightElems += shape.reduce((a, b) => a * b, 1);
  }
  const C = c.hiddenSize;
  const qOut = c.numHeads * c.headDim;
  const kvOut = c.numKvHeads * c.headDim;
  const perLayerMatmul = qOut * C + 2 * kvOut * C + C * qOut + 3 * c.intermediateSize * C;
  return {
    weightBytesPerStep: weightElems * wb,
    embeddingRowBytes: c.tieWordEmbeddings ? 0 : C * wb,
    kvBytesPerPosition: c.numLayers * 2 * kvOut * bytesOf(kvDtype),
    linearFlopsPerToken: 2 * (c.numLayers * perLayerMatmul + c.vocabSize * C),
    attentionFlopsPerPosition: c.numLayers * 4 * c.numHeads * c.headDim,
  };
}

export interface CardLimits {
  /** Copy bandwidth, bytes read + written per second, in GB/s (1e9). */
  bandwidthGbs: number;
  /** bf16 GEMM rate in TFLOP/s (1e12). */
  gemmTflops: number;
}

/**
 * Seconds one decode step over sequences with these context lengths (tokens in each sequence's
 * cache after the step, the new one included) takes at least.
 */
export function stepFloorSeconds(costs: DecodeCosts, limits: CardLimits, contextLens: readonly number[]): number {
  let positions = 0;
  for (const n of contextLens) positions += n;
  const rows = contextLens.length;
  const bytes = costs.weightBytesPerStep + rows * costs.embeddingRowBytes + positions * costs.kvBytesPerPosition;
  const flops = rows * costs.linearFlopsPerToken + positions * costs.attentionFlopsPerPosition;
  return Math.max(bytes / (limits.bandwidthGbs * 1e9), flops / (limits.gemmTflops * 1e12));
}
