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
    for (const id of promptIds) this.#slot(id);
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

  /** A copy of the counts (a step reads it after later tokens may have been added here). */
  snapshot(): PenaltyCounts {
    return { ids: this.#ids.slice(0, this.#n), counts: this.#counts.slice(0, this.#n) };
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
