/**
 * GRPO rollouts through the serving engine: G completions per prompt, sampled with the policy
 * adapter at rollout priority, so they batch with (and yield to) user requests and share each
 * prompt's KV blocks through the prefix cache.
 *
 * Seeds: completion g of prompt p at step s draws from seed hash(jobSeed, s, p, g), so a
 * deterministic job samples the same completions whatever else the engine is running.
 */
import type { Engine } from '../engine/engine.ts';
import type { FinishReason } from '../engine/types.ts';

/** User requests have priority 0; rollouts run when no user request is waiting. */
export const ROLLOUT_PRIORITY = 10;

export interface RolloutOptions {
  /** Adapter name the engine generates with (null: the base model). */
  adapter: string | null;
  numGenerations: number;
  maxCompletionTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  minP: number;
  repetitionPenalty: number;
  /** Seed of the job; with step and indices it fixes every draw. */
  seed: number;
  step: number;
  /** Prefix for request ids (must be unique among live requests). */
  requestPrefix: string;
}

export interface Completion {
  /** Sampled ids, the end-of-sequence / stop token included when generation stopped on one. */
  ids: number[];
  text: string;
  finishReason: FinishReason;
  /** Tokens of this completion's prompt that the prefix cache served. */
  cachedPromptTokens: number;
}

/** 32-bit mix of the job seed and a draw's coordinates (splitmix-style finaliser). */
export function rolloutSeed(seed: number, step: number, prompt: number, g: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [step, prompt, g]) {
    h = Math.imul(h ^ (v >>> 0), 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
    h = Math.imul(h, 0xc2b2ae35) >>> 0;
    h = (h ^ (h >>> 16)) >>> 0;
  }
  return h;
}

/** G completions for each prompt; result[p][g]. Rejects if any request fails. */
export async function generateRollouts(engine: Engine, prompts: readonly (readonly number[])[], o: RolloutOptions): Promise<Completion[][]> {
  const one = async (p: number, g: number, onFirst?: () => void): Promise<Completion> => {
    const ids: number[] = [];
    let text = '';
    let finishReason: FinishReason = 'length';
    let cached = 0;
    const stream = engine.add({
      requestId: `${o.requestPrefix}-${o.step}-${p}-${g}`,
      promptIds: prompts[p],
      maxTokens: o.maxCompletionTokens,
      sampling: {
        temperature: o.temperature,
        topK: o.topK,
        topP: o.topP,
        minP: o.minP,
        seed: rolloutSeed(o.seed, o.step, p, g),
        presencePenalty: 0,
        frequencyPenalty: 0,
        repetitionPenalty: o.repetitionPenalty,
      },
      stop: { strings: [], tokenIds: [], ignoreEos: false },
      logprobs: null,
      priority: ROLLOUT_PRIORITY,
      adapter: o.adapter,
      skipSpecialTokens: true,
    });
    for await (const ev of stream) {
      onFirst?.();
      ids.push(...ev.tokenIds);
      text += ev.text;
      if (ev.finishReason) finishReason = ev.finishReason;
      if (ev.usage) cached = ev.usage.cachedPromptTokens;
    }
    if (finishReason === 'abort') throw new Error(`rollout ${p}/${g} of step ${o.step} was aborted`);
    return { ids, text, finishReason, cachedPromptTokens: cached };
  };
  // The first completion of a prompt goes first; once it has produced a token its prompt's full
  // KV blocks are in the prefix cache, and the other G - 1 reuse them instead of prefilling again.
  const group = async (p: number): Promise<Completion[]> => {
    let release!: () => void;
    const prefilled = new Promise<void>((resolve) => (release = resolve));
    const first = one(p, 0, release);
    first.catch(() => release());
    await prefilled;
    const rest = Array.from({ length: o.numGenerations - 1 }, (_, g) => one(p, g + 1));
    return Promise.all([first, ...rest]);
  };
  return Promise.all(prompts.map((_, p) => group(p)));
}
