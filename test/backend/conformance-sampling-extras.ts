/**
 * Conformance cases for the sampling extras (penalties, top logprobs), run against every
 * backend like conformance.ts. References are computed here in float64 from the same logits.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Backend, SamplingParams } from '../../src/backend/backend.ts';
import { SeededRandom } from '../../src/util/random.ts';

const base: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, step: 0 };

function logSoftmax64(x: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < x.length; i++) max = Math.max(max, x[i]);
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += Math.exp(x[i] - max);
  const lz = max + Math.log(sum);
  return Float64Array.from(x, (v) => v - lz);
}

export function runSamplingExtrasConformance(name: string, make: () => Backend, logprobTol: number): void {
  describe(`${name} backend: sampling penalties and top logprobs`, () => {
    it('presence and frequency penalties move the argmax exactly as vLLM defines them', async () => {
      const be = make();
      // Token 3 leads by 1.0; it was generated twice. frequency 0.3*2 + presence 0.5 = 1.1 > 1.0.
      const logits = new Float32Array([0, 1, 2, 3, 1.5, 0]);
      const t = be.upload(logits, [1, 6], 'f32', 'scratch');
      const none = await be.sample(t, [{ ...base }]);
      assert.equal(none.ids[0], 3);
      const pen = await be.sample(t, [{ ...base, frequencyPenalty: 0.3, presencePenalty: 0.5, outputTokens: [3, 3] }]);
      assert.equal(pen.ids[0], 2);
      const under = await be.sample(t, [{ ...base, frequencyPenalty: 0.2, presencePenalty: 0.5, outputTokens: [3, 3] }]);
      assert.equal(under.ids[0], 3, 'a penalty of 0.9 < 1.0 must not move the argmax');
      // Logprobs describe the raw logits, not the penalised ones.
      assert.ok(Math.abs(pen.logprobs[0] - logSoftmax64(logits)[2]) < logprobTol);
      be.resetScratch();
    });

    it('repetition penalty divides positive and multiplies negative logits of seen tokens (prompt too)', async () => {
      const be = make();
      const logits = new Float32Array([-1, 4, 3, -0.5, 2.5]);
      const t = be.upload(logits, [1, 5], 'f32', 'scratch');
      // 4 / 2 = 2 < 3 -> token 2 wins; token 2 is unseen.
      const a = await be.sample(t, [{ ...base, repetitionPenalty: 2, promptTokens: [1] }]);
      assert.equal(a.ids[0], 2);
      // Both 1 and 2 seen (prompt and output): 2, 1.5, 2.5 unseen -> token 4 wins.
      const b = await be.sample(t, [{ ...base, repetitionPenalty: 2, promptTokens: [1], outputTokens: [2, 2] }]);
      assert.equal(b.ids[0], 4);
      // Negative logits get more negative: with everything seen but token 0 (-1) and 3 (-0.5 * 2 = -1),
      // a huge penalty leaves positives at ~0, so the ranking is 1, 2, 4 (~0+) over 0 and 3.
      const c = await be.sample(t, [{ ...base, repetitionPenalty: 1000, outputTokens: [1, 2, 3, 4] }]);
      assert.equal(c.ids[0], 1);
      be.resetScratch();
    });

    it('penalties apply per row', async () => {
      const be = make();
      const row = [0, 1, 2, 3, 1.5, 0];
      const t = be.upload(new Float32Array([...row, ...row]), [2, 6], 'f32', 'scratch');
      const r = await be.sample(t, [{ ...base, presencePenalty: 2, outputTokens: [3] }, { ...base }]);
      assert.deepEqual(Array.from(r.ids), [2, 3]);
      be.resetScratch();
    });

    it('top logprobs are the k most likely raw tokens, best first, ties by lower id', async () => {
      const be = make();
      const rng = new SeededRandom(3);
      const V = 1000;
      const logits = rng.normals(V, 3);
      logits[10] = logits[11] = 20; // a tie at the top
      const t = be.upload(logits, [1, V], 'f32', 'scratch');
      const r = await be.sample(t, [{ ...base, temperature: 1, seed: 4, topLogprobs: 5 }]);
      const ref = logSoftmax64(logits);
      const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => ref[b] - ref[a] || a - b);
      assert.deepEqual(Array.from(r.top[0].ids), order.slice(0, 5));
      r.top[0].logprobs.forEach((lp, j) => assert.ok(Math.abs(lp - ref[order[j]]) < logprobTol));
      const none = await be.sample(t, [{ ...base }]);
      assert.equal(none.top[0].ids.length, 0);
      be.resetScratch();
    });

    it('rejects penalty tokens outside the vocabulary and bad penalties', async () => {
      const be = make();
      const t = be.upload(new Float32Array(4), [1, 4], 'f32', 'scratch');
      await assert.rejects(be.sample(t, [{ ...base, presencePenalty: 1, outputTokens: [9] }]), /outside the vocabulary/);
      await assert.rejects(be.sample(t, [{ ...base, repetitionPenalty: 0 }]), /repetitionPenalty/);
      be.resetScratch();
    });
  });
}
