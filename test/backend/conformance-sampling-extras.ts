/**
 * Conformance cases for the sampling extras (penalties, top logprobs), run against every
 * backend like conformance.ts. References are computed here in float64 from the same logits.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Backend, SamplingParams } from '../../src/backend/backend.ts';
import { uniformAt } from '../../src/backend/rng.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { sampleRef } from './reference.ts';

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

    it('counted penalty inputs (penaltyCounts, as the engine passes them) draw as the token lists do', async () => {
      const be = make();
      const V = 1000;
      const rng = new SeededRandom(31);
      const S = 6;
      const logits = Float32Array.from({ length: S * V }, () => 3 * rng.normal());
      const t = be.upload(logits, [S, V], 'f32', 'scratch');
      // Each row: a prompt and outputs drawn from the row's most likely ids (so penalties matter).
      const rows: SamplingParams[] = Array.from({ length: S }, (_, r) => {
        const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[r * V + b] - logits[r * V + a]);
        const pick = (n: number): number[] => Array.from({ length: n }, () => order[Math.floor(rng.uniform() * 12)]);
        const sampled = r % 2 === 1;
        return {
          ...base,
          temperature: sampled ? 0.8 : 0,
          topK: sampled ? 50 : 0,
          seed: 100 + r,
          step: r,
          repetitionPenalty: [1, 1.3, 2, 1.05, 1, 1.5][r],
          frequencyPenalty: [0.4, 0, 0.5, 0, 0.3, 0.2][r],
          presencePenalty: [0.6, 0, 0, 0.1, 1, 0][r],
          promptTokens: pick(20),
          outputTokens: pick(15),
          topLogprobs: 2,
        };
      });
      const counted = rows.map((p) => {
        const counts = new Map<number, number>();
        if ((p.repetitionPenalty ?? 1) !== 1) for (const id of p.promptTokens!) counts.set(id, 0);
        for (const id of p.outputTokens!) counts.set(id, (counts.get(id) ?? 0) + 1);
        const ids = Int32Array.from([...counts.keys()].sort((a, b) => a - b));
        const { outputTokens: _o, promptTokens: _p, ...rest } = p;
        return { ...rest, penaltyCounts: { ids, counts: Int32Array.from(ids, (id) => counts.get(id)!) } };
      });
      const fromLists = await be.sample(t, rows);
      const fromCounts = await be.sample(t, counted);
      const unpenalised = await be.sample(t, rows.map((p) => ({ ...p, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0 })));
      assert.deepEqual(Array.from(fromCounts.ids), Array.from(fromLists.ids));
      for (let r = 0; r < S; r++) {
        assert.ok(Math.abs(fromCounts.logprobs[r] - fromLists.logprobs[r]) <= logprobTol, `row ${r} logprob`);
        assert.deepEqual(Array.from(fromCounts.top[r].ids), Array.from(fromLists.top[r].ids), `row ${r} top ids`);
      }
      const moved = Array.from(fromLists.ids).filter((id, r) => id !== unpenalised.ids[r]).length;
      assert.ok(moved >= 3, `penalties moved only ${moved} of ${S} draws: the case does not test them`);
      // Malformed counted inputs are refused, as bad token lists are.
      const bad = (penaltyCounts: { ids: Int32Array; counts: Int32Array }) => be.sample(t, [{ ...base, presencePenalty: 1, penaltyCounts }, ...rows.slice(1)]);
      await assert.rejects(bad({ ids: Int32Array.of(5, 3), counts: Int32Array.of(1, 1) }), /ascending/);
      await assert.rejects(bad({ ids: Int32Array.of(3, V), counts: Int32Array.of(1, 1) }), /outside the vocabulary/);
      await assert.rejects(bad({ ids: Int32Array.of(3), counts: Int32Array.of(-1) }), /negative/);
      await assert.rejects(bad({ ids: Int32Array.of(3, 4), counts: Int32Array.of(1) }), /ids but/);
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

    it('a flat row of 2^16 tokens draws floor(u * 2^16): the uniform is uniformAt(seed, step)', async () => {
      // Equal weights, ids in order, cumulative mass j + 1 (exact): the draw is the first id whose
      // j + 1 > u * n, so it shows the top 16 of u's 24 bits; seeds and steps cover both words.
      const be = make();
      const n = 2 ** 16;
      const draws: Array<[number, number]> = [[0, 0], [1, 0], [-1, 3], [2 ** 40 + 5, 7], [-(2 ** 50) - 9, 2 ** 33 + 1], [123456789, 2 ** 32], [42, 1], [7, 2]];
      const t = be.upload(new Float32Array(draws.length * n), [draws.length, n], 'f32', 'scratch');
      const r = await be.sample(t, draws.map(([seed, step]) => ({ ...base, temperature: 1, seed, step })));
      draws.forEach(([seed, step], i) => assert.equal(r.ids[i], Math.floor(uniformAt(seed, step) * n), `seed ${seed} step ${step}`));
      be.resetScratch();
    });

    it('a Qwen-sized vocabulary (151936): draws match the reference for peaked, flat and tied rows', async () => {
      const be = make();
      const V = 151936;
      const rng = new SeededRandom(11);
      const rows: Array<[Float32Array, Partial<SamplingParams>]> = [];
      const peaked = (): Float32Array => {
        const x = rng.normals(V, 2);
        for (let j = 0; j < 20; j++) x[Math.floor(rng.uniform() * V)] = 8 + 0.3 * j;
        return x;
      };
      rows.push([peaked(), { temperature: 0.7, topP: 0.9 }]);
      rows.push([peaked(), { temperature: 1, topK: 50 }]);
      rows.push([peaked(), { temperature: 1, topK: 3000, topP: 0.99 }]); // top-k past any one-block sort
      rows.push([rng.normals(V, 0.5), { temperature: 1.5 }]); // flat: every bin crowded
      rows.push([new Float32Array(V).fill(0.25), { temperature: 1, topP: 0.5 }]); // one tie of V tokens
      rows.push([Float32Array.from(rng.normals(V, 3), (v) => Math.round(v)), { temperature: 1, minP: 0.1 }]); // tied groups
      rows.push([peaked(), { temperature: 0.3, topK: 40, topP: 0.8, minP: 0.02, topLogprobs: 5 }]);
      const data = new Float32Array(rows.length * V);
      rows.forEach(([x], r) => data.set(x, r * V));
      const params = rows.map(([, p], r) => ({ ...base, seed: 100 + r, step: 3 * r, ...p }));
      const res = await be.sample(be.upload(data, [rows.length, V], 'f32', 'scratch'), params);
      rows.forEach(([x], r) => {
        const ref = sampleRef(x, params[r]);
        if (!ref.ambiguous) assert.equal(res.ids[r], ref.id, `row ${r} under ${JSON.stringify(rows[r][1])}`);
        assert.ok(Math.abs(res.logprobs[r] - logSoftmax64(x)[res.ids[r]]) < logprobTol, `row ${r} logprob`);
      });
      const last = rows.length - 1;
      const lsm = logSoftmax64(rows[last][0]);
      const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => lsm[b] - lsm[a] || a - b);
      assert.deepEqual(Array.from(res.top[last].ids), order.slice(0, 5));
      be.resetScratch();
    });

    // Plain greedy rows (no penalties, no top logprobs) take an argmax-only path on a GPU, which
    // splits each of fewer than 64 rows of a large vocabulary over 32 blocks: 1 and 3 rows take
    // the split, 70 rows one block per row. The maxima sit at slice edges and tie across slices.
    for (const S of [1, 3, 70]) {
      it(`greedy rows of a Qwen-sized vocabulary, ${S} row${S > 1 ? 's' : ''}: the lowest id of the maximum and its logprob`, async () => {
        const be = make();
        const V = 151936;
        const slice = Math.ceil(V / 32);
        const rng = new SeededRandom(40 + S);
        const data = new Float32Array(S * V);
        const rowOf = (r: number): Float32Array => data.subarray(r * V, (r + 1) * V);
        for (let r = 0; r < S; r++) rowOf(r).set(rng.normals(V, 2));
        const special: ((x: Float32Array) => void)[] = [
          (x) => x.set([20], V - 1), // the last token (normals of std 2 stay far below 20)
          (x) => {
            x[7 * slice] = 20; // a slice's first token ties a later slice's last one: the lower id wins
            x[20 * slice - 1] = 20;
          },
          (x) => x.fill(-2), // one tie of V tokens: id 0
        ];
        special.forEach((f, r) => r < S && f(rowOf(r)));
        const res = await be.sample(be.upload(data, [S, V], 'f32', 'scratch'), Array.from({ length: S }, () => ({ ...base })));
        const expected = [V - 1, 7 * slice, 0];
        for (let r = 0; r < S; r++) {
          const x = rowOf(r);
          let best = 0;
          for (let i = 1; i < V; i++) if (x[i] > x[best]) best = i;
          if (r < expected.length) assert.equal(best, expected[r], `row ${r}'s reference`);
          assert.equal(res.ids[r], best, `row ${r}`);
          assert.ok(Math.abs(res.logprobs[r] - logSoftmax64(x)[best]) < logprobTol, `row ${r} logprob ${res.logprobs[r]}`);
          assert.equal(res.top[r].ids.length, 0);
        }
        be.resetScratch();
      });
    }

    it('rejects penalty tokens outside the vocabulary and bad penalties', async () => {
      const be = make();
      const t = be.upload(new Float32Array(4), [1, 4], 'f32', 'scratch');
      await assert.rejects(be.sample(t, [{ ...base, presencePenalty: 1, outputTokens: [9] }]), /outside the vocabulary/);
      await assert.rejects(be.sample(t, [{ ...base, repetitionPenalty: 0 }]), /repetitionPenalty/);
      be.resetScratch();
    });
  });
}
