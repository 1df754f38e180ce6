/**
 * Sampling on the host, for the batches the device sampler does not take, and the unpacking of
 * what the device sampler returns.
 *
 * The device samples every row (kernels/sampling.cu) except in two cases, where the whole batch
 * downloads its logits as f32 and runs the CPU backend's sampler row by row (so both backends
 * draw exactly the same tokens from the same logits):
 * - a row asks for more top logprobs than one block sorts (sampleLimits().maxTopLogprobs, 1024;
 *   the OpenAI API allows 20);
 * - a row has penalties and the vocabulary is too large for the kernel's bitmap of penalised
 *   ids in shared memory (sampleLimits().maxPenaltyVocab, 1.3M tokens).
 */
import type { SampleResult, SamplingParams } from '../backend.ts';
import { uniformAt } from '../rng.ts';
import { applyPenalties, hasPenalties } from '../cpu/penalties.ts';
import { SamplingWorkspace, argmax, sampleFiltered } from '../cpu/sampling.ts';
import { logSumExp } from '../cpu/softmax.ts';
import { topLogprobs } from '../cpu/top-logprobs.ts';

export interface DeviceSamplingLimits {
  maxTopLogprobs: number;
  maxPenaltyVocab: number;
}

/** True when the device sampler takes every row of this batch (params already validated). */
export function deviceCanSample(params: readonly SamplingParams[], V: number, limits: DeviceSamplingLimits): boolean {
  return params.every(
    (p) => Math.min(p.topLogprobs ?? 0, V) <= limits.maxTopLogprobs && (V <= limits.maxPenaltyVocab || !hasPenalties(p)),
  );
}

/**
 * The device sampler's output words: ids (S), logprobs (S, f32 bits), then top ids and top
 * logprobs, each (S, K) with K the batch's largest top-logprobs count.
 */
export function unpackSampleResult(words: Int32Array, params: readonly SamplingParams[], V: number, K: number): SampleResult {
  const S = params.length;
  const floats = new Float32Array(words.buffer, words.byteOffset, words.length);
  const topIds = 2 * S;
  const topLp = topIds + S * K;
  return {
    ids: words.subarray(0, S),
    logprobs: floats.subarray(S, 2 * S),
    top: params.map((p, s) => {
      const k = Math.min(p.topLogprobs ?? 0, V);
      return { ids: words.subarray(topIds + s * K, topIds + s * K + k), logprobs: floats.subarray(topLp + s * K, topLp + s * K + k) };
    }),
  };
}

export class HostSampler {
  private readonly ws = new SamplingWorkspace();
  private penalized = new Float32Array(0);

  /** Sample every row of logits x (S, V); params were validated by the caller. */
  sample(x: Float32Array, S: number, V: number, params: readonly SamplingParams[]): SampleResult {
    const ids = new Int32Array(S);
    const logprobs = new Float32Array(S);
    const top: SampleResult['top'] = [];
    for (let s = 0; s < S; s++) {
      const p = params[s];
      // Penalties change what is drawn; logprobs always describe the raw logits (the contract).
      let src = x;
      let o = s * V;
      if (hasPenalties(p)) {
        if (this.penalized.length < V) this.penalized = new Float32Array(V);
        applyPenalties(this.penalized, x, o, V, p);
        src = this.penalized;
        o = 0;
      }
      const id = p.temperature === 0 ? argmax(src, o, V) : sampleFiltered(src, o, V, p, uniformAt(p.seed, p.step), this.ws);
      ids[s] = id;
      const logZ = logSumExp(x, s * V, V);
      logprobs[s] = x[s * V + id] - logZ;
      const k = p.topLogprobs ?? 0;
      top.push(k > 0 ? topLogprobs(x, s * V, V, k, logZ) : { ids: new Int32Array(0), logprobs: new Float32Array(0) });
    }
    return { ids, logprobs, top };
  }

  get bytes(): number {
    return this.ws.bytes + this.penalized.byteLength;
  }
}
