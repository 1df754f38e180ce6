/**
 * A training job as users write it: the POST body of the admin API and `tandem train --config`.
 *
 * Names follow TRL where a TRL user would look for them, and so do the defaults, read from
 * huggingface/trl v1.9.0 (GRPOConfig, SFTConfig, BaseConfig) and the transformers
 * TrainingArguments it builds on:
 *   GRPO learning_rate 1e-6, num_generations 8, max_completion_length 256 (main at f2cd577 has
 *   512, not yet released), temperature 1, top_p 1, top_k 0, min_p off, repetition_penalty 1, beta 0, epsilon 0.2, epsilon_high = epsilon,
 *   loss_type "dapo", scale_rewards "group" (true -> "group", false -> "none", as its
 *   __post_init__ maps them), num_iterations 1; SFT learning_rate 2e-5, max_length 1024,
 *   completion_only_loss unset, assistant_only_loss false; logging_steps 10 (TRL's override);
 *   transformers: adam_beta1 0.9, adam_beta2 0.999 (not the 0.99 of some notebooks),
 *   adam_epsilon 1e-8, weight_decay 0, lr_scheduler_type "linear", warmup 0, max_grad_norm 1,
 *   per_device_train_batch_size 8, gradient_accumulation_steps 1, save_steps 500,
 *   save_total_limit unlimited, seed 42; warmup_ratio becomes ceil(ratio * max_steps) steps.
 * Where Tandem differs, on purpose:
 * - max_prompt_length (deprecated in TRL 0.26, removed in 0.28) stays: rollouts need a bound.
 * - GRPO's per_device_train_batch_size counts completions as in TRL, but defaults to
 *   num_generations (one prompt per micro-batch) instead of 8, so changing G alone stays valid.
 * - data.shuffle defaults to true for SFT too (TRL's SFT default is false).
 * - Unknown keys are errors, so a typo cannot silently leave a default in place.
 *
 * `jobConfigSchema` checks each field; `parseJobConfig` also drops null values (JSON's None:
 * "not set"), checks rules that span fields and fills the defaults that depend on others.
 */
import path from 'node:path';
import { z } from 'zod';
import { LORA_TARGETS } from '../model/lora.ts';
import type { LoraTarget } from '../model/lora.ts';
import { GSM8K_REWARDS } from './reward-registry.ts';
import type { RewardSpec } from './reward-registry.ts';
import { DIFFICULTIES } from './synthetic.ts';

const MAX_STEPS = 10_000_000;
const MAX_TOKENS = 131_072;
const MAX_EXAMPLES = 100_000_000;
const MAX_BATCH = 4096;

