// PenaltyCounter (src/engine/penalty-counts.ts): a sequence's penalty inputs kept token by token
// equal the ones counted from its whole prompt and output (penaltyCounts in cpu/penalties.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SamplingParams } from '../../src/backend/backend.ts';
import { penaltyCounts } from '../../src/backend/cpu/penalties.ts';
import { PenaltyCounter, SnapshotArena } from '../../src/engine/penalty-counts.ts';
import { Sequence } from '../../src/engine/sequence.ts';
import { SeededRandom } from '../../src/util/random.ts';

const base: SamplingParams = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, step: 0 };
const plain = (pc: { ids: Int32Array; counts: Int32Array }) => ({ ids: Array.from(pc.ids), counts: Array.from(pc.counts) });

describe('penalty counts', () => {
  it('kept token by token, they equal the counts of the whole context (past 64 distinct ids, with repeats)', () => {
    const rng = new SeededRandom(5);
    const prompt = Array.from({ length: 90 }, () => Math.floor(rng.uniform() * 300));
    const counter = new PenaltyCounter(prompt, []);
    const outputs: number[] = [];
    for (let i = 0; i < 400; i++) {
      const id = Math.floor(rng.uniform() * 500);
      counter.add(id);
      outputs.push(id);
      if (i % 37 === 0) {
        const want = penaltyCounts({ ...base, repetitionPenalty: 1.1, promptTokens: prompt, outputTokens: outputs });
        assert.deepEqual(plain(counter.snapshot()), plain(want), `after ${i + 1} outputs`);
      }
    }
    assert.ok(counter.size > 64, `only ${counter.size} distinct ids: the arrays never grew`);
    // Without the repetition penalty the prompt is not an input.
    const outputsOnly = new PenaltyCounter([], outputs);
    assert.deepEqual(plain(outputsOnly.snapshot()), plain(penaltyCounts({ ...base, frequencyPenalty: 0.5, promptTokens: prompt, outputTokens: outputs })));
  });

  it('a snapshot does not change with later tokens; placeholders are not counted; remove takes one back', () => {
    const counter = new PenaltyCounter([7, 3], [3]);
    const before = counter.snapshot();
    counter.add(-1); // a placeholder
    counter.add(9);
    assert.deepEqual(plain(before), { ids: [3, 7], counts: [1, 0] });
    assert.deepEqual(plain(counter.snapshot()), { ids: [3, 7, 9], counts: [1, 0, 1] });
    counter.remove(9);
    counter.remove(-1);
    assert.deepEqual(plain(counter.snapshot()), { ids: [3, 7, 9], counts: [1, 0, 0] });
    assert.throws(() => counter.remove(7), /not counted/);
    assert.throws(() => counter.remove(42), /not counted/);
  });

  it('a sequence passes counts that follow its tokens, placeholders set later included', () => {
    const seq = new Sequence('r', [5, 6, 5], 10, { ...base, repetitionPenalty: 1.2, presencePenalty: 0.5 }, 0, 0);
    seq.appendToken(6);
    assert.deepEqual(plain(seq.samplingParams().penaltyCounts!), { ids: [5, 6], counts: [0, 1] });
    seq.appendToken(-1); // the engine's placeholder, its id set when the step lands
    seq.setToken(seq.tokens.length - 1, 8);
    seq.appendToken(6);
    const p = seq.samplingParams();
    assert.deepEqual(plain(p.penaltyCounts!), plain(penaltyCounts({ ...p, penaltyCounts: undefined, promptTokens: seq.promptTokens, outputTokens: seq.outputTokens })));
    assert.deepEqual(plain(p.penaltyCounts!), { ids: [5, 6, 8], counts: [0, 2, 1] });
    assert.equal(new Sequence('q', [1], 10, { ...base }, 0, 0).samplingParams().penaltyCounts, undefined, 'no penalties: no counts');
  });

  it('snapshots in one arena equal their own copies, stay apart, and do not change with later tokens', () => {
    const rng = new SeededRandom(11);
    const counters = Array.from({ length: 12 }, (_, r) => {
      const prompt = Array.from({ length: 40 + 30 * r }, () => Math.floor(rng.uniform() * 900));
      return new PenaltyCounter(prompt, prompt.slice(0, r));
    });
    const arena = new SnapshotArena();
    const inArena = counters.map((c) => c.snapshot(arena)); // past the first block: later blocks too
    const copies = counters.map((c) => plain(c.snapshot()));
    assert.deepEqual(inArena.map(plain), copies);
    for (const c of counters) c.add(Math.floor(rng.uniform() * 2000)); // may insert before, shifting its arrays
    assert.deepEqual(inArena.map(plain), copies, 'later tokens leave the step\'s snapshots as they were');
    const fresh = new SnapshotArena();
    assert.deepEqual(counters.map((c) => plain(c.snapshot(fresh))), counters.map((c) => plain(c.snapshot())));
  });

  it('sampling params list one shape of fields, with counts in the arena when given', () => {
    const seq = new Sequence('r', [5, 6, 5], 10, { ...base, repetitionPenalty: 1.2, topLogprobs: 2 }, 0, 0);
    seq.appendToken(6);
    const p = seq.samplingParams(new SnapshotArena());
    assert.deepEqual(plain(p.penaltyCounts!), { ids: [5, 6], counts: [0, 1] });
    assert.equal(p.step, 1);
    assert.equal(p.topLogprobs, 2);
    assert.equal(p.repetitionPenalty, 1.2);
    const greedy = new Sequence('q', [1], 10, { ...base }, 0, 0).samplingParams(new SnapshotArena());
    assert.deepEqual(Object.keys(greedy), Object.keys(p), 'the same keys, penalised or not');
  });
});
