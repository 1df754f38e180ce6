/**
 * Per-sequence output: sampled ids -> text increments, with stop strings, stop token ids, eos
 * and max_tokens deciding when the sequence finishes, and logprobs entries per token.
 *
 * Stop strings: text that could still become the start of a stop string is held back until
 * the next tokens decide it, so a stop string that spans tokens never leaks even in part.
 * Formally, after each token the longest suffix of the unemitted text that is a proper prefix of
 * some stop string is held; everything before it is emitted. A stop string can then only start
 * inside the held text or the new text, which is the only text searched.
 *
 * Stop token ids and eos end the sequence with finishReason 'stop'; their text is not emitted
 * but they count as completion tokens and appear in tokenIds and logprobs (as OpenAI and vLLM
 * count them). stopReason is the id for a stop token id and null for eos (vLLM's convention).
 *
 * endsAt(id) answers, without detokenizing, whether push() of that id will end the sequence
 * whatever the text (stop token id, eos, max_tokens): the engine finishes those rows before it
 * launches the next step, and renders the rest while that step runs (engine.ts). Both go through
 * #endById, so they cannot disagree; a stop string is only ever found by push().
 */
import type { FinishReason, GenerationRequest, TokenLogprob } from './types.ts';
import type { TextTokenizer } from '../model/tokenizer.ts';
import type { IncrementalDetokenizer } from '../model/detokenizer.ts';
import { byteLevelTokenBytes } from '../model/detokenizer.ts';

/** What the sampler said about one token (SampleResult, one row). */
export interface SampledToken {
  id: number;
  logprob: number;
  top: { ids: Int32Array; logprobs: Float32Array };
}

export interface TokenOutput {
  /** Text that may be emitted now (possibly ''). */
  text: string;
  logprob?: TokenLogprob;
  finishReason?: FinishReason;
  stopReason?: string | number | null;
}

const lenientUtf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** id -> {token text, bytes}, shared by every sequence of an engine. */
export class TokenTexts {
  readonly #cache = new Map<number, { token: string; bytes: number[] }>();

  constructor(private readonly tokenizer: TextTokenizer) {}

  /** A token's bytes (its byte-level spelling decoded) and those bytes as text (U+FFFD where partial). */
  of(id: number): { token: string; bytes: number[] } {
    let hit = this.#cache.get(id);
    if (hit === undefined) {
      const spelled = this.tokenizer.idToToken(id);
      const bytes = spelled === undefined ? new Uint8Array(0) : byteLevelTokenBytes(spelled);
      hit = { token: lenientUtf8.decode(bytes), bytes: [...bytes] };
      this.#cache.set(id, hit);
    }
    return hit;
  }
}

export interface OutputOptions {
  stop: GenerationRequest['stop'];
  logprobs: number | null;
  skipSpecialTokens: boolean;
  maxTokens: number;
  eosTokenIds: readonly number[];
}

export class OutputProcessor {
  readonly #detok: IncrementalDetokenizer;
  readonly #stopStrings: readonly string[];
  readonly #stopIds: ReadonlySet<number>;
  readonly #eosIds: ReadonlySet<number>;
  /** Decoded text not emitted yet because it may begin a stop string. */
  #held = '';
  #count = 0;
  #finished = false;

  constructor(
    tokenizer: TextTokenizer,
    private readonly texts: TokenTexts,
    private readonly opts: OutputOptions,
  ) {
    this.#detok = tokenizer.createDetokenizer({ skipSpecialTokens: opts.skipSpecialTokens });
    this.#stopStrings = opts.stop.strings.filter((s) => s.length > 0);
    this.#stopIds = new Set(opts.stop.tokenIds);
    this.#eosIds = new Set(opts.stop.ignoreEos ? [] : opts.eosTokenIds);
  }

  get finished(): boolean {
    return this.#finished;
  }

  /** Tokens pushed so far: the completion tokens the request has been sent. */
  get numTokens(): number {
    return this.#count;
  }

