// Training data: the Example every trainer consumes, loaders for GSM8K JSONL and chat JSONL
// (OpenAI fine-tuning files), and a seeded, resumable epoch iterator.
//
// Files come from users, so every line is validated with zod, errors name the file and the
// line, and files are streamed line by line (one line is held at a time, capped in size),
// so a corrupt multi-gigabyte file fails fast instead of filling memory.
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { SeededRandom } from '../util/random.ts';
import { gsm8kPrompt, type ChatTurn } from './prompts.ts';
import { extractHashAnswer } from './rewards.ts';

/**
 * One training item, for GRPO and SFT alike.
 * - GRPO: `prompt` is what the model continues (chat turns ending with a user turn, rendered
 *   with the model's chat template, or raw text) and `answer` is the gold answer rewards use.
 * - SFT: `prompt` is the whole conversation; its assistant turns are the targets (a turn with
 *   `weight: 0` is context only).
 */
export interface Example {
  /** Stable and unique within a dataset, e.g. "train:17" (file stem and line) or "synthetic:7:3". */
  readonly id: string;
  readonly prompt: readonly ChatTurn[] | string;
  /** The gold answer; for GSM8K the reference's `answer` column (text after "####"). */
  readonly answer?: string;
  /** A full worked solution, when the source has one (GSM8K's answer field). */
  readonly solution?: string;
}

/** A problem in the bad line of a user's file: says which file and which line. */
export class DataError extends Error {
  constructor(readonly file: string, readonly line: number, problem: string) {
    super(`${file}:${line}: ${problem}`);
    this.name = 'DataError';
  }
}

export interface ReadOptions {
  /** Stop after this many records (blank lines are not records). */
  limit?: number;
  /** Longest line accepted, in bytes; a longer one is an error. Default 16 MiB. */
  maxLineBytes?: number;
}

const DEFAULT_MAX_LINE_BYTES = 16 << 20;
const NEWLINE = 0x0a;

/**
 * Streams a JSONL file as parsed JSON values with their 1-based line numbers. Blank lines
 * are skipped; '\r\n' endings and a leading byte-order mark are accepted.
 */
export async function* readJsonl(file: string, opts: ReadOptions = {}): AsyncGenerator<{ line: number; value: unknown }> {
  const maxLineBytes = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
  const limit = opts.limit ?? Infinity;
  if (limit <= 0) return;
  const stat = await fs.promises.stat(file).catch((err: NodeJS.ErrnoException) => {
    throw new Error(err.code === 'ENOENT' ? `${file}: no such file` : `${file}: ${err.message}`, { cause: err });
  });
  if (!stat.isFile()) throw new Error(`${file}: not a regular file`);

  const decoder = new TextDecoder('utf-8', { fatal: true });
  let lineNo = 0;
  let records = 0;
  const parse = (bytes: Uint8Array): { line: number; value: unknown } | undefined => {
    lineNo++;
    let text: string;
    try {
      text = decoder.decode(bytes);
    } catch {
      throw new DataError(file, lineNo, 'not valid UTF-8');
    }
    if (text.trim() === '') return undefined;
    try {
      return { line: lineNo, value: JSON.parse(text) };
    } catch (err) {
      throw new DataError(file, lineNo, `not valid JSON (${(err as Error).message})`);
    }
  };
  const tooLong = (): DataError =>
    new DataError(file, lineNo + 1, `line is longer than ${maxLineBytes} bytes; is this a JSONL file?`);

  const stream = fs.createReadStream(file, { highWaterMark: 1 << 16 });
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      let start = 0;
      for (let nl = chunk.indexOf(NEWLINE, start); nl >= 0; nl = chunk.indexOf(NEWLINE, start)) {
        const piece = chunk.subarray(start, nl);
        if (pendingBytes + piece.length > maxLineBytes) throw tooLong();
        const bytes = pending.length === 0 ? piece : Buffer.concat([...pending, piece]);
        pending = [];
        pendingBytes = 0;
        start = nl + 1;
        const record = parse(bytes);
        if (record === undefined) continue;
        yield record;
        if (++records >= limit) return;
      }
      if (start < chunk.length) {
        pendingBytes += chunk.length - start;
        if (pendingBytes > maxLineBytes) throw tooLong();
        pending.push(chunk.subarray(start));
      }
    }
    if (pending.length > 0) {
      const record = parse(Buffer.concat(pending));
      if (record !== undefined) yield record;
    }
  } finally {
    stream.destroy();
  }
}

function validate<T>(schema: z.ZodType<T>, value: unknown, file: string, line: number): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message));
  throw new DataError(file, line, problems.join('; '));
}

const stem = (file: string): string => path.basename(file).replace(/\.jsonl?$/i, '');

// ---- GSM8K ----

const gsm8kLineSchema = z.object({
  question: z.string().min(1, 'question is empty'),
  answer: z.string().includes('####', 'answer has no "####" final answer'),
});

export interface Gsm8kOptions extends ReadOptions {
  /**
   * Also drop ',' and '$' from the final answer, as later revisions of Will Brown's gist do
   * ("1,080" becomes "1080"). Off by default, as in Unsloth's notebook, where 82 of the
   * 7,473 training answers keep their commas and so can never earn the int reward.
   */
  stripCommasAndDollars?: boolean;
}

