/**
 * One request's state inside the engine: its tokens (prompt, then what was generated), where
 * their K/V live (block table), how many of them are computed, and when things happened.
 *
 * Prefill, chunked prefill, decode and recompute after preemption are one mechanism: each step
 * the scheduler runs some of the tokens [numComputed, tokens.length); when a step reaches the
 * last token, its logits give the next token. A fresh sequence has the whole prompt uncomputed,
 * a decoding one just its last sampled token, a preempted one everything (prompt and output),
 * which it recomputes without emitting again.
 */
import type { SamplingParams } from '../backend/backend.ts';
import { hasPenalties } from '../backend/cpu/penalties.ts';
import type { AdapterVersion } from './adapters.ts';
import { BlockHashChain, chainRoot, type HashedTokens } from './kv-cache.ts';
import { PenaltyCounter, type SnapshotArena } from './penalty-counts.ts';

export type SequenceStatus = 'waiting' | 'running' | 'finished';

/** Lower runs sooner; on equal priority, earlier arrival. */
export function comparePriority(a: Sequence, b: Sequence): number {
  return a.priority - b.priority || a.arrivalOrder - b.arrivalOrder;
}

let nextArrivalOrder = 0;

export class Sequence implements HashedTokens {
  readonly tokens: number[];
  readonly promptLength: number;
  status: SequenceStatus = 'waiting';
  /** KV block ids holding positions [0, blockTable.length * blockSize). */
  readonly blockTable: number[] = [];
  /** Tokens whose K/V are in the cache (computed by a step or found in the prefix cache). */
  numComputed = 0;
  /** Prompt tokens served by the prefix cache when first admitted (usage, metrics). */
  cachedPromptTokens = 0;
  /** Times this sequence was preempted and sent back to recompute. */
  numPreemptions = 0;
  /** Global tiebreak among equal priorities: the order add() saw the requests in. */
  readonly arrivalOrder = nextArrivalOrder++;
  readonly #hashes: BlockHashChain;
  /** The penalties' counts, made on the first penalised draw and kept up to date after it. */
  #penalties: PenaltyCounter | undefined;

  // Timestamps in seconds (performance.now() / 1000), for metrics.
  readonly arrivalTime: number;
  firstScheduledTime: number | null = null;
  firstTokenTime: number | null = null;
  lastTokenTime: number | null = null;

  constructor(
    readonly requestId: string,
    promptIds: readonly number[],
    readonly maxTokens: number,
    /** The row's sampling parameters except `step`, which is the number of tokens generated. */
    readonly sampling: Omit<SamplingParams, 'step' | 'outputTokens' | 'promptTokens'>,
    readonly priority: number,
    now: number,
    /** The adapter version pinned for this sequence's whole life (recomputes too); null: base model. */
    readonly adapter: AdapterVersion | null = null,
  ) {
    this.#hashes = new BlockHashChain(chainRoot(adapter?.id ?? null));
    this.tokens = [...promptIds];
    this.promptLength = promptIds.length;
    this.arrivalTime = now;
  }

  get numOutputTokens(): number {
    return this.tokens.length - this.promptLength;
  }

  get outputTokens(): number[] {
    return this.tokens.slice(this.promptLength);
  }

  get promptTokens(): number[] {
    return this.tokens.slice(0, this.promptLength);
  }

  /** Tokens still to run through the model before the next token can be sampled. */
  get numUncomputed(): number {
    return this.tokens.length - this.numComputed;
  }

  get isFinished(): boolean {
    return this.status === 'finished';
  }

  blockHash(index: number, blockSize: number): string {
    return this.#hashes.at(this.tokens, index, blockSize);
  }

  /** Record a sampled token (its K/V are computed by the next step). */
  appendToken(id: number): void {
    this.tokens.push(id);
    this.#penalties?.add(id);
  }

  /**
   * Give token `at` its id: a placeholder appended when the next step was launched before this
   * one's id came back (the engine's async scheduling; that step read the id on the device).
   */
  setToken(at: number, id: number): void {
    if (!Number.isInteger(at) || at < this.promptLength || at >= this.tokens.length) {
      throw new Error(`setToken: ${at} is not an output token of ${this.requestId} (${this.promptLength} + ${this.numOutputTokens} tokens)`);
    }
    this.#penalties?.remove(this.tokens[at]);
    this.tokens[at] = id;
    this.#penalties?.add(id);
    this.#hashes.forgetFrom(at);
  }

  /**
   * This row's parameters for backend.sample(); the draw index is the tokens generated so far.
   * Penalty counts are copied into `arena` when given (see SnapshotArena). The fields are listed
   * rather than spread: one object shape for every row (a spread of the request's object cost
   * ~1 us per row per step).
   */
  samplingParams(arena?: SnapshotArena): SamplingParams {
    const s = this.sampling;
    const penalised = hasPenalties(s);
    // Counted as tokens arrive (penalty-counts.ts), not from the whole context every step.
    if (penalised) this.#penalties ??= new PenaltyCounter((s.repetitionPenalty ?? 1) !== 1 ? this.promptTokens : [], this.outputTokens);
    return {
      temperature: s.temperature,
      topK: s.topK,
      topP: s.topP,
      minP: s.minP,
      seed: s.seed,
      step: this.numOutputTokens,
      presencePenalty: s.presencePenalty,
      frequencyPenalty: s.frequencyPenalty,
      repetitionPenalty: s.repetitionPenalty,
      topLogprobs: s.topLogprobs,
      penaltyCounts: penalised ? this.#penalties!.snapshot(arena) : undefined,
    };
  }
}