  /** Whether push() of `id` as the next token ends the sequence, whatever its text. */
  endsAt(id: number): boolean {
    return this.#endById(id, this.#count + 1) !== null;
  }

  /** Feed the next sampled token. After a result with finishReason, push no more. */
  push(sampled: SampledToken): TokenOutput {
    if (this.#finished) throw new Error('OutputProcessor.push after the sequence finished');
    this.#count++;
    const out: TokenOutput = { text: '' };
    if (this.opts.logprobs !== null) out.logprob = this.#logprobEntry(sampled);
    const id = sampled.id;
    const end = this.#endById(id, this.#count);
    // A stop token id or eos ends before its text: that text is never emitted.
    if (end !== null && end.reason === 'stop') return this.#finish(out, end.reason, end.stopReason);
    const found = this.#append(this.#detok.push(id), out);
    if (found) return found;
    if (end !== null) return this.#finish(out, end.reason, end.stopReason);
    return out;
  }

  /** How the `count`-th token `id` ends the sequence by itself (null: only a stop string could). */
  #endById(id: number, count: number): { reason: FinishReason; stopReason: number | null } | null {
    if (this.#stopIds.has(id)) return { reason: 'stop', stopReason: id };
    if (this.#eosIds.has(id)) return { reason: 'stop', stopReason: null };
    if (count >= this.opts.maxTokens) return { reason: 'length', stopReason: null };
    return null;
  }

  /** Add new text: emit what is settled, finish if a stop string completed. */
  #append(text: string, out: TokenOutput): TokenOutput | null {
    const pending = this.#held + text;
    const stop = earliestStop(pending, this.#stopStrings);
    if (stop !== null) {
      out.text += pending.slice(0, stop.index);
      this.#held = '';
      this.#finished = true;
      out.finishReason = 'stop';
      out.stopReason = stop.string;
      return out;
    }
    const keep = heldSuffixLength(pending, this.#stopStrings);
    out.text += pending.slice(0, pending.length - keep);
    this.#held = pending.slice(pending.length - keep);
    return null;
  }

  /** The sequence ends: held text is plain text now, plus any unfinished UTF-8 character. */
  #finish(out: TokenOutput, reason: FinishReason, stopReason: string | number | null): TokenOutput {
    const tail = this.#held + this.#detok.flush();
    this.#held = '';
    this.#finished = true;
    const stop = earliestStop(tail, this.#stopStrings);
    if (stop !== null) {
      out.text += tail.slice(0, stop.index);
      out.finishReason = 'stop';
      out.stopReason = stop.string;
      return out;
    }
    out.text += tail;
    out.finishReason = reason;
    out.stopReason = stopReason;
    return out;
  }

  #logprobEntry(s: SampledToken): TokenLogprob {
    const top: TokenLogprob['top'] = [];
    const k = this.opts.logprobs ?? 0;
    for (let j = 0; j < Math.min(k, s.top.ids.length); j++) {
      const id = s.top.ids[j];
      top.push({ id, ...this.texts.of(id), logprob: s.top.logprobs[j] });
    }
    return { id: s.id, ...this.texts.of(s.id), logprob: s.logprob, top };
  }
}

/** The first stop string occurrence in text (earliest start; the longer string on a tie). */
export function earliestStop(text: string, stops: readonly string[]): { index: number; string: string } | null {
  let best: { index: number; string: string } | null = null;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i < 0) continue;
    if (best === null || i < best.index || (i === best.index && s.length > best.string.length)) best = { index: i, string: s };
  }
  return best;
}

/** Length of the longest suffix of text that is a proper prefix of some stop string. */
export function heldSuffixLength(text: string, stops: readonly string[]): number {
  let keep = 0;
  for (const s of stops) {
    for (let k = Math.min(s.length - 1, text.length); k > keep; k--) {
      if (text.endsWith(s.slice(0, k))) {
        keep = k;
        break;
      }
    }
  }
  return keep;
}
