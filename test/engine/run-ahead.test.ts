// Async scheduling's row rules (src/engine/run-ahead.ts): which rows may keep their ids on the
// device, and where a queued step's penalised rows find their pending id.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SamplingParams } from '../../src/backend/backend.ts';
import { keepable, pendingRows, type AheadStep } from '../../src/engine/run-ahead.ts';
import type { StepPlan } from '../../src/engine/scheduler.ts';
import { Sequence } from '../../src/engine/sequence.ts';

const base: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, step: 0 };

describe('run-ahead rules', () => {
  it('keepable: up to 20 top logprobs; penalised rows where the device samples their vocabulary', () => {
    assert.equal(keepable({ ...base, topLogprobs: 20 }, 1000), true);
    assert.equal(keepable({ ...base, topLogprobs: 21 }, 1000), false);
    const penalised = { ...base, repetitionPenalty: 1.05 };
    assert.equal(keepable(penalised, 151936), true, 'no limit (cpu)');
    assert.equal(keepable(penalised, 151936, 1 << 20), true);
    assert.equal(keepable(penalised, 2 << 20, 1 << 20), false, 'a vocabulary past the device sampler');
    assert.equal(keepable(base, 2 << 20, 1 << 20), true, 'unpenalised rows take no bitmap');
  });

  it("pendingRows: each sampled row's index among the previous step's kept ids, null without penalties", () => {
    const seq = (id: string, penalised: boolean) => new Sequence(id, [1, 2], 10, { ...base, ...(penalised ? { presencePenalty: 1 } : {}) }, 0, 0);
    const [a, b, c, d] = [seq('a', true), seq('b', false), seq('c', true), seq('d', true)];
    const planOf = (seqs: Sequence[]): StepPlan => ({ scheduled: seqs.map((s) => ({ seq: s, numTokens: 1, sample: true })) }) as unknown as StepPlan;
    // prev sampled a, b, c (its kept ids in that order); the next step runs c, a, d, b.
    const prev: AheadStep = { plan: planOf([a, b, c]), sampleAt: [0, 1, 2], keep: null, ahead: null };
    assert.deepEqual(Array.from(pendingRows(prev, planOf([c, a, d, b]), [0, 1, 2, 3])!), [2, 0, -1, 1]);
    assert.deepEqual(Array.from(pendingRows(prev, planOf([c, a, d, b]), [1, 3])!), [0, 1], 'only the sampled rows, in sampleAt order');
    assert.equal(pendingRows(prev, planOf([b]), [0]), null, 'no penalised row: nothing to look up');
  });
});
