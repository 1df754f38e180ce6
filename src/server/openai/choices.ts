/**
 * One HTTP request becomes several engine requests (n choices per prompt). This starts them
 * all or none, merges their event streams, and makes sure that however the HTTP side ends
 * (finished, client gone, error) no engine request outlives it.
 */
import type { GenerationRequest, TokenEvent } from '../../engine/types.ts';
import { EngineError } from '../../engine/types.ts';
import { ApiError, fromEngineError } from '../errors.ts';
import type { ServingEngine } from '../state.ts';

export interface ChoiceEvent {
  /** Position of the choice in the response (prompt index * n + choice index). */
  index: number;
  event: TokenEvent;
}

export class ChoiceSet {
  readonly #engine: ServingEngine;
  readonly #ids: string[];
  readonly #streams: AsyncIterable<TokenEvent>[];
  readonly #open: Set<number>;

  /**
   * Adds every request to the engine. If one is refused (queue full, context too long), the
   * ones already added are aborted and the refusal is thrown as an ApiError; `paramOf` turns
   * the engine's field name (it says 'prompt') into the request's (e.g. 'messages').
   */
  constructor(
    engine: ServingEngine,
    requests: GenerationRequest[],
    paramOf: (engineParam: string | null, requestIndex: number) => string | null,
  ) {
    this.#engine = engine;
    this.#ids = requests.map((r) => r.requestId);
    this.#streams = [];
    try {
      for (const r of requests) this.#streams.push(engine.add(r));
    } catch (err) {
      for (const id of this.#ids.slice(0, this.#streams.length)) engine.abort(id);
      if (!(err instanceof EngineError)) throw err;
      const apiError = fromEngineError(err);
      throw new ApiError(apiError.status, apiError.message, paramOf(err.param, this.#streams.length), apiError.code);
    }
    this.#open = new Set(this.#ids.map((_, i) => i));
  }

  get size(): number {
    return this.#ids.length;
  }

  /** Aborts every choice that has not finished; harmless after they all have. */
  abort(): void {
    for (const i of this.#open) this.#engine.abort(this.#ids[i]);
    this.#open.clear();
  }

  /**
   * Events of all choices in the order they arrive (choices interleave; each choice's own
   * events stay in order). Leaving the loop early, or an error, aborts the unfinished choices.
   */
  async *events(): AsyncGenerator<ChoiceEvent> {
    const iterators = this.#streams.map((s) => s[Symbol.asyncIterator]());
    type Next = { index: number; result: IteratorResult<TokenEvent> };
    const pending = new Map<number, Promise<Next>>();
    const pull = (index: number): void => {
      const p = iterators[index].next().then((result) => ({ index, result }));
      p.catch(() => {}); // a rejection is seen by the race below, or no longer matters
      pending.set(index, p);
    };
    iterators.forEach((_, i) => pull(i));
    try {
      while (pending.size > 0) {
        const { index, result } = await Promise.race(pending.values());
        if (result.done) {
          pending.delete(index);
          this.#open.delete(index);
          continue;
        }
        if (result.value.finishReason !== undefined) this.#open.delete(index);
        pull(index);
        yield { index, event: result.value };
      }
    } finally {
      if (this.#open.size > 0) {
        this.abort();
        // Let the engine's generators run their cleanup; none of them is awaited here because
        // a generator's return() waits for its pending next(), which an abort ends soon.
        for (const [i] of pending) void iterators[i].return?.().catch(() => {});
      }
    }
  }
}