/** A job config field was wrong: `field` is its path ("optimizer.learning_rate", "reward_funcs[2]"). */
export class JobConfigError extends Error {
  constructor(
    readonly field: string,
    readonly problem: string,
    /** Every problem found, the first being `field` / `problem`. */
    readonly problems: readonly { field: string; message: string }[] = [{ field, message: problem }],
  ) {
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more: ${problems.slice(1).map((p) => p.field || '(root)').join(', ')})` : '';
    super(`job config: ${field ? `${field}: ` : ''}${problem}${more}`);
    this.name = 'JobConfigError';
  }
}

// ---- field rules ----

const fmt = (n: number): string => (Number.isInteger(n) && Math.abs(n) >= 10_000 ? n.toLocaleString('en-US') : String(n));

function intIn(min: number, max: number): z.ZodInt {
  const error = `expected an integer from ${fmt(min)} to ${fmt(max)}`;
  return z.int({ error }).min(min, { error }).max(max, { error });
}

/** A finite number in a range; `open` marks the ends that are excluded. */
function numIn(min: number, max: number, open: { min?: boolean; max?: boolean } = {}): z.ZodNumber {
  const error = `expected a number ${open.min ? '>' : '>='} ${min} and ${open.max ? '<' : '<='} ${max}`;
  const lo = open.min ? z.number({ error }).gt(min, { error }) : z.number({ error }).gte(min, { error });
  return open.max ? lo.lt(max, { error }) : lo.lte(max, { error });
}

const NAME = /^[A-Za-z0-9._-]{1,64}$/;
/** Adapter names become directory names, so "." and ".." (and hidden names) are refused. */
export const adapterNameSchema = z
  .string({ error: 'expected a name: 1 to 64 letters, digits, ".", "_" or "-"' })
  .regex(NAME, { error: 'expected a name: 1 to 64 letters, digits, ".", "_" or "-"' })
  .refine((s) => !s.startsWith('.'), { error: 'a name cannot start with "." (it names a directory)' });

const pathSchema = z
  .string({ error: (iss) => (iss.input === undefined ? 'required: a file or directory path' : 'expected a path (a string)') })
  .min(1, { error: 'expected a path, not an empty string' })
  .max(4096, { error: 'path is longer than 4,096 characters' })
  .refine((s) => !s.includes('\0'), { error: 'a path cannot contain a NUL character' });

const splitSchema = z.string().regex(NAME, { error: 'expected a split name such as "train" or "test"' });

const fileData = {
  path: pathSchema.describe('A JSONL file, or a directory holding <split>.jsonl.'),
  split: splitSchema.optional().describe('When path is a directory, read <path>/<split>.jsonl (default "train").'),
  limit: intIn(1, MAX_EXAMPLES).optional().describe('Use at most this many examples.'),
  shuffle: z.boolean().default(true).describe('Seeded shuffle each epoch.'),
};
const DIFFICULTY_NAMES = Object.keys(DIFFICULTIES) as [keyof typeof DIFFICULTIES, ...(keyof typeof DIFFICULTIES)[]];

export const dataSchema = z.discriminatedUnion('source', [
  z.strictObject({
    source: z.literal('gsm8k'),
    ...fileData,
    strip_commas_and_dollars: z.boolean().default(false).describe('Also drop "," and "$" from gold answers.'),
  }),
  z.strictObject({ source: z.literal('chat'), ...fileData }),
  z.strictObject({
    source: z.literal('synthetic'),
    limit: intIn(1, MAX_EXAMPLES).default(1000).describe('How many problems to generate.'),
    difficulty: z.enum(DIFFICULTY_NAMES).default('single-digit-add'),
    shuffle: z.boolean().default(true),
  }),
], { error: (iss) => ((iss.code as string) === 'invalid_type' ? 'expected an object' : 'expected source "gsm8k", "chat" or "synthetic"') });

const dropoutSchema = z.number({ error: 'expected 0' }).superRefine((d, ctx) => {
  if (!(d >= 0 && d < 1)) ctx.addIssue({ code: 'custom', message: 'expected a number in [0, 1)' });
  else if (d > 0) ctx.addIssue({ code: 'custom', message: 'training with LoRA dropout is not supported yet; set it to 0 or leave it out' });
});

/** Without init_from the shape fields get defaults; with it they come from that adapter. */
export const loraSchema = z.strictObject({
  rank: intIn(1, 1024).optional().describe('Default 16.'),
  alpha: numIn(0, 1_000_000, { min: true }).optional().describe('Default 16.'),
  targets: z
    .array(z.enum(LORA_TARGETS as [LoraTarget, ...LoraTarget[]], { error: `expected one of ${LORA_TARGETS.join(', ')}` }))
    .min(1, { error: 'expected at least one target' })
    .refine((t) => new Set(t).size === t.length, { error: 'a target is listed twice' })
    .optional()
    .describe('Default: all seven projections.'),
  use_rslora: z.boolean().optional().describe('Default false.'),
  dropout: dropoutSchema.default(0),
  init_from: pathSchema.optional().describe('Start from this PEFT adapter directory; its adapter_config.json fixes rank, alpha and targets.'),
});

/** The optimizer section; only the learning rate's default differs between GRPO and SFT. */
function optimizerSchema(defaultLr: number) {
  return z.strictObject({
    learning_rate: numIn(0, 1, { min: true }).default(defaultLr),
    adam_beta1: numIn(0, 1, { max: true }).default(0.9),
    adam_beta2: numIn(0, 1, { max: true }).default(0.999),
    adam_epsilon: numIn(0, 1, { min: true }).default(1e-8),
    weight_decay: numIn(0, 1).default(0),
    warmup_steps: intIn(0, MAX_STEPS).optional().describe('Default 0. Give this or warmup_ratio.'),
    warmup_ratio: numIn(0, 1, { max: true }).optional().describe('Warmup as a fraction of max_steps, rounded up.'),
    lr_scheduler_type: z.enum(['linear', 'cosine', 'constant'], { error: 'expected "linear", "cosine" or "constant"' }).default('linear'),
    max_grad_norm: numIn(0, 1e6).default(1).describe('0 disables clipping.'),
  });
}

const publishSchema = z.strictObject({
  every_steps: intIn(1, MAX_STEPS).default(1).describe('Publish the adapter to serving every this many steps.'),
  adapter: adapterNameSchema.optional().describe('Serve the trained adapter under this name (default: name).'),
});

function commonFields(defaultLr: number) {
  return {
    name: adapterNameSchema.describe('The adapter this job trains.'),
    data: dataSchema,
    lora: loraSchema.prefault({}),
    optimizer: optimizerSchema(defaultLr).prefault({}),
    max_steps: intIn(1, MAX_STEPS).describe('Optimizer steps to run.'),
    seed: intIn(0, 2 ** 32 - 1).default(42),
    deterministic: z.boolean().default(false).describe('Trade speed for bit-reproducible runs.'),
    gradient_accumulation_steps: intIn(1, 1024).default(1),
    logging_steps: intIn(1, MAX_STEPS).default(10),
    save_steps: intIn(1, MAX_STEPS).default(500),
    save_total_limit: intIn(1, 1_000_000).optional().describe('Keep at most this many checkpoints (default: all).'),
    output_dir: pathSchema.optional().describe('Checkpoints go here (default runs/<name>, relative to the working directory).'),
    publish: publishSchema.prefault({}),
  };
}

const LOSS_TYPES = ['grpo', 'bnpo', 'dr_grpo', 'dapo'] as const;
const SCALE_REWARDS = ['group', 'batch', 'none'] as const;

export const grpoJobSchema = z.strictObject({
  kind: z.literal('grpo'),
  ...commonFields(1e-6),
  per_device_train_batch_size: intIn(1, MAX_BATCH).optional().describe('Completions per micro-batch (default: num_generations).'),
  num_generations: intIn(2, 256).default(8).describe('Completions per prompt (G).'),
  max_prompt_length: intIn(1, MAX_TOKENS).default(512),
  max_completion_length: intIn(1, MAX_TOKENS).default(256),
  temperature: numIn(0, 2, { min: true }).default(1),
  top_p: numIn(0, 1, { min: true }).default(1),
  top_k: intIn(0, 1_000_000).default(0).describe('Keep the k most likely tokens when sampling rollouts; 0 is off (TRL default).'),
  min_p: numIn(0, 1).default(0).describe('Drop tokens below min_p times the top probability; 0 is off (TRL: None).'),
  repetition_penalty: numIn(0, 10, { min: true }).default(1).describe('> 1 discourages repeats in rollouts; 1 is off.'),
  beta: numIn(0, 1000).default(0).describe('KL coefficient; 0 skips the reference model.'),
  epsilon: numIn(0, 1, { min: true, max: true }).default(0.2),
  epsilon_high: numIn(0, 100, { min: true }).optional().describe('Default: epsilon.'),
  loss_type: z.enum(LOSS_TYPES, { error: `expected one of ${LOSS_TYPES.map((t) => `"${t}"`).join(', ')}` }).default('dapo'),
  scale_rewards: z
    .union([z.enum(SCALE_REWARDS), z.boolean()], { error: 'expected "group", "batch" or "none" (or TRL\'s legacy true / false)' })
    .default('group'),
  num_iterations: intIn(1, 64).default(1),
  reward_funcs: z
    .array(z.string().min(1, { error: 'expected a reward name' }), { error: 'expected a list of reward names' })
    .min(1, { error: 'expected at least one reward' })
    .max(64, { error: 'at most 64 rewards' })
    .optional()
    .describe('Default for gsm8k and synthetic data: the five GSM8K rewards.'),
  reward_weights: z.array(numIn(-1e6, 1e6)).optional().describe('One per reward_funcs entry (default: all 1).'),
});

export const sftJobSchema = z.strictObject({
  kind: z.literal('sft'),
  ...commonFields(2e-5),
  per_device_train_batch_size: intIn(1, MAX_BATCH).default(8).describe('Sequences per micro-batch.'),
  max_length: intIn(1, MAX_TOKENS).default(1024),
  completion_only_loss: z.boolean().optional(),
  assistant_only_loss: z.boolean().default(false),
});

export const jobConfigSchema = z.discriminatedUnion('kind', [grpoJobSchema, sftJobSchema], {
  error: (iss) => ((iss.code as string) === 'invalid_type' ? 'expected a JSON object' : 'expected "grpo" or "sft"'),
});

// ---- the resolved config ----

export type JobConfigInput = z.input<typeof jobConfigSchema>;
export type DataConfig = z.output<typeof dataSchema>;
export type OptimizerConfig = Omit<z.output<ReturnType<typeof optimizerSchema>>, 'warmup_steps'> & { warmup_steps: number };
/** Either the shape of a fresh adapter, or the directory of one to start from. */
export type LoraJobConfig =
  | { rank: number; alpha: number; targets: LoraTarget[]; use_rslora: boolean; dropout: number; init_from?: undefined }
  | { init_from: string; dropout: number };
type Resolved = 'lora' | 'optimizer' | 'output_dir' | 'publish' | 'per_device_train_batch_size';
interface ResolvedCommon {
  lora: LoraJobConfig;
  optimizer: OptimizerConfig;
  output_dir: string;
  publish: { every_steps: number; adapter: string };
  per_device_train_batch_size: number;
}
export type GrpoJobConfig = Omit<z.output<typeof grpoJobSchema>, Resolved | 'epsilon_high' | 'scale_rewards' | 'reward_funcs' | 'reward_weights'> &
  ResolvedCommon & { epsilon_high: number; scale_rewards: (typeof SCALE_REWARDS)[number]; reward_funcs: string[]; reward_weights: number[] };
export type SftJobConfig = Omit<z.output<typeof sftJobSchema>, Resolved> & ResolvedCommon;
export type JobConfig = GrpoJobConfig | SftJobConfig;

/** Validates and completes a job config; throws JobConfigError naming the first bad field. */
export function parseJobConfig(json: unknown): JobConfig {
  const input = withoutNulls(json);
  const parsed = jobConfigSchema.safeParse(input);
  if (!parsed.success) {
    const problems = parsed.error.issues.flatMap((issue) => describeIssue(issue, input));
    throw new JobConfigError(problems[0]!.field, problems[0]!.message, problems);
  }
  return resolve(parsed.data);
}

function resolve(c: z.output<typeof jobConfigSchema>): JobConfig {
  const fail = (field: string, message: string): never => {
    throw new JobConfigError(field, message);
  };
  const { warmup_steps, warmup_ratio } = c.optimizer;
  if (warmup_steps !== undefined && warmup_ratio !== undefined) fail('optimizer.warmup_ratio', 'give warmup_steps or warmup_ratio, not both');
  const warmup = warmup_ratio !== undefined ? Math.ceil(warmup_ratio * c.max_steps) : (warmup_steps ?? 0);
  if (warmup > c.max_steps) fail('optimizer.warmup_steps', `${warmup} warmup steps is more than max_steps (${c.max_steps})`);

  const { init_from, dropout } = c.lora;
  let lora: LoraJobConfig;
  if (init_from !== undefined) {
    const fixed = (['rank', 'alpha', 'targets', 'use_rslora'] as const).find((k) => c.lora[k] !== undefined);
    if (fixed) fail(`lora.${fixed}`, `comes from the adapter in lora.init_from (${init_from}); leave it out`);
    lora = { init_from, dropout };
  } else {
    const { rank = 16, alpha = 16, targets = [...LORA_TARGETS], use_rslora = false } = c.lora;
    lora = { rank, alpha, targets, use_rslora, dropout };
  }
  const common = {
    lora,
    optimizer: { ...c.optimizer, warmup_steps: warmup },
    output_dir: c.output_dir ?? `runs/${c.name}`,
    publish: { every_steps: c.publish.every_steps, adapter: c.publish.adapter ?? c.name },
  };
  if (c.kind === 'sft') return { ...c, ...common, per_device_train_batch_size: c.per_device_train_batch_size };

  const batch = c.per_device_train_batch_size ?? c.num_generations;
  const perStep = batch * c.gradient_accumulation_steps;
  if (perStep % c.num_generations !== 0) {
    fail('per_device_train_batch_size',
      `${batch} x gradient_accumulation_steps ${c.gradient_accumulation_steps} = ${perStep} completions per step, not a multiple of ` +
      `num_generations (${c.num_generations}); a step takes whole groups of ${c.num_generations} completions of one prompt`);
  }
  let rewardFuncs = c.reward_funcs;
  if (rewardFuncs === undefined) {
    if (c.data.source === 'chat') fail('reward_funcs', 'required for chat data: name the rewards to train on, e.g. ["gsm8k_correctness"]');
    rewardFuncs = GSM8K_REWARDS.map((r) => r.name);
  }
  const twice = rewardFuncs.findIndex((name, i) => rewardFuncs.indexOf(name) !== i);
  if (twice >= 0) fail(`reward_funcs[${twice}]`, `"${rewardFuncs[twice]}" is listed twice`);
  const weights = c.reward_weights ?? rewardFuncs.map(() => 1);
  if (weights.length !== rewardFuncs.length) {
    fail('reward_weights', `${weights.length} weights for ${rewardFuncs.length} reward_funcs; give one weight per reward`);
  }
  const scale = c.scale_rewards === true ? 'group' : c.scale_rewards === false ? 'none' : c.scale_rewards;
  return {
    ...c,
    ...common,
    per_device_train_batch_size: batch,
    epsilon_high: c.epsilon_high ?? c.epsilon,
    scale_rewards: scale,
    reward_funcs: rewardFuncs,
    reward_weights: weights,
  };
}

// ---- helpers for the trainer ----

/** The rewards of a GRPO job, as RewardRegistry.scoreCompletions takes them. */
export function rewardSpecs(config: GrpoJobConfig): RewardSpec[] {
  return config.reward_funcs.map((name, i) => ({ name, weight: config.reward_weights[i] }));
}

/**
 * The first reward name the registry does not know, as an error naming the field
 * (`reward_funcs[i]`), or null when all are known. Registries change at run time (a user can
 * register rewards), so this runs when a job starts, not when the config is parsed.
 */
export function checkRewardNames(config: GrpoJobConfig, registry: { list(): { name: string }[] }): JobConfigError | null {
  const known = registry.list().map((r) => r.name);
  const i = config.reward_funcs.findIndex((name) => !known.includes(name));
  if (i < 0) return null;
  const name = config.reward_funcs[i];
  const near = closest(name, known);
  return new JobConfigError(`reward_funcs[${i}]`, `no reward named "${name}"${near ? ` (did you mean "${near}"?)` : ''}; registered: ${known.join(', ') || 'none'}`);
}

/** The JSONL file a file-backed data config reads, given whether `data.path` is a directory. */
export function dataFile(data: Extract<DataConfig, { path: string }>, pathIsDirectory: boolean): string {
  if (!pathIsDirectory) {
    if (data.split !== undefined) throw new JobConfigError('data.split', `data.path ${data.path} is a file; split only applies to a directory`);
    return data.path;
  }
  return path.join(data.path, `${data.split ?? 'train'}.jsonl`);
}

// ---- error reporting ----

type Issue = z.core.$ZodIssue;

/** `['reward_funcs', 2]` -> `reward_funcs[2]`; `['optimizer', 'learning_rate']` -> `optimizer.learning_rate`. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) out += typeof key === 'number' ? `[${key}]` : `${out === '' ? '' : '.'}${String(key)}`;
  return out;
}

function describeIssue(issue: Issue, input: unknown): { field: string; message: string }[] {
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ field: fieldPath([...issue.path, key]), message: unknownKeyMessage(issue.path, key, input) }));
  }
  const found = valueAt(input, issue.path);
  const got = found === undefined ? '' : ` (got ${preview(found)})`;
  const missing = found === undefined && issue.path.length > 0 && !issue.message.startsWith('required');
  const message = missing ? `required: ${issue.message}` : issue.message;
  return [{ field: fieldPath(issue.path), message: `${message}${got}` }];
}

const SECTION_KEYS: Record<string, string[]> = {
  data: [...new Set(dataSchema.options.flatMap((o) => Object.keys(o.shape)))],
  lora: Object.keys(loraSchema.shape),
  optimizer: Object.keys(optimizerSchema(1).shape),
  publish: Object.keys(publishSchema.shape),
};

function unknownKeyMessage(path: readonly PropertyKey[], key: string, input: unknown): string {
  const kind = (input as { kind?: unknown })?.kind;
  const section = path.length === 1 ? String(path[0]) : '';
  if (path.length === 0) {
    const other = kind === 'sft' ? grpoJobSchema : sftJobSchema;
    if (key in other.shape && !(key in (kind === 'sft' ? sftJobSchema : grpoJobSchema).shape)) {
      return `unknown field: ${key} is a ${other.shape.kind.value.toUpperCase()} setting and this job's kind is "${String(kind)}"`;
    }
    for (const [name, keys] of Object.entries(SECTION_KEYS)) {
      if (keys.includes(key)) return `unknown field: did you mean ${name}.${key}?`;
    }
  }
  if (section === 'data' && key === 'path') return 'unknown field: synthetic data is generated, not read from a file';
  const known = keysAt(path, kind, input);
  const near = closest(key, known);
  return `unknown field${near ? ` (did you mean "${near}"?)` : ''}; expected one of: ${known.join(', ')}`;
}

function keysAt(path: readonly PropertyKey[], kind: unknown, input: unknown): string[] {
  const root = kind === 'sft' ? sftJobSchema : grpoJobSchema;
  if (path.length === 0) return Object.keys(root.shape);
  const section = String(path[0]);
  if (section === 'data') {
    const source = (valueAt(input, ['data', 'source']) ?? '') as string;
    const option = dataSchema.options.find((o) => o.shape.source.value === source);
    return Object.keys((option ?? dataSchema.options[0]).shape);
  }
  return SECTION_KEYS[section] ?? [];
}

/** The known name within edit distance 2 (or a third of its length) of `name`, if any. */
function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(name.toLowerCase(), k.toLowerCase());
    if (d < bestDistance && d <= Math.max(2, Math.floor(k.length / 3))) [best, bestDistance] = [k, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v = input;
  for (const key of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

function preview(value: unknown): string {
  const text = typeof value === 'number' && !Number.isFinite(value) ? String(value) : (JSON.stringify(value) ?? String(value));
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** JSON null means "not set" (TRL's None): drop such keys so defaults apply. */
function withoutNulls(value: unknown): unknown {
  if (Array.isArray(value)) return value;
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null).map(([k, v]) => [k, withoutNulls(v)]));
}
