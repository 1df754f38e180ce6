/**
 * Work that must wait for the engine steps in flight: an adapter version let go while a step
 * runs (an abort, or a stop string found one step late while the next step runs) may still be
 * read by that step on the device, so its unpin waits until every step launched so far has
 * settled. Steps settle in launch order (one device queue), so a step number is enough.
 */
export class StepFence {
  #launched = 0;
  #settled = 0;
  #waiting: { after: number; run: () => void }[] = [];

  /** Steps launched and not settled yet. */
  get inFlight(): number {
    return this.#launched - this.#settled;
  }

  /** Count a launched step until `result` settles (either way). */
  track(result: Promise<unknown>): void {
    const step = ++this.#launched;
    const settle = (): void => this.#settle(step);
    result.then(settle, settle);
  }

  /** Run `fn` now if no step is in flight, else once every step launched so far has settled. */
  afterInFlight(fn: () => void): void {
    if (this.inFlight === 0) fn();
    else this.#waiting.push({ after: this.#launched, run: fn });
  }

  #settle(step: number): void {
    this.#settled = Math.max(this.#settled, step);
    const due = this.#waiting.filter((w) => w.after <= this.#settled);
    this.#waiting = this.#waiting.filter((w) => w.after > this.#settled);
    for (const w of due) w.run();
  }
}
