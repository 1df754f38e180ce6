// Reward functions by name: the built-in GSM8K five, plus any a user registers. Scoring goes
// through here so that a reward that throws or returns something other than a finite number
// fails with its own name in the message, instead of poisoning the advantages with NaN.
import { z } from 'zod';
import type { Example } from './data.ts';
import {
  correctnessReward,
  intReward,
  softFormatReward,
  strictFormatReward,
  xmlCountReward,
} from './rewards.ts';

/** What a reward sees: the rendered prompt text, the completion text, and the example. */
export interface RewardInput {
  prompt: string;
  completion: string;
  example: Example;
}

export type RewardFn = (input: RewardInput) => number | Promise<number>;

export interface RewardOptions {
  description?: string;
  /** Replace a reward already registered under this name (otherwise that is an error). */
  replace?: boolean;
}

export interface RegisteredReward {
  readonly name: string;
  readonly description: string;
  readonly fn: RewardFn;
}

/** A reward failed: threw, or gave something other than a finite number. */
export class RewardError extends Error {
  constructor(readonly reward: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RewardError';
  }
}

/** A reward to apply and its weight in the total, as job configs give it. */
export const rewardSpecSchema = z.object({
  name: z.string().min(1),
  weight: z.number().finite().default(1),
});
export type RewardSpec = z.input<typeof rewardSpecSchema>;

export interface Scores {
  /** Per completion: the sum of weight * value over the rewards. */
  totals: number[];
  /** Per reward name, unweighted, one value per completion (the trainer logs their means). */
  perReward: Record<string, number[]>;
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.:-]*$/;

export class RewardRegistry {
  readonly #rewards = new Map<string, RegisteredReward>();

  register(name: string, fn: RewardFn, opts: RewardOptions = {}): void {
    if (!NAME.test(name)) throw new Error(`reward name "${name}" is not valid: use letters, digits, _ . : -`);
    if (typeof fn !== 'function') throw new Error(`reward "${name}" is not a function`);
    if (this.#rewards.has(name) && !opts.replace) {
      throw new Error(`a reward named "${name}" is already registered; pass { replace: true } to replace it`);
    }
    this.#rewards.set(name, { name, description: opts.description ?? '', fn });
  }

  get(name: string): RegisteredReward {
    const reward = this.#rewards.get(name);
    if (reward === undefined) {
      throw new Error(`no reward named "${name}"; registered: ${[...this.#rewards.keys()].join(', ') || 'none'}`);
    }
    return reward;
  }

  list(): { name: string; description: string }[] {
    return [...this.#rewards.values()].map(({ name, description }) => ({ name, description }));
  }

  /** One reward on one completion, checked. */
  async score(name: string, input: RewardInput): Promise<number> {
    const reward = this.get(name);
    let value: unknown;
    try {
      value = await reward.fn(input);
    } catch (err) {
      throw new RewardError(name, `reward "${name}" threw on example ${input.example.id}: ${(err as Error)?.message ?? String(err)}`, {
        cause: err,
      });
    }
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      const shown = typeof value === 'number' ? String(value) : `${typeof value} ${JSON.stringify(value) ?? ''}`.trim();
      throw new RewardError(name, `reward "${name}" returned ${shown} on example ${input.example.id}; a reward must be a finite number`);
    }
    return value;
  }

  /** Every reward on every completion of a batch: per-completion totals and per-reward values. */
  async scoreCompletions(rewards: readonly RewardSpec[], batch: readonly RewardInput[]): Promise<Scores> {
    if (rewards.length === 0) throw new Error('no rewards given; name at least one, e.g. gsm8k_correctness');
    const specs = rewards.map((r) => rewardSpecSchema.parse(r));
    const seen = new Set<string>();
    for (const { name } of specs) {
      this.get(name);
      if (seen.has(name)) throw new Error(`reward "${name}" is listed twice; give it once with the summed weight`);
      seen.add(name);
    }
    const totals = new Array<number>(batch.length).fill(0);
    const perReward: Record<string, number[]> = {};
    for (const { name, weight } of specs) {
      const values = await Promise.all(batch.map((input) => this.score(name, input)));
      perReward[name] = values;
      values.forEach((v, i) => (totals[i] += weight * v));
    }
    return { totals, perReward };
  }
}

/** A registry holding the five GSM8K rewards of the reference recipe. */
export function createRewardRegistry(): RewardRegistry {
  const registry = new RewardRegistry();
  registry.register('gsm8k_correctness', ({ completion, example }) => correctnessReward(completion, example.answer), {
    description: '2.0 when the <answer> text equals the gold answer exactly',
  });
  registry.register('gsm8k_int', ({ completion }) => intReward(completion), {
    description: '0.5 when the <answer> text is all digits (Python str.isdigit)',
  });
  registry.register('gsm8k_strict_format', ({ completion }) => strictFormatReward(completion), {
    description: '0.5 for exactly "<reasoning>\\n…\\n</reasoning>\\n<answer>\\n…\\n</answer>\\n", one line each',
  });
  registry.register('gsm8k_soft_format', ({ completion }) => softFormatReward(completion), {
    description: '0.5 when the completion starts <reasoning>…</reasoning> <answer>…</answer> with no newline inside',
  });
  registry.register('gsm8k_xmlcount', ({ completion }) => xmlCountReward(completion), {
    description: '0.125 per well-placed tag, less 0.001 per character after </answer>',
  });
  return registry;
}

/** The reference notebook's reward list, in its order, each with weight 1. */
export const GSM8K_REWARDS: readonly RewardSpec[] = [
  { name: 'gsm8k_xmlcount' },
  { name: 'gsm8k_soft_format' },
  { name: 'gsm8k_strict_format' },
  { name: 'gsm8k_int' },
  { name: 'gsm8k_correctness' },
];

// The process-wide registry, for job configs that name rewards.
const defaultRegistry = createRewardRegistry();

export function registerReward(name: string, fn: RewardFn, opts?: RewardOptions): void {
  defaultRegistry.register(name, fn, opts);
}

export function getReward(name: string): RegisteredReward {
  return defaultRegistry.get(name);
}

export function listRewards(): { name: string; description: string }[] {
  return defaultRegistry.list();
}

export function scoreCompletions(rewards: readonly RewardSpec[], batch: readonly RewardInput[]): Promise<Scores> {
  return defaultRegistry.scoreCompletions(rewards, batch);
}
