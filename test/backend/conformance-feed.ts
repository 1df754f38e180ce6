/**
 * Conformance of the ops that keep a step's sampled ids on the device for the next step (the
 * engine's async scheduling): sample(..., keepIds) stores the ids it returns, placeRows() moves
 * rows to named slots, and the two chain in queue order: the next step's embedding reads ids that
 * were never awaited.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Backend, DType, SamplingParams, Tensor } from '../../src/backend/backend.ts';
import { SeededRandom } from '../../src/util/random.ts';

export function runFeedConformance(be: () => Backend, floatDtype: DType): void {
  const randn = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);
  const upI = (data: readonly number[], lifetime: 'persistent' | 'scratch' = 'scratch'): Tensor =>
    be().upload(Int32Array.from(data), [data.length], 'i32', lifetime);
  const downI = async (t: Tensor): Promise<number[]> => Array.from((await be().download(t)) as Int32Array);
  const params = (p: Partial<SamplingParams>): SamplingParams => ({ temperature: 1, topK: 0, topP: 1, minP: 0, seed: 0, step: 0, ...p });

  describe('feed: sample keepIds and placeRows', () => {
    it('sample stores its ids in keepIds (greedy rows, drawn rows, top logprobs) and leaves the rest', async () => {
      const V = 300;
      const batches: SamplingParams[][] = [
        [params({ temperature: 0 })],
        Array.from({ length: 5 }, () => params({ temperature: 0 })),
        [params({ temperature: 0.8, seed: 3 }), params({ temperature: 0 }), params({ temperature: 1.2, topK: 20, seed: 4, topLogprobs: 3 })],
      ];
      for (const [b, ps] of batches.entries()) {
        const S = ps.length;
        const keep = upI(Array.from({ length: S + 2 }, () => -7), 'persistent');
        const res = await be().sample(be().upload(randn(S * V, 20 + b, 3), [S, V], floatDtype), ps, keep);
        assert.deepEqual(await downI(keep), [...res.ids, -7, -7], `batch ${b}`);
        be().free(keep);
      }
    });

    it('sample rejects a keepIds too small or not i32', async () => {
      const x = be().upload(randn(3 * 40, 30), [3, 40], floatDtype);
      const ps = [0, 1, 2].map(() => params({ temperature: 0 }));
      await assert.rejects(be().sample(x, ps, upI([0, 0])), /keepIds/);
      await assert.rejects(be().sample(x, ps, be().upload(new Float32Array(3), [3], 'f32', 'scratch')), /keepIds/);
    });

    it('placeRows writes rows to their slots and skips slots outside dst', async () => {
      const dst = upI([100, 101, 102, 103, 104, 105]);
      be().placeRows(dst, upI([7, 8, 9, 10]), upI([2, -1, 5, 6]));
      assert.deepEqual(await downI(dst), [100, 101, 7, 103, 104, 9]);
      const rows = be().upload(Float32Array.from([1, 2, 3, 4, 5, 6]), [3, 2], 'f32', 'scratch');
      const into = be().upload(new Float32Array(8), [4, 2], 'f32', 'scratch');
      be().placeRows(into, rows, upI([3, 0, 1]));
      assert.deepEqual(Array.from((await be().download(into)) as Float32Array), [3, 4, 5, 6, 0, 0, 1, 2]);
    });

    it('placeRows rejects mismatched dtypes, row sizes and slot counts', () => {
      const i = upI([1, 2, 3]);
      const f = be().upload(new Float32Array(3), [3], 'f32', 'scratch');
      assert.throws(() => be().placeRows(i, f, upI([0, 1, 2])), /placeRows: dst is i32 but src is f32/);
      const wide = be().upload(new Float32Array(6), [3, 2], 'f32', 'scratch');
      assert.throws(() => be().placeRows(wide, f, upI([0, 1, 2])), /placeRows: rows of dst/);
      assert.throws(() => be().placeRows(i, upI([4, 5]), upI([0])), /placeRows: slots/);
    });

    it('sample counts a pending token per penalised row: the previous step\'s id kept on the device, never awaited', async () => {
      const V = 300;
      // Step N: three greedy rows whose ids stay on the device.
      const keep = upI([0, 0, 0], 'persistent');
      const xN = randn(3 * V, 50, 1);
      const winners = [17, 123, 250];
      winners.forEach((id, r) => (xN[r * V + id] = 9));
      const stepN = be().sample(be().upload(xN, [3, V], floatDtype), [0, 1, 2].map(() => params({ temperature: 0 })), keep);
      // Step N+1, queued before N's ids are awaited. Row r's logits peak at the token N's row
      // pending[r] drew (3.0), a runner-up at 2.5: counted as one more output, the peak falls to
      // 3 / 1.5 - 0.4 - 0.6 = 1.0 and the runner-up wins; not counted, the peak stays.
      const rows = Int32Array.from([2, 0, -1, 1, 1]);
      const S = rows.length;
      const xNext = randn(S * V, 51, 0.3);
      const runnerUp = [40, 41, 42, 43, 44];
      for (let r = 0; r < S; r++) {
        if (rows[r] >= 0) xNext[r * V + winners[rows[r]]] = 3;
        xNext[r * V + runnerUp[r]] = 2.5;
      }
      const pen = { repetitionPenalty: 1.5, frequencyPenalty: 0.4, presencePenalty: 0.6 };
      const ps = [
        params({ temperature: 0, ...pen, outputTokens: [5, 5] }),
        params({ temperature: 0.7, topK: 2, seed: 9, step: 3, ...pen, promptTokens: [7], outputTokens: [] }),
        params({ temperature: 0, ...pen, outputTokens: [8] }),
        params({ temperature: 0 }), // no penalties: its pending token changes nothing
        params({ temperature: 0, frequencyPenalty: 1.5, outputTokens: [2] }),
      ];
      const xt = be().upload(xNext, [S, V], floatDtype);
      const withPending = be().sample(xt, ps, undefined, { ids: keep, rows });
      const [resN, got] = await Promise.all([stepN, withPending]);
      assert.deepEqual(Array.from(resN.ids), winners);
      // The same draw with the pending ids written into the rows' outputs on the host.
      const explicit = ps.map((p, r) => (rows[r] >= 0 && p.outputTokens !== undefined ? { ...p, outputTokens: [...p.outputTokens, winners[rows[r]]] } : p));
      const want = await be().sample(xt, explicit);
      assert.deepEqual(Array.from(got.ids), Array.from(want.ids));
      assert.deepEqual(Array.from(got.logprobs), Array.from(want.logprobs));
      assert.deepEqual([got.ids[0], got.ids[2], got.ids[3], got.ids[4]], [40, 42, winners[1], 44], 'the pending token moved rows 0 and 4, not the unpenalised row 3');
      // Bad pending rows are refused.
      await assert.rejects(be().sample(xt, ps, undefined, { ids: keep, rows: Int32Array.from([0, 0]) }), /pending/);
      await assert.rejects(be().sample(xt, ps, undefined, { ids: keep, rows: Int32Array.from([0, 0, 3, 0, 0]) }), /pending/);
      be().free(keep);
    });

    it("the next step's embedding reads sampled ids placed on the device, nothing awaited in between", async () => {
      const [V, C, S] = [64, 8, 3];
      const table = be().upload(randn(V * C, 40), [V, C], floatDtype);
      const tableHeld = (await be().download(table)) as Float32Array;
      const keep = upI([0, 0, 0], 'persistent');
      // Step N samples S rows; step N+1 runs 4 rows: N's rows 2 and 0 continue at slots 0 and 3,
      // N's row 1 ended (slot -1), slots 1 and 2 are new prompts' tokens from the host.
      const pending = be().sample(be().upload(randn(S * V, 41, 4), [S, V], floatDtype), [0, 1, 2].map(() => params({ temperature: 0 })), keep);
      const tokens = upI([-1, 5, 9, -1]);
      be().placeRows(tokens, keep, upI([3, -1, 0]));
      const emb = be().embedding(tokens, table);
      const [res, got] = await Promise.all([pending, be().download(emb)]);
      const ids = [res.ids[2], 5, 9, res.ids[0]];
      const want = ids.flatMap((id) => Array.from(tableHeld.subarray(id * C, (id + 1) * C)));
      assert.deepEqual(Array.from(got as Float32Array), want);
      be().free(keep);
    });
  });
}
