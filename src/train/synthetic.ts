// A built-in, seeded set of small arithmetic word problems in GSM8K's format, so training
// runs offline and a tiny model has something it can learn fast (single-digit sums at the
// easy end). Problems go through the same GSM8K path as the real set, so the built-in
// gsm8k_* rewards score them unchanged.
import { SeededRandom } from '../util/random.ts';
import { gsm8kExample, type Example } from './data.ts';

export type Operation = '+' | '-' | '*';

export interface Difficulty {
  /** Operations to draw from, one per step. */
  operations: readonly Operation[];
  /** Operations per problem (1 = "a + b"). */
  steps: number;
  /** Largest number added or subtracted, and largest starting amount (from 1). */
  maxOperand: number;
  /** Largest multiplier, kept small so answers stay readable. */
  maxMultiplier?: number;
}

export const DIFFICULTIES = {
  /** "Ann has 3 apples. She gets 4 more." Answers 2..18: learnable by a tiny model. */
  'single-digit-add': { operations: ['+'], steps: 1, maxOperand: 9 },
  'add-sub-20': { operations: ['+', '-'], steps: 1, maxOperand: 20 },
  'two-step-100': { operations: ['+', '-', '*'], steps: 2, maxOperand: 100, maxMultiplier: 9 },
  'three-step-1000': { operations: ['+', '-', '*'], steps: 3, maxOperand: 1000, maxMultiplier: 12 },
} as const satisfies Record<string, Difficulty>;

export type DifficultyName = keyof typeof DIFFICULTIES;

export interface SyntheticOptions {
  count: number;
  seed: number;
  difficulty?: DifficultyName | Difficulty;
}

const NAMES = [
  ['Ann', 'She', 'she'], ['Ben', 'He', 'he'], ['Carla', 'She', 'she'], ['Dev', 'He', 'he'],
  ['Eli', 'He', 'he'], ['Fatima', 'She', 'she'], ['Gus', 'He', 'he'], ['Hana', 'She', 'she'],
] as const;
const THINGS = ['apples', 'marbles', 'stickers', 'pencils', 'shells', 'cookies', 'stamps', 'coins'] as const;

// Integer in [lo, hi].
const draw = (rng: SeededRandom, lo: number, hi: number): number => lo + Math.floor(rng.uniform() * (hi - lo + 1));
const pick = <T>(rng: SeededRandom, items: readonly T[]): T => items[Math.floor(rng.uniform() * items.length)]!;

/** One problem: a GSM8K-style question and answer text (worked steps, then "#### N"). */
export function syntheticProblem(seed: number, index: number, difficulty: Difficulty): { question: string; answer: string } {
  // Each problem has its own stream, so problem i is the same whatever the count.
  const rng = new SeededRandom((seed ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0);
  const [name, He, he] = pick(rng, NAMES);
  const things = pick(rng, THINGS);
  let total = draw(rng, 1, difficulty.maxOperand);
  const sentences = [`${name} has ${total} ${things}.`];
  const work: string[] = [];
  for (let step = 0; step < difficulty.steps; step++) {
    // Subtraction needs something to take away; fall back to addition when there is nothing.
    let op = pick(rng, difficulty.operations);
    if (op === '-' && total < 1) op = '+';
    let operand: number;
    let next: number;
    if (op === '+') {
      operand = draw(rng, 1, difficulty.maxOperand);
      next = total + operand;
      sentences.push(`${step === 0 ? He : `Then ${he}`} gets ${operand} more.`);
    } else if (op === '-') {
      operand = draw(rng, 1, Math.min(total, difficulty.maxOperand));
      next = total - operand;
      sentences.push(`${step === 0 ? He : `Then ${he}`} gives away ${operand}.`);
    } else {
      operand = draw(rng, 2, difficulty.maxMultiplier ?? 9);
      next = total * operand;
      sentences.push(`${step === 0 ? He : `Then ${he}`} ends up with ${operand} times as many.`);
    }
    work.push(`${total} ${op === '*' ? 'x' : op} ${operand} = <<${total}${op}${operand}=${next}>>${next}`);
    total = next;
  }
  sentences.push(`How many ${things} does ${name} have now?`);
  return {
    question: sentences.join(' '),
    answer: `${work.join('\n')}\n${name} has ${total} ${things} now.\n#### ${total}`,
  };
}

/** `count` examples, reproducible from `seed`, with the reference's GSM8K prompt and gold answer. */
export function syntheticExamples(opts: SyntheticOptions): Example[] {
  if (!Number.isInteger(opts.count) || opts.count < 0) throw new Error(`count must be a whole number, not ${opts.count}`);
  const difficulty = typeof opts.difficulty === 'string' || opts.difficulty === undefined
    ? DIFFICULTIES[opts.difficulty ?? 'single-digit-add']
    : opts.difficulty;
  if (difficulty === undefined) {
    throw new Error(`unknown difficulty "${String(opts.difficulty)}"; choose one of ${Object.keys(DIFFICULTIES).join(', ')}`);
  }
  checkDifficulty(difficulty);
  return Array.from({ length: opts.count }, (_, i) =>
    gsm8kExample(`synthetic:${opts.seed}:${i}`, syntheticProblem(opts.seed, i, difficulty)),
  );
}

function checkDifficulty(d: Difficulty): void {
  const whole = (n: number, min: number): boolean => Number.isInteger(n) && n >= min;
  if (d.operations.length === 0) throw new Error('difficulty needs at least one operation');
  if (!whole(d.steps, 1)) throw new Error(`difficulty steps must be a whole number >= 1, not ${d.steps}`);
  if (!whole(d.maxOperand, 1)) throw new Error(`difficulty maxOperand must be a whole number >= 1, not ${d.maxOperand}`);
  if (d.maxMultiplier !== undefined && !whole(d.maxMultiplier, 2)) {
    throw new Error(`difficulty maxMultiplier must be a whole number >= 2, not ${d.maxMultiplier}`);
  }
}
