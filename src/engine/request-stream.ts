/**
 * One request's events as an AsyncIterable: the engine pushes, the caller pulls. Events queue
 * up while nobody is reading (the engine never waits for a reader). Leaving the iteration
 * early (break, return(), a thrown error in the loop body) calls `onCancel` once, which aborts
 * the request in the engine.
 */
import type { TokenEvent } from './types.ts';

type Waiter = { resolve: (r: IteratorResult<TokenEvent>) => void; reject: (err: unknown) => void };

export class RequestStream implements AsyncIterable<TokenEvent> {
  readonly #queue: TokenEvent[] = [];
  #waiter: Waiter | null = null;
  #ended = false;
  #error: { err: unknown } | null = null;
  #iterated = false;

  constructor(private readonly onCancel: () => void) {}

  /** True once end() or fail() was called. */
  get ended(): boolean {
    return this.#ended;
  }

  push(event: TokenEvent): void {
    if (this.#ended) return;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = null;
      w.resolve({ value: event, done: false });
    } else {
      this.#queue.push(event);
    }
  }

  /** No more events: the reader gets what is queued, then done. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#wakeAtEnd();
  }

  /** The request failed: the reader gets what is queued, then `err` is thrown. */
  fail(err: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#error = { err };
    this.#wakeAtEnd();
  }

  [Symbol.asyncIterator](): AsyncIterator<TokenEvent> {
    if (this.#iterated) throw new Error('a request stream can be iterated only once');
    this.#iterated = true;
    return {
      next: () => this.#next(),
      return: async () => {
        this.#cancel();
        return { value: undefined, done: true };
      },
      throw: async (err?: unknown) => {
        this.#cancel();
        throw err;
      },
    };
  }

  #next(): Promise<IteratorResult<TokenEvent>> {
    const event = this.#queue.shift();
    if (event !== undefined) return Promise.resolve({ value: event, done: false });
    if (this.#ended) {
      if (this.#error) {
        const { err } = this.#error;
        this.#error = null; // thrown once; afterwards the stream is simply done
        return Promise.reject(err);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    if (this.#waiter) return Promise.reject(new Error('request stream: next() called again before the previous one settled'));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  #cancel(): void {
    this.#queue.length = 0;
    if (!this.#ended) this.onCancel();
    this.#ended = true;
    this.#error = null;
  }

  #wakeAtEnd(): void {
    if (!this.#waiter) return;
    const w = this.#waiter;
    this.#waiter = null;
    // The queue is empty whenever a reader waits, so the end is what it gets.
    if (this.#error) {
      const { err } = this.#error;
      this.#error = null;
      w.reject(err);
    } else {
      w.resolve({ value: undefined, done: true });
    }
  }
}
