/**
 * Token counts of one response: prompt tokens once per prompt (not per choice), completion
 * tokens summed over choices, cached tokens as the prefix cache served the first choice of
 * each prompt (the others share its blocks, so counting them would exceed prompt_tokens).
 */
import type { TokenEvent } from '../../engine/types.ts';

export interface UsageBody {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

export class UsageCounter {
  readonly #prompt: number[];
  readonly #cached: number[];
  readonly #completion: number[];

  /** `promptLengths[p]` is prompt p's token count; choice i belongs to prompt floor(i / n). */
  constructor(promptLengths: readonly number[], private readonly n: number) {
    this.#prompt = [...promptLengths];
    this.#cached = promptLengths.map(() => 0);
    this.#completion = new Array<number>(promptLengths.length * n).fill(0);
  }

  record(index: number, event: TokenEvent): void {
    if (event.usage) {
      // The engine's final count is authoritative (it includes a stop token's id).
      this.#completion[index] = event.usage.completionTokens;
      if (index % this.n === 0) this.#cached[index / this.n] = event.usage.cachedPromptTokens;
    } else {
      this.#completion[index] += event.tokenIds.length;
    }
  }

  body(): UsageBody {
    const prompt = sum(this.#prompt);
    const completion = sum(this.#completion);
    return {
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
      prompt_tokens_details: { cached_tokens: sum(this.#cached) },
    };
  }
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);