/** A GSM8K problem as the reference prepares it: system prompt + question, and the #### answer. */
export function gsm8kExample(
  id: string,
  problem: { question: string; answer: string },
  opts: Pick<Gsm8kOptions, 'stripCommasAndDollars'> = {},
): Example {
  let answer = extractHashAnswer(problem.answer);
  if (answer !== null && opts.stripCommasAndDollars) answer = answer.replaceAll(',', '').replaceAll('$', '');
  return {
    id,
    prompt: gsm8kPrompt(problem.question),
    ...(answer !== null ? { answer } : {}),
    solution: problem.answer,
  };
}

/** GSM8K JSONL ({"question", "answer"} per line, the answer ending "#### N"). */
export async function loadGsm8kJsonl(file: string, opts: Gsm8kOptions = {}): Promise<Example[]> {
  const out: Example[] = [];
  for await (const { line, value } of readJsonl(file, opts)) {
    const problem = validate(gsm8kLineSchema, value, file, line);
    out.push(gsm8kExample(`${stem(file)}:${line}`, problem, opts));
  }
  return out;
}

// ---- chat JSONL ----

const chatTurnSchema = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.string(),
  name: z.string().optional(),
  weight: z.union([z.literal(0), z.literal(1)]).optional(),
});

const chatLineSchema = z.object({
  messages: z.array(chatTurnSchema).min(1, 'messages is empty'),
  /** Gold answer for GRPO rewards, when the file is a prompt set. */
  answer: z.string().optional(),
});

export interface ChatOptions extends ReadOptions {
  /**
   * 'sft': each conversation needs an assistant turn to learn from.
   * 'grpo': each conversation must end before the reply, so its last turn is not an assistant's.
   */
  purpose: 'sft' | 'grpo';
}

/** Chat JSONL: {"messages": [{"role", "content"}...], "answer"?} per line, as OpenAI fine-tuning files. */
export async function loadChatJsonl(file: string, opts: ChatOptions): Promise<Example[]> {
  const out: Example[] = [];
  for await (const { line, value } of readJsonl(file, opts)) {
    const { messages, answer } = validate(chatLineSchema, value, file, line);
    if (opts.purpose === 'sft' && !messages.some((m) => m.role === 'assistant' && m.weight !== 0)) {
      throw new DataError(file, line, 'no assistant turn to train on (SFT needs at least one, with weight other than 0)');
    }
    if (opts.purpose === 'grpo' && messages.at(-1)!.role === 'assistant') {
      throw new DataError(file, line, 'last turn is an assistant reply; a GRPO prompt must end where the model should answer');
    }
    out.push({ id: `${stem(file)}:${line}`, prompt: messages, ...(answer !== undefined ? { answer } : {}) });
  }
  return out;
}

// ---- order: seeded shuffling and a resumable epoch iterator ----

/** A seeded Fisher-Yates permutation of 0..n-1; the same (n, seed) always gives the same order. */
export function permutation(n: number, seed: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  const rng = new SeededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** A new array with `items` in seeded random order. */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  return permutation(items.length, seed).map((i) => items[i]!);
}

/** Where an iterator stands: the next item is number `index` of epoch `epoch` (both from 0). */
export const dataPositionSchema = z.object({
  epoch: z.number().int().nonnegative(),
  index: z.number().int().nonnegative(),
});
export type DataPosition = z.infer<typeof dataPositionSchema>;

// Each epoch has its own order, derived from (seed, epoch) alone, so a position is all a
// checkpoint needs to resume exactly. The multiplier is the 32-bit golden ratio.
const epochSeed = (seed: number, epoch: number): number => (seed ^ Math.imul(epoch + 1, 0x9e3779b9)) >>> 0;

export interface EpochIteratorOptions {
  seed: number;
  /** Shuffle each epoch (default true); false walks the items in file order every epoch. */
  shuffle?: boolean;
  /** Resume here, e.g. from a checkpoint's saved `position`. */
  start?: DataPosition;
}

/** Endless iteration over a dataset, epoch after epoch, in a seeded order per epoch. */
export class EpochIterator<T> {
  readonly #items: readonly T[];
  readonly #seed: number;
  readonly #shuffle: boolean;
  #epoch: number;
  #index: number;
  #order: number[] | null = null;
  #orderEpoch = -1;

  constructor(items: readonly T[], opts: EpochIteratorOptions) {
    if (items.length === 0) throw new Error('cannot iterate over an empty dataset');
    this.#items = items;
    this.#seed = opts.seed;
    this.#shuffle = opts.shuffle ?? true;
    const start = dataPositionSchema.parse(opts.start ?? { epoch: 0, index: 0 });
    if (start.index > items.length) {
      throw new Error(
        `resume position index ${start.index} is past the end of a ${items.length}-item dataset; was the checkpoint made with other data?`,
      );
    }
    this.#epoch = start.epoch;
    this.#index = start.index;
  }

  /** The position of the next item: save it with a checkpoint, pass it back as `start`. */
  get position(): DataPosition {
    this.#wrap();
    return { epoch: this.#epoch, index: this.#index };
  }

  next(): T {
    this.#wrap();
    const i = this.#shuffle ? this.#orderOf(this.#epoch)[this.#index]! : this.#index;
    this.#index++;
    return this.#items[i]!;
  }

  take(n: number): T[] {
    return Array.from({ length: n }, () => this.next());
  }

  #wrap(): void {
    if (this.#index < this.#items.length) return;
    this.#epoch++;
    this.#index = 0;
  }

  #orderOf(epoch: number): number[] {
    if (this.#orderEpoch !== epoch) {
      this.#order = permutation(this.#items.length, epochSeed(this.#seed, epoch));
      this.#orderEpoch = epoch;
    }
    return this.#order!;
  }
}
