import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KvBlockManager } from '../../src/engine/kv-cache.ts';
import { Scheduler, type StepPlan } from '../../src/engine/scheduler.ts';
import { Sequence } from '../../src/engine/sequence.ts';

const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0 };

function seq(id: string, promptLength: number, priority = 0, first = 0): Sequence {
  return new Sequence(id, Array.from({ length: promptLength }, (_, i) => first + i), 100, GREEDY, priority, 0);
}

function scheduler(numBlocks: number, blockSize: number, maxNumBatchedTokens = 1000, maxNumSeqs = 100): Scheduler {
  return new Scheduler(new KvBlockManager(numBlocks, blockSize), { maxNumSeqs, maxNumBatchedTokens });
}

/** One step without a model: the scheduled tokens become computed, sampled rows get token 7. */
function step(s: Scheduler): StepPlan {
  const plan = s.schedule(0);
  s.completeStep(plan);
  for (const p of plan.scheduled) if (p.sample) p.seq.appendToken(7);
  return plan;
}

const summary = (plan: StepPlan) => plan.scheduled.map((p) => `${p.seq.requestId}:${p.numTokens}${p.sample ? '' : '…'}`);

describe('Scheduler', () => {
  it('admits waiting sequences while free blocks allow', () => {
    const s = scheduler(4, 4);
    const [a, b, c] = [seq('a', 8), seq('b', 8, 0, 20), seq('c', 8, 0, 50)];
    for (const q of [a, b, c]) s.add(q);
    assert.deepEqual(summary(step(s)), ['a:8', 'b:8']);
    assert.equal(c.status, 'waiting');
    assert.equal(s.blocks.numFree, 0);
  });

  it('fills the token budget, running decodes before admitting, and chunks what does not fit', () => {
    const s = scheduler(64, 4, 10);
    const [a, b] = [seq('a', 4), seq('b', 4, 0, 10)];
    s.add(a);
    s.add(b);
    assert.deepEqual(summary(step(s)), ['a:4', 'b:4']);
    const c = seq('c', 9, 0, 20);
    s.add(c);
    // Two decodes (1 token each), then c gets the 8 tokens left of the budget of 10.
    assert.deepEqual(summary(step(s)), ['a:1', 'b:1', 'c:8…']);
    assert.equal(c.numComputed, 8);
    assert.deepEqual(summary(step(s)), ['a:1', 'b:1', 'c:1']);
    assert.equal(c.numOutputTokens, 1);
  });

  it('runs a long prompt in chunks, sampling only after the last one', () => {
    const s = scheduler(64, 4, 8);
    const a = seq('a', 25);
    s.add(a);
    const plans = [step(s), step(s), step(s), step(s)];
    assert.deepEqual(plans.map(summary), [['a:8…'], ['a:8…'], ['a:8…'], ['a:1']]);
    assert.equal(a.numComputed, 25);
    assert.equal(a.numOutputTokens, 1);
    assert.equal(a.blockTable.length, 7);
    // The 6 full blocks are named: an identical prompt now finds 24 tokens cached.
    const twin = seq('twin', 25);
    s.add(twin);
    const plan = step(s);
    assert.deepEqual(plan.admitted.map((x) => x.hitTokens), [24]);
    assert.deepEqual(summary(plan), ['a:1', 'twin:1']);
  });

  it('caps running sequences at maxNumSeqs', () => {
    const s = scheduler(64, 4, 100, 2);
    for (const id of ['a', 'b', 'c']) s.add(seq(id, 3));
    assert.deepEqual(summary(step(s)), ['a:3', 'b:3']);
    assert.equal(s.waiting.length, 1);
  });

  it('admits by priority (lower first), then by arrival', () => {
    const s = scheduler(2, 4);
    const background = seq('background', 8, 10);
    const user = seq('user', 8, 0, 40);
    const user2 = seq('user2', 8, 0, 80);
    s.add(background);
    s.add(user);
    s.add(user2);
    assert.deepEqual(summary(step(s)), ['user:8']);
    assert.deepEqual(s.waiting.map((q) => q.requestId), ['user2', 'background']);
  });

  it('preempts the worst running sequence when one needs a block, and it recomputes from the cache', () => {
    // 5 blocks of 2: a and b take one each, c two; growing a and b needs two more.
    const s = scheduler(5, 2);
    const [a, b, c] = [seq('a', 2, 0, 0), seq('b', 2, 5, 10), seq('c', 4, 5, 20)];
    for (const q of [a, b, c]) s.add(q);
    step(s); // prefill: each samples its first token
    const plan = step(s); // a and b decode into a new block each; only one is free
    assert.deepEqual(plan.preempted, [c], 'worst priority, latest arrival');
    assert.deepEqual(summary(plan), ['a:1', 'b:1']);
    assert.equal(c.status, 'waiting');
    assert.equal(c.blockTable.length, 0);
    assert.equal(c.numComputed, 0);
    assert.equal(c.numOutputTokens, 1, 'its generated token is kept, to be recomputed');
    // b took one of c's freed blocks (its deep end); c's first block is still cached.
    s.remove(a);
    s.remove(b);
    const back = step(s);
    assert.deepEqual(back.admitted.map((x) => [x.seq.requestId, x.hitTokens, x.first]), [['c', 2, false]]);
    assert.deepEqual(summary(back), ['c:3']);
    assert.equal(c.numOutputTokens, 2);
  });

  it('preempts the sequence itself when it is the worst', () => {
    const s = scheduler(2, 2);
    const [a, b] = [seq('a', 2), seq('b', 2, 0, 10)];
    s.add(a);
    s.add(b);
    step(s);
    s.remove(a);
    // Hold a's freed block with another sequence so b cannot grow... b is alone and worst.
    const blocker = s.blocks.allocate(1);
    const plan = step(s);
    assert.deepEqual(plan.preempted, [b]);
    assert.equal(plan.scheduled.length, 0);
    s.blocks.release(blocker);
  });

  it('lets a user request preempt background work to get in, but not the reverse', () => {
    const s = scheduler(4, 4);
    const rollout = seq('rollout', 8, 10);
    s.add(rollout);
    step(s);
    const user = seq('user', 8, 0, 50);
    s.add(user);
    const plan = step(s); // rollout grows to 3 blocks; user needs 2 with 1 free
    assert.deepEqual(plan.preempted, [rollout]);
    assert.deepEqual(summary(plan), ['user:8']);
    // Background work cannot push the user out.
    const later = seq('later', 8, 10, 90);
    s.add(later);
    const next = step(s);
    assert.deepEqual(next.preempted, []);
    assert.deepEqual(summary(next), ['user:1']);
    assert.equal(later.status, 'waiting');
  });

  it('holds back a sequence whose next block another computes this step, so it shares it next step', () => {
    const s = scheduler(64, 4);
    const [a, b, c] = [seq('a', 10), seq('b', 10), seq('c', 10, 0, 100)];
    for (const q of [a, b, c]) s.add(q);
    const first = step(s);
    assert.deepEqual(summary(first), ['a:10', 'c:10'], 'b waits: its blocks are being computed by a');
    const second = step(s);
    assert.deepEqual(second.admitted.map((x) => [x.seq.requestId, x.hitTokens]), [['b', 8]]);
    assert.equal(b.cachedPromptTokens, 8);
    assert.deepEqual(b.blockTable.slice(0, 2), a.blockTable.slice(0, 2));
    assert.notEqual(b.blockTable[2], a.blockTable[2], 'the partial last block is its own');
  });

  it('frees every block of removed sequences', () => {
    const s = scheduler(16, 4);
    const q = [seq('a', 9), seq('b', 5, 0, 30)];
    for (const x of q) s.add(x);
    step(s);
    step(s);
    for (const x of q) s.remove(x);
    assert.equal(s.blocks.numUsed, 0);
    assert.equal(s.hasWork(), false);
  });
});
