/**
 * A sequence's penalty counts, kept up to date token by token: the distinct ids its penalties
 * touch, ascending, each with its count among the output tokens (0: seen in the prompt only).
 * Rebuilding them from the whole prompt and output every step (a Map and a sort per row) cost
 * ~0.9 ms of host time per 64-row serving step with Qwen's default repetition penalty, besides
 * the slices of the token lists (bench/host-serve.ts profile on the 2-core development machine,
 * 2026-12-07); an update here is a binary search and, for a new id, one shift of the arrays.
 */
import type { PenaltyCounts } from '../backend/backend.ts';
import { lowerBound } from '../backend/cpu/penalties.ts';

export class PenaltyCounter {
  #ids = new Int32Array(64);
  #counts = new Int32Array(64);
  #n = 0;

  /** Prompt ids (counted 0: the repetition penalty's "seen") and output ids (counted). */
  constructor(promptIds: readonly number[], outputIds: readonly number[]) {
    for (const id of promptIds) if (id >= 0) this.#slot(id);
    for (const id of outputIds) this.add(id);
  }

  /** Count one more output token `id` (negative ids, placeholders, are not tokens: ignored). */
  add(id: number): void {
    if (id < 0) return;
    const i = this.#slot(id); // (first: it may grow the arrays)
    this.#counts[i]++;
  }

  /** Take back one output token `id` counted before (a placeholder's id replaced). */
  remove(id: number): void {
    if (id < 0) return;
    const i = this.#find(id);
    if (i < 0 || this.#counts[i] === 0) throw new Error(`PenaltyCounter.remove: ${id} was not counted`);
    this.#counts[i]--;
  }

  /** Distinct ids tracked. */
  get size(): number {
    return this.#n;
  }

  /**
   * A copy of the counts (a step reads it after later tokens may have been added here), in
   * `arena` when given (one step's rows share its blocks), else in buffers of its own.
   */
  snapshot(arena?: SnapshotArena): PenaltyCounts {
    if (arena === undefined) return { ids: this.#ids.slice(0, this.#n), counts: this.#counts.slice(0, this.#n) };
    const ids = arena.take(this.#n);
    const counts = arena.take(this.#n);
    ids.set(this.#ids.subarray(0, this.#n));
    counts.set(this.#counts.subarray(0, this.#n));
    return { ids, counts };
  }

  /** Index of id, or -(insertion point) - 1. */
  #find(id: number): number {
    const lo = lowerBound(this.#ids, this.#n, id);
    return lo < this.#n && this.#ids[lo] === id ? lo : -lo - 1;
  }

  /** The index of id, inserted with count 0 if new. */
  #slot(id: number): number {
    const at = this.#find(id);
    if (at >= 0) return at;
    const i = -at - 1;
    if (this.#n === this.#ids.length) {
      const grow = (a: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> => {
        const b = new Int32Array(a.length * 2);
        b.set(a);
        return b;
      };
      this.#ids = grow(this.#ids);
      this.#counts = grow(this.#counts);
    }
    this.#ids.copyWithin(i + 1, i, this.#n);
    this.#counts.copyWithin(i + 1, i, this.#n);
    this.#ids[i] = id;
    this.#counts[i] = 0;
    this.#n++;
    return i;
  }
}

/**
 * Room for one step's snapshots: the rows' counts are copied into a few shared blocks rather than
 * two fresh buffers per row (a new ArrayBuffer costs V8 a backing store and external-memory
 * accounting). With the other host-side cuts of that change, 64 penalised rows of ~190 counted ids
 * took 94 instead of 155 us per step to build, check and pack (2-core development machine,
 * 2026-12-07). A step's arena is new (its views must outlive later steps' snapshots); its blocks
 * are dropped with it.
 */
export class SnapshotArena {
  #block = new Int32Array(0);
  #used = 0;

  /** A zeroed view of n ints, valid as long as the arena's views are referenced. */
  take(n: number): Int32Array {
    if (this.#used + n > this.#block.length) {
      this.#block = new Int32Array(Math.max(n, 2 * this.#block.length, ARENA_MIN_BLOCK));
      this.#used = 0;
    }
    const view = this.#block.subarray(this.#used, this.#used + n);
    this.#used += n;
    return view;
  }
}

/** Ints in an arena's first block (16 KiB): a few rows; later blocks double. */
const ARENA_MIN_BLOCK = 4096;
