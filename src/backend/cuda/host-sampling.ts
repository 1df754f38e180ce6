/**
 * Sampling on the host, for rows the device does not sample yet.
 *
 * The CUDA backend samples greedy rows (temperature 0, no penalties, no top logprobs) on the
 * GPU and downloads only ids and logprobs. Any other batch (temperature > 0 with top-k / top-p /
 * min-p, penalties, top logprobs) downloads the logits as f32 and runs this: the CPU backend's
 * sampler (src/backend/cpu/sampling.ts and friends), row by row, so both backends draw exactly
 * the same tokens from the same logits. Moving these filters onto the device (FlashInfer-style
 * sorting-free top-k / top-p) is later work.
 */
import type { SampleResult, SamplingParams } from '../backend.ts';
import { uniformAt } from '../rng.ts';
import { applyPenalties, hasPenalties } from '../cpu/penalties.ts';
import { SamplingWorkspace, argmax, sampleFiltered } from '../cpu/sampling.ts';
import { logSumExp } from '../cpu/softmax.ts';
import { topLogprobs } from '../cpu/top-logprobs.ts';

/** True when the device's greedy path can sample this row. */
export function greedyOnDevice(p: SamplingParams): boolean {
  return p.temperature === 0 && !hasPenalties(p) && (p.topLogprobs ?? 0) === 0;
}

export class HostSampler {
  private readonly ws = new SamplingWorkspace();
  private penalized = new Float32Array(0);
  private counts = new Int32Array(0);

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
        if (this.penalized.length < V) {
          this.penalized = new Float32Array(V);
          this.counts = new Int32Array(V);
        }
        applyPenalties(this.penalized, x, o, V, p, this.counts);
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
    return this.ws.bytes + this.penalized.byteLength + this.counts.byteLength;
  }
}
