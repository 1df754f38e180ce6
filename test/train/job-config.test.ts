import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  JobConfigError,
  checkRewardNames,
  dataFile,
  jobConfigSchema,
  parseJobConfig,
  rewardSpecs,
  type GrpoJobConfig,
  type JobConfig,
  type SftJobConfig,
} from '../../src/train/job-config.ts';
import { createRewardRegistry } from '../../src/train/reward-registry.ts';

const GRPO = { name: 'gsm8k-lora', kind: 'grpo', data: { source: 'gsm8k', path: 'data/gsm8k' }, max_steps: 250 } as const;
const SFT = { name: 'chat-sft', kind: 'sft', data: { source: 'chat', path: 'chats.jsonl' }, max_steps: 100 } as const;

const grpo = (extra: Record<string, unknown> = {}): GrpoJobConfig => {
  const c = parseJobConfig({ ...GRPO, ...extra });
  assert.equal(c.kind, 'grpo');
  return c as GrpoJobConfig;
};
const sft = (extra: Record<string, unknown> = {}): SftJobConfig => {
  const c = parseJobConfig({ ...SFT, ...extra });
  assert.equal(c.kind, 'sft');
  return c as SftJobConfig;
};

/** The JobConfigError that parsing `json` throws. */
function errorOf(json: unknown): JobConfigError {
  try {
    parseJobConfig(json);
  } catch (err) {
    assert.ok(err instanceof JobConfigError, `expected a JobConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail(`expected ${JSON.stringify(json)} to be rejected`);
}

// The five rewards of the reference notebook (Will Brown's GSM8K gist, as Unsloth runs it).
const GSM8K_FIVE = ['gsm8k_xmlcount', 'gsm8k_soft_format', 'gsm8k_strict_format', 'gsm8k_int', 'gsm8k_correctness'];

describe('job config defaults', () => {
  it('fills a minimal GRPO config with TRL v1.9.0 / transformers defaults', () => {
    const c = grpo();
    // Values as TRL's GRPOConfig and transformers' TrainingArguments declare them.
    assert.deepEqual(c.optimizer, {
      learning_rate: 1e-6,
      adam_beta1: 0.9,
      adam_beta2: 0.999,
      adam_epsilon: 1e-8,
      weight_decay: 0,
      warmup_steps: 0,
      lr_scheduler_type: 'linear',
      max_grad_norm: 1,
    });
    assert.equal(c.num_generations, 8);
    assert.equal(c.max_completion_length, 256);
    assert.equal(c.max_prompt_length, 512);
    assert.equal(c.temperature, 1);
    assert.equal(c.top_p, 1);
    assert.equal(c.top_k, 0);
    assert.equal(c.min_p, 0);
    assert.equal(c.repetition_penalty, 1);
    assert.equal(c.beta, 0);
    assert.equal(c.epsilon, 0.2);
    assert.equal(c.epsilon_high, 0.2);
    assert.equal(c.loss_type, 'dapo');
    assert.equal(c.scale_rewards, 'group');
    assert.equal(c.num_iterations, 1);
    assert.equal(c.seed, 42);
    assert.equal(c.deterministic, false);
    assert.equal(c.gradient_accumulation_steps, 1);
    assert.equal(c.logging_steps, 10);
    assert.equal(c.save_steps, 500);
    assert.equal(c.save_total_limit, undefined);
    // Tandem's own defaults.
    assert.equal(c.per_device_train_batch_size, 8, 'one prompt of num_generations completions');
    assert.deepEqual(c.lora, {
      rank: 16,
      alpha: 16,
      targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      use_rslora: false,
      dropout: 0,
    });
    assert.deepEqual(c.data, { source: 'gsm8k', path: 'data/gsm8k', shuffle: true, strip_commas_and_dollars: false });
    assert.equal(c.output_dir, 'runs/gsm8k-lora');
    assert.deepEqual(c.publish, { every_steps: 1, adapter: 'gsm8k-lora' });
    assert.deepEqual(c.reward_funcs, GSM8K_FIVE);
    assert.deepEqual(c.reward_weights, [1, 1, 1, 1, 1]);
  });

  it('fills a minimal SFT config with SFTConfig defaults', () => {
    const c = sft();
    assert.equal(c.optimizer.learning_rate, 2e-5);
    assert.equal(c.max_length, 1024);
    assert.equal(c.assistant_only_loss, false);
    assert.equal(c.completion_only_loss, undefined);
    assert.equal(c.per_device_train_batch_size, 8);
    assert.equal(c.data.shuffle, true);
    assert.ok(!('num_generations' in c) && !('reward_funcs' in c));
  });

  it('derives defaults from the fields they follow', () => {
    const c = grpo({ name: 'x', epsilon: 0.3, num_generations: 6, publish: { every_steps: 5 }, output_dir: '/ckpt' });
    assert.equal(c.epsilon_high, 0.3);
    assert.equal(c.per_device_train_batch_size, 6);
    assert.deepEqual(c.publish, { every_steps: 5, adapter: 'x' });
    assert.equal(c.output_dir, '/ckpt');
    assert.equal(grpo({ epsilon_high: 0.28 }).epsilon_high, 0.28);
    assert.equal(grpo({ publish: { adapter: 'served' } }).publish.adapter, 'served');
    // A synthetic set needs no file; the GSM8K rewards apply to it too.
    const s = grpo({ data: { source: 'synthetic', limit: 50 } });
    assert.deepEqual(s.data, { source: 'synthetic', limit: 50, difficulty: 'single-digit-add', shuffle: true });
    assert.deepEqual(s.reward_funcs, GSM8K_FIVE);
  });

  it('turns warmup_ratio into whole steps, rounding up as transformers does', () => {
    assert.equal(grpo({ max_steps: 25, optimizer: { warmup_ratio: 0.1 } }).optimizer.warmup_steps, 3); // ceil(2.5)
    assert.equal(grpo({ max_steps: 30, optimizer: { warmup_ratio: 0.1 } }).optimizer.warmup_steps, 3);
    assert.equal(grpo({ optimizer: { warmup_steps: 7 } }).optimizer.warmup_steps, 7);
  });

  it('keeps a lora section with init_from free of shape defaults (they come from that adapter)', () => {
    assert.deepEqual(grpo({ lora: { init_from: 'adapters/base' } }).lora, { init_from: 'adapters/base', dropout: 0 });
  });

  it('reads JSON null as "not set"', () => {
    const c = grpo({ save_total_limit: null, epsilon_high: null, reward_weights: null, output_dir: null, lora: { init_from: null } });
    assert.equal(c.save_total_limit, undefined);
    assert.equal(c.epsilon_high, 0.2);
    assert.deepEqual(c.reward_weights, [1, 1, 1, 1, 1]);
    assert.equal(c.output_dir, 'runs/gsm8k-lora');
    assert.equal(c.lora.init_from, undefined);
  });
});

describe('scale_rewards', () => {
  it('accepts TRL\'s legacy booleans: true is "group", false is "none"', () => {
    assert.equal(grpo({ scale_rewards: true }).scale_rewards, 'group');
    assert.equal(grpo({ scale_rewards: false }).scale_rewards, 'none');
    for (const s of ['group', 'batch', 'none']) assert.equal(grpo({ scale_rewards: s }).scale_rewards, s);
    assert.equal(errorOf({ ...GRPO, scale_rewards: 'mean' }).field, 'scale_rewards');
    assert.equal(errorOf({ ...GRPO, scale_rewards: 1 }).field, 'scale_rewards');
  });
});

describe('bad fields', () => {
  // [what is changed, the field the error must name, a fragment of its message]
  const cases: [Record<string, unknown>, string, string][] = [
    [{ name: 'has space' }, 'name', 'letters, digits'],
    [{ name: '..' }, 'name', 'cannot start with "."'],
    [{ name: 'x'.repeat(65) }, 'name', '64'],
    [{ kind: 'ppo' }, 'kind', '"grpo" or "sft"'],
    [{ max_steps: 1e12 }, 'max_steps', 'got 1000000000000'],
    [{ max_steps: 0 }, 'max_steps', 'integer from 1'],
    [{ max_steps: 2.5 }, 'max_steps', 'integer'],
    [{ max_steps: '10' }, 'max_steps', 'got "10"'],
    [{ seed: -1 }, 'seed', 'integer'],
    [{ data: { source: 'gsm8k' } }, 'data.path', 'required'],
    [{ data: { source: 'hf' } }, 'data.source', '"gsm8k", "chat" or "synthetic"'],
    [{ data: { source: 'gsm8k', path: '' } }, 'data.path', 'empty'],
    [{ data: { source: 'gsm8k', path: 'x', limit: -5 } }, 'data.limit', 'integer'],
    [{ data: { source: 'synthetic', difficulty: 'impossible' } }, 'data.difficulty', ''],
    [{ lora: { rank: 100000 } }, 'lora.rank', '1024'],
    [{ lora: { rank: 0 } }, 'lora.rank', 'integer from 1'],
    [{ lora: { alpha: 0 } }, 'lora.alpha', '> 0'],
    [{ lora: { dropout: 0.05 } }, 'lora.dropout', 'dropout is not supported yet'],
    [{ lora: { dropout: 1.5 } }, 'lora.dropout', '[0, 1)'],
    [{ lora: { targets: [] } }, 'lora.targets', 'at least one'],
    [{ lora: { targets: ['q_proj', 'lm_head'] } }, 'lora.targets[1]', 'q_proj, k_proj'],
    [{ lora: { targets: ['q_proj', 'q_proj'] } }, 'lora.targets', 'twice'],
    [{ lora: { init_from: 'a', alpha: 32 } }, 'lora.alpha', 'init_from'],
    [{ optimizer: { learning_rate: -1e-5 } }, 'optimizer.learning_rate', '> 0'],
    [{ optimizer: { learning_rate: Number.NaN } }, 'optimizer.learning_rate', 'got NaN'],
    [{ optimizer: { learning_rate: Infinity } }, 'optimizer.learning_rate', 'got Infinity'],
    [{ optimizer: { learning_rate: 3 } }, 'optimizer.learning_rate', '<= 1'],
    [{ optimizer: { adam_beta2: 1 } }, 'optimizer.adam_beta2', '< 1'],
    [{ optimizer: { lr_scheduler_type: 'polynomial' } }, 'optimizer.lr_scheduler_type', '"cosine"'],
    [{ optimizer: { max_grad_norm: -1 } }, 'optimizer.max_grad_norm', '>= 0'],
    [{ optimizer: { warmup_steps: 2, warmup_ratio: 0.1 } }, 'optimizer.warmup_ratio', 'not both'],
    [{ optimizer: { warmup_steps: 251 } }, 'optimizer.warmup_steps', 'max_steps'],
    [{ num_generations: 1 }, 'num_generations', 'integer from 2'],
    [{ temperature: 0 }, 'temperature', '> 0'],
    [{ top_p: 1.5 }, 'top_p', '<= 1'],
    [{ top_k: -1 }, 'top_k', 'integer from 0'],
    [{ min_p: 2 }, 'min_p', '<= 1'],
    [{ repetition_penalty: 0 }, 'repetition_penalty', '> 0'],
    [{ epsilon: 1 }, 'epsilon', '< 1'],
    [{ beta: -0.1 }, 'beta', '>= 0'],
    [{ loss_type: 'cispo' }, 'loss_type', '"dapo"'],
    [{ max_completion_length: 10_000_000 }, 'max_completion_length', '131,072'],
    [{ num_generations: 6, per_device_train_batch_size: 4 }, 'per_device_train_batch_size', 'multiple of num_generations (6)'],
    [{ per_device_train_batch_size: 100000 }, 'per_device_train_batch_size', 'integer'],
    [{ reward_funcs: [] }, 'reward_funcs', 'at least one'],
    [{ reward_funcs: ['a', 'b', 'a'] }, 'reward_funcs[2]', 'twice'],
    [{ reward_funcs: ['a', ''] }, 'reward_funcs[1]', 'reward name'],
    [{ reward_weights: [1, 2] }, 'reward_weights', '2 weights for 5'],
    [{ reward_weights: [1, 1, 1, 1, 'x'] }, 'reward_weights[4]', 'number'],
    [{ data: { source: 'chat', path: 'c.jsonl' } }, 'reward_funcs', 'required for chat data'],
    [{ save_total_limit: 0 }, 'save_total_limit', 'integer from 1'],
    [{ publish: { every_steps: 0 } }, 'publish.every_steps', 'integer from 1'],
    [{ publish: { adapter: '../x' } }, 'publish.adapter', 'letters'],
    [{ output_dir: 7 }, 'output_dir', 'path'],
    [{ deterministic: 'yes' }, 'deterministic', ''],
  ];
  for (const [change, field, fragment] of cases) {
    it(`${JSON.stringify(change)} -> ${field}`, () => {
      const err = errorOf({ ...GRPO, ...change });
      assert.equal(err.field, field, err.message);
      assert.ok(err.message.includes(fragment), `message should contain ${JSON.stringify(fragment)}: ${err.message}`);
      assert.ok(err.message.includes(field), 'the message names the field too');
    });
  }

  it('names missing required fields', () => {
    for (const field of ['name', 'data', 'max_steps', 'kind']) {
      const { [field]: _, ...rest } = GRPO as Record<string, unknown>;
      const err = errorOf(rest);
      assert.equal(err.field, field);
      assert.match(err.message, /required/);
    }
  });

  it('rejects a body that is not an object', () => {
    for (const body of ['grpo', 42, [GRPO], null]) assert.equal(errorOf(body).field, '');
  });

  it('checks SFT fields as well', () => {
    assert.equal(errorOf({ ...SFT, max_length: 0 }).field, 'max_length');
    assert.equal(errorOf({ ...SFT, assistant_only_loss: 'true' }).field, 'assistant_only_loss');
  });
});

describe('strictness', () => {
  it('rejects unknown keys at every level, suggesting the near name', () => {
    const root = errorOf({ ...GRPO, num_generation: 4 });
    assert.equal(root.field, 'num_generation');
    assert.match(root.message, /did you mean "num_generations"/);

    const nested = errorOf({ ...GRPO, optimizer: { learing_rate: 1e-5 } });
    assert.equal(nested.field, 'optimizer.learing_rate');
    assert.match(nested.message, /did you mean "learning_rate"/);

    assert.equal(errorOf({ ...GRPO, lora: { r: 8 } }).field, 'lora.r');
    assert.equal(errorOf({ ...GRPO, publish: { every: 2 } }).field, 'publish.every');
    assert.equal(errorOf({ ...GRPO, data: { source: 'gsm8k', path: 'x', shufle: false } }).field, 'data.shufle');
    assert.match(errorOf({ ...GRPO, data: { source: 'synthetic', path: 'x' } }).message, /synthetic data is generated/);
  });

  it('says where a TRL flat name belongs, and which kind a setting is for', () => {
    const flat = errorOf({ ...GRPO, learning_rate: 1e-5 });
    assert.equal(flat.field, 'learning_rate');
    assert.match(flat.message, /optimizer\.learning_rate/);
    const wrongKind = errorOf({ ...SFT, num_generations: 4 });
    assert.equal(wrongKind.field, 'num_generations');
    assert.match(wrongKind.message, /GRPO setting/);
    assert.match(errorOf({ ...GRPO, max_length: 512 }).message, /SFT setting/);
  });

  it('reports every problem, the first one as the field', () => {
    const err = errorOf({ ...GRPO, bogus: 1, optimizer: { learning_rate: -1 }, lora: { rank: 0 } });
    const fields = err.problems.map((p) => p.field).sort();
    assert.deepEqual(fields, ['bogus', 'lora.rank', 'optimizer.learning_rate']);
    assert.equal(err.field, err.problems[0].field);
  });

  it('the schema alone is strict too (for the admin API\'s OpenAPI document)', () => {
    assert.equal(jobConfigSchema.safeParse({ ...GRPO, extra: 1 }).success, false);
    assert.equal(jobConfigSchema.safeParse(GRPO).success, true);
  });
});

describe('rewards', () => {
  it('pairs reward names with weights', () => {
    const c = grpo({ reward_funcs: ['gsm8k_int', 'gsm8k_correctness'], reward_weights: [0.5, 2] });
    assert.deepEqual(rewardSpecs(c), [{ name: 'gsm8k_int', weight: 0.5 }, { name: 'gsm8k_correctness', weight: 2 }]);
  });

  it('checks names against a registry, naming the entry', () => {
    const registry = createRewardRegistry();
    assert.equal(checkRewardNames(grpo(), registry), null);
    const err = checkRewardNames(grpo({ reward_funcs: ['gsm8k_int', 'gsm8k_corectness'] }), registry);
    assert.ok(err instanceof JobConfigError);
    assert.equal(err.field, 'reward_funcs[1]');
    assert.match(err.message, /did you mean "gsm8k_correctness"/);
    // A reward registered at run time becomes valid.
    const c = grpo({ reward_funcs: ['length_penalty'] });
    assert.equal(checkRewardNames(c, registry)?.field, 'reward_funcs[0]');
    registry.register('length_penalty', () => 0);
    assert.equal(checkRewardNames(c, registry), null);
  });
});

describe('dataFile', () => {
  it('reads <dir>/<split>.jsonl from a directory and the file itself otherwise', () => {
    const c: JobConfig = grpo({ data: { source: 'gsm8k', path: 'data/gsm8k', split: 'test' } });
    const data = c.data;
    if (data.source !== 'gsm8k') assert.fail('source changed');
    assert.equal(dataFile(data, true), 'data/gsm8k/test.jsonl');
    assert.equal(dataFile({ ...data, split: undefined }, true), 'data/gsm8k/train.jsonl');
    assert.equal(dataFile({ ...data, split: undefined, path: 'a.jsonl' }, false), 'a.jsonl');
    assert.throws(() => dataFile(data, false), (e: JobConfigError) => e.field === 'data.split');
  });
});
