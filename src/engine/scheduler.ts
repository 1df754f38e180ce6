/**
 * Decides what one engine step runs: one Transformer.forward over a packed batch that mixes
 * decodes (one token each), prefill chunks and recomputes, within a token budget.
 *
 * Order of a step:
 * 1. Running sequences, decodes first (one token each keeps inter-token latency flat), then
 *    unfinished prefills, best priority first. A sequence that needs a block when none is free
 *    preempts the worst running sequence (highest priority number, latest arrival), possibly
 *    itself: its blocks are freed and it waits to recompute (its full blocks stay in the prefix
 *    cache, so the recompute is often a cache hit).
 * 2. Unless step 1 had to preempt (memory is tight: admitting more would thrash), waiting
 *    sequences in priority order, while the budget, maxNumSeqs and free blocks allow. One that
 *    does not fit may preempt running sequences of strictly worse priority (users outrank
 *    rollouts); otherwise admission stops, so a lower priority never jumps the queue.
 *
 * A sequence gets blocks only for the tokens it runs this step (a long prompt runs in chunks
 * over several steps). A waiting sequence whose next uncached block is being computed in this
 * very step by another (n completions of one prompt, added together) waits one step and then
 * finds it in the prefix cache, instead of computing and storing it again.
 */
import { comparePriority, type Sequence } from './sequence.ts';
import type { KvBlockManager } from './kv-cache.ts';

export interface SchedulerLimits {
  /** Running sequences at most. */
  maxNumSeqs: number;
  /** Tokens per step, prefill chunks and decodes together. */
  maxNumBatchedTokens: number;
}

export interface ScheduledSeq {
  seq: Sequence;
  /** Tokens [seq.numComputed, seq.numComputed + numTokens) run this step. */
  numTokens: number;
  /** This step reaches the sequence's last token: its logits give the next token. */
  sample: boolean;
}

export interface Admission {
  seq: Sequence;
  /** Tokens looked up in the prefix cache and tokens found there. */
  queriedTokens: number;
  hitTokens: number;
  /** First admission (not a recompute after preemption). */
  first: boolean;
}

export interface StepPlan {
  scheduled: ScheduledSeq[];
  admitted: Admission[];
  preempted: Sequence[];
}

/** Mutable state of one schedule() call. */
interface StepDraft {
  budget: number;
  numbers: Map<Sequence, number>;
  admitted: Admission[];
  preempted: Sequence[];
  /** Hashes of blocks that become full and computed during this step. */
  pendingBlocks: Set<string>;
}

export class Scheduler {
  /** Both kept sorted by comparePriority. */
  readonly #waiting: Sequence[] = [];
  readonly #running: Sequence[] = [];

  constructor(
    readonly blocks: KvBlockManager,
    readonly limits: SchedulerLimits,
  ) {
    if (!Number.isInteger(limits.maxNumSeqs) || limits.maxNumSeqs < 1) throw new Error(`maxNumSeqs must be an integer >= 1, got ${limits.maxNumSeqs}`);
    if (!Number.isInteger(limits.maxNumBatchedTokens) || limits.maxNumBatchedTokens < 1) {
      throw new Error(`maxNumBatchedTokens must be an integer >= 1, got ${limits.maxNumBatchedTokens}`);
    }
  }

  get waiting(): readonly Sequence[] {
    return this.#waiting;
  }

  get running(): readonly Sequence[] {
    return this.#running;
  }

  hasWork(): boolean {
    return this.#waiting.length > 0 || this.#running.length > 0;
  }

