/**
 * What the serving engine offers the layers above it (server, trainer). Nothing here knows
 * about HTTP: the server maps these to OpenAI's request and response shapes.
 */

export interface EngineSampling {
  /** 0 = greedy. */
  temperature: number;
  /** <= 0: off. */
  topK: number;
  /** 1: off. */
  topP: number;
  /** 0: off. */
  minP: number;
  /** null: a fresh random seed per request. */
  seed: number | null;
  presencePenalty: number;
  frequencyPenalty: number;
  /** 1: off. */
  repetitionPenalty: number;
}

export interface GenerationRequest {
  /** Unique among live requests; used by abort(). */
  requestId: string;
  promptIds: readonly number[];
  /** Tokens to generate at most; the engine checks prompt + maxTokens against the context. */
  maxTokens: number;
  sampling: EngineSampling;
  /**
   * Generation finishes when the text contains a stop string (the string and anything after it
   * are not emitted, even when it spans tokens), emits a stop token id (not emitted as text), or
   * emits an end-of-sequence token unless ignoreEos.
   */
  stop: { strings: readonly string[]; tokenIds: readonly number[]; ignoreEos: boolean };
  /** null: no logprobs; 0: the chosen token's; k > 0: also the k most likely alternatives. */
  logprobs: number | null;
  /** Lower runs sooner: user requests 0, background rollouts higher. */
  priority: number;
  /**
   * Name of a loaded LoRA adapter (engine.adapters) to generate with; absent or null: the base
   * model. The request uses the version current when add() is called, to its end.
   */
  adapter?: string | null;
  /** Skip special tokens when detokenizing (OpenAI default true). */
  skipSpecialTokens: boolean;
  /** Aborts the request when it fires (client disconnect). */
  signal?: AbortSignal;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface TokenLogprob {
  id: number;
  /** The token's text (may be a fragment of a UTF-8 character for byte-level tokens). */
  token: string;
  /** The token's UTF-8 bytes. */
  bytes: number[];
  logprob: number;
  top: { id: number; token: string; bytes: number[]; logprob: number }[];
}

/** One increment of a request's output. The last event carries finishReason and usage. */
export interface TokenEvent {
  /** Token ids sampled since the previous event (a stop token included). */
  tokenIds: number[];
  /** New text since the previous event, with stop strings removed. */
  text: string;
  /** One entry per token id, when logprobs were asked for. */
  logprobs?: TokenLogprob[];
  finishReason?: FinishReason;
  /** The stop string or stop token id that ended generation, if any. */
  stopReason?: string | number | null;
  usage?: { promptTokens: number; completionTokens: number; cachedPromptTokens: number };
}

export type EngineErrorCode =
  | 'context_length_exceeded'
  | 'queue_full'
  | 'invalid_request'
  | 'shutting_down'
  | 'out_of_capacity'
  /** The request names an adapter that is not loaded. */
  | 'model_not_found';

/** An error the caller caused or can act on; the server maps it to a 4xx. */
export class EngineError extends Error {
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvBlocksUsed: number;
  kvBlocksTotal: number;
  /** Cumulative prompt tokens served from the prefix cache / looked up. */
  prefixCacheHits: number;
  prefixCacheQueries: number;
}

/**
 * What a step ran, for the step-time metric: `graph` a replayed decode graph, `decode` one token
 * per row run eagerly, `prefill` only chunks of several tokens, `mixed` both (a chunk of a new
 * prompt packed with decodes: serving's steps while requests come and go).
 */
export type StepKind = 'graph' | 'decode' | 'mixed' | 'prefill';