  add(seq: Sequence): void {
    if (seq.status !== 'waiting' || seq.blockTable.length > 0) throw new Error(`scheduler.add: sequence ${seq.requestId} is ${seq.status}`);
    insertSorted(this.#waiting, seq);
  }

  /** Take a sequence out for good (finished, aborted, failed): frees its blocks at once. */
  remove(seq: Sequence): void {
    removeFrom(this.#waiting, seq);
    removeFrom(this.#running, seq);
    this.#freeBlocks(seq);
    seq.status = 'finished';
  }

  schedule(now: number): StepPlan {
    const draft: StepDraft = {
      budget: this.limits.maxNumBatchedTokens,
      numbers: new Map(),
      admitted: [],
      preempted: [],
      pendingBlocks: new Set(),
    };
    const byUrgency = [...this.#running].sort(
      (a, b) => Number(a.numUncomputed !== 1) - Number(b.numUncomputed !== 1) || comparePriority(a, b),
    );
    for (const seq of byUrgency) {
      if (draft.budget === 0) break;
      if (seq.status !== 'running') continue; // preempted by one scheduled before it
      const n = Math.min(seq.numUncomputed, draft.budget);
      if (this.#growOrPreempt(seq, n, draft)) this.#schedule(seq, n, draft);
    }
    if (draft.preempted.length === 0) {
      for (const seq of [...this.#waiting]) {
        if (draft.budget === 0) break;
        const outcome = this.#admit(seq, draft, now);
        if (outcome === 'blocked') break;
      }
    }
    const scheduled: ScheduledSeq[] = [];
    for (const [seq, numTokens] of draft.numbers) {
      scheduled.push({ seq, numTokens, sample: seq.numComputed + numTokens === seq.tokens.length });
    }
    return { scheduled, admitted: draft.admitted, preempted: draft.preempted };
  }

  /**
   * After the step's forward: the scheduled tokens are computed, and blocks that became full
   * are named in the prefix cache. Sequences removed meanwhile (aborted) are skipped.
   */
  completeStep(plan: StepPlan): void {
    const bs = this.blocks.blockSize;
    for (const { seq, numTokens } of plan.scheduled) {
      if (seq.status !== 'running') continue;
      const before = Math.floor(seq.numComputed / bs);
      seq.numComputed += numTokens;
      const after = Math.floor(seq.numComputed / bs);
      for (let i = before; i < after; i++) {
        this.blocks.register(seq.blockTable[i], seq.blockHash(i, bs), seq.tokens.slice(i * bs, (i + 1) * bs));
      }
    }
  }

  /** Give a running sequence the blocks for n more tokens, preempting others if need be. */
  #growOrPreempt(seq: Sequence, n: number, draft: StepDraft): boolean {
    const need = this.blocks.blocksFor(seq.numComputed + n) - seq.blockTable.length;
    while (need > this.blocks.numFree) {
      const victim = this.#running[this.#running.length - 1];
      this.#preempt(victim, draft);
      if (victim === seq) return false;
    }
    if (need > 0) seq.blockTable.push(...this.blocks.allocate(need));
    return true;
  }

  #admit(seq: Sequence, draft: StepDraft, now: number): 'admitted' | 'deferred' | 'blocked' {
    const bs = this.blocks.blockSize;
    for (;;) {
      if (this.#running.length >= this.limits.maxNumSeqs) {
        if (this.#preemptWorseThan(seq, draft)) continue;
        return 'blocked';
      }
      // At least the last token must run: its logits give the next token.
      const hit = this.blocks.findPrefix(seq, seq.tokens.length - 1);
      const nextBlock = hit.blocks.length;
      if ((nextBlock + 1) * bs <= seq.tokens.length && draft.pendingBlocks.has(seq.blockHash(nextBlock, bs))) {
        return 'deferred';
      }
      const cached = hit.blocks.length * bs;
      const n = Math.min(seq.tokens.length - cached, draft.budget);
      const fresh = this.blocks.blocksFor(cached + n) - hit.blocks.length;
      if (fresh + hit.numFreeHits > this.blocks.numFree) {
        if (this.#preemptWorseThan(seq, draft)) continue;
        return 'blocked';
      }
      this.blocks.acquire(hit.blocks);
      seq.blockTable.push(...hit.blocks, ...this.blocks.allocate(fresh));
      seq.numComputed = cached;
      const first = seq.firstScheduledTime === null;
      if (first) {
        seq.firstScheduledTime = now;
        seq.cachedPromptTokens = Math.min(cached, seq.promptLength);
      }
      removeFrom(this.#waiting, seq);
      seq.status = 'running';
      insertSorted(this.#running, seq);
      draft.admitted.push({ seq, queriedTokens: seq.tokens.length, hitTokens: cached, first });
      this.#schedule(seq, n, draft);
      return 'admitted';
    }
  }

  #schedule(seq: Sequence, n: number, draft: StepDraft): void {
    draft.numbers.set(seq, n);
    draft.budget -= n;
    const bs = this.blocks.blockSize;
    const end = Math.floor((seq.numComputed + n) / bs);
    for (let i = Math.floor(seq.numComputed / bs); i < end; i++) draft.pendingBlocks.add(seq.blockHash(i, bs));
  }

  /** Preempt the worst running sequence if it ranks strictly below `seq`. */
  #preemptWorseThan(seq: Sequence, draft: StepDraft): boolean {
    const worst = this.#running[this.#running.length - 1];
    if (worst === undefined || worst.priority <= seq.priority) return false;
    this.#preempt(worst, draft);
    return true;
  }

  /** Free a running sequence's blocks and send it back to wait; it recomputes what it had. */
  #preempt(seq: Sequence, draft: StepDraft): void {
    const n = draft.numbers.get(seq);
    if (n !== undefined) {
      draft.numbers.delete(seq);
      draft.budget += n;
    }
    const admitted = draft.admitted.findIndex((a) => a.seq === seq);
    if (admitted >= 0) draft.admitted.splice(admitted, 1);
    removeFrom(this.#running, seq);
    this.#freeBlocks(seq);
    seq.status = 'waiting';
    seq.numPreemptions++;
    insertSorted(this.#waiting, seq);
    draft.preempted.push(seq);
  }

  #freeBlocks(seq: Sequence): void {
    this.blocks.release(seq.blockTable);
    seq.blockTable.length = 0;
    seq.numComputed = 0;
  }
}

function insertSorted(list: Sequence[], seq: Sequence): void {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (comparePriority(list[mid], seq) <= 0) lo = mid + 1;
    else hi = mid;
  }
  list.splice(lo, 0, seq);
}

function removeFrom(list: Sequence[], seq: Sequence): void {
  const i = list.indexOf(seq);
  if (i >= 0) list.splice(i, 1);
}
