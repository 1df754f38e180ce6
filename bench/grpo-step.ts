/**
 * GRPO step benchmark: the real trainer (TrainingJob -> grpo-step.ts: engine rollouts, rewards,
 * the training forward / backward, clipping, AdamW, publishing) on a model directory and a
 * backend, printing rollout and training seconds per step, and a summary without the first
 * (warm-up) step. The data is the built-in synthetic arithmetic set, so any model works,
 * including a random one from `tandem make-model` (whose completions run to the length limit,
 * which is what a timing wants).
 *
 *   node --import tsx bench/grpo-step.ts --model DIR [--backend cuda] [--steps 4] [--generations 6]
 *     [--completion-tokens 200] [--prompt-tokens 256] [--rank 32] [--micro-batch 6] [--cuda-graphs] [--card NAME] [--out result.json]
 *
 * --cuda-graphs replays the rollouts' decode steps as CUDA graphs (one per batch bucket and
 * adapter version: each step's new version is captured on its first decode step).
 *
 * --out writes bench/results' JSON form (card, date, command, results with the yardstick as the
 * step time's peer), with the run's configuration and every step's record beside it.
 *
 * The reference workload (DESIGN.md): Qwen2.5-3B, LoRA rank 32 on all seven projections,
 * 6 completions per prompt, completions up to 200 tokens, one prompt per step: 2.93 s per step
 * with Unsloth + vLLM on an RTX 4090. Prompts of the synthetic set are short (tens of tokens);
 * --prompt-tokens pads each with filler text up to about that many tokens, like GSM8K's longer
 * prompts with their system prompt.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createBackend } from '../src/backend/index.ts';
import { choiceOption, intOption } from '../src/cli/args.ts';
import { Engine } from '../src/engine/engine.ts';
import { loadModelAsync } from '../src/model/load.ts';
import { parseJobConfig } from '../src/train/job-config.ts';
import { createRewardRegistry } from '../src/train/reward-registry.ts';
import { TrainingJob } from '../src/train/trainer.ts';
import type { StepRecord } from '../src/train/trainer.ts';

/** The yardstick this benchmark is measured against (seconds per GRPO step). */
const YARDSTICK_SECONDS = 2.93;

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    backend: { type: 'string' },
    'cuda-graphs': { type: 'boolean' },
    steps: { type: 'string' },
    generations: { type: 'string' },
    'completion-tokens': { type: 'string' },
    'prompt-tokens': { type: 'string' },
    rank: { type: 'string' },
    'micro-batch': { type: 'string' },
    card: { type: 'string' },
    out: { type: 'string' },
  },
});
if (values.model === undefined) {
  process.stderr.write('usage: node --import tsx bench/grpo-step.ts --model DIR [--backend cpu|cuda|auto] [--steps N] ...\n');
  process.exit(2);
}
const steps = intOption('steps', values.steps, 4, 2);
const G = intOption('generations', values.generations, 6, 2);
const completionTokens = intOption('completion-tokens', values['completion-tokens'], 200, 1);
const promptTokens = intOption('prompt-tokens', values['prompt-tokens'], 0, 0);
const rank = intOption('rank', values.rank, 32, 1);
const microBatch = intOption('micro-batch', values['micro-batch'], G, 1);
// One prompt per step, as the reference workload: its G completions in G / microBatch micro-batches.
if (G % microBatch !== 0) throw new Error(`--micro-batch ${microBatch} must divide --generations ${G}`);

const backend = createBackend(choiceOption('backend', values.backend, ['cpu', 'cuda', 'auto'] as const, 'auto'));
const loaded = await loadModelAsync(values.model, backend);
const c = loaded.config;
const blockSize = 16;
const kvTokens = Math.max(16384, 2 * G * (promptTokens + completionTokens + 64));
const engine = new Engine(loaded, {
  blockSize,
  numBlocks: Math.ceil(kvTokens / blockSize),
  maxNumSeqs: 256,
  maxNumBatchedTokens: 4096,
  maxWaiting: 4096,
  maxModelLen: Math.min(c.maxPositionEmbeddings, kvTokens),
  cudaGraphs: values['cuda-graphs'] === true,
});

const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-grpo-bench-'));
const dataFile = path.join(workDir, 'train.jsonl');
writeData(dataFile, promptTokens);
const config = parseJobConfig({
  kind: 'grpo',
  name: 'grpo-bench',
  data: { source: 'gsm8k', path: dataFile, shuffle: false },
  lora: { rank, alpha: rank },
  optimizer: { learning_rate: 1e-5 },
  max_steps: steps,
  num_generations: G,
  per_device_train_batch_size: microBatch,
  gradient_accumulation_steps: G / microBatch,
  max_prompt_length: Math.max(promptTokens, 64) + 64,
  max_completion_length: completionTokens,
  logging_steps: 1,
  save_steps: 10_000_000,
  output_dir: path.join(workDir, 'out'),
});
const job = new TrainingJob(config, { loaded, engine, queue: engine.deviceQueue, rewards: createRewardRegistry(), log: () => {} });

const params = (c.numLayers * (c.hiddenSize * c.hiddenSize * 2 + c.hiddenSize * c.intermediateSize * 3)) / 1e6;
process.stdout.write(
  `grpo-step bench: ${loaded.dir} (${c.numLayers} layers, hidden ${c.hiddenSize}, ~${params.toFixed(0)} M layer params), backend ${backend.name}` +
    `${'device' in backend ? ` (${(backend as { device: { name: string } }).device.name})` : ''}, ` +
    `G ${G}, micro-batch ${microBatch}, completions <= ${completionTokens}, LoRA rank ${rank}, ${steps} steps\n`,
);
const started = performance.now();
try {
  await job.start();
} finally {
  await engine.close();
  fs.rmSync(workDir, { recursive: true, force: true });
}
if (job.status === 'failed') throw new Error(`the job failed: ${job.error}`);

const rows = job.history;
for (const r of rows) {
  process.stdout.write(
    `step ${r.step}: rollout ${r.rollout_seconds.toFixed(3)} s (${fmt(r.completion_length)} tokens per completion, ` +
      `${fmt(r.rollout_tokens_per_second)} tok/s), training ${r.train_seconds.toFixed(3)} s, total ${(r.rollout_seconds + r.train_seconds).toFixed(3)} s` +
      `${r.skipped ? ' (skipped)' : ''}\n`,
  );
}
const steady = rows.slice(1);
const mean = (f: (r: StepRecord) => number): number => steady.reduce((s, r) => s + f(r), 0) / Math.max(1, steady.length);
const summary = {
  model: loaded.dir,
  backend: backend.name,
  steps: rows.length,
  generations: G,
  microBatch,
  completionTokens,
  promptTokens,
  rank,
  cudaGraphs: values['cuda-graphs'] === true,
  meanRolloutSeconds: mean((r) => r.rollout_seconds),
  meanTrainSeconds: mean((r) => r.train_seconds),
  meanStepSeconds: mean((r) => r.rollout_seconds + r.train_seconds),
  wallSeconds: (performance.now() - started) / 1000,
  history: rows,
};
process.stdout.write(
  `mean of steps 2..${rows.length}: rollout ${summary.meanRolloutSeconds.toFixed(3)} s + training ${summary.meanTrainSeconds.toFixed(3)} s = ` +
    `${summary.meanStepSeconds.toFixed(3)} s per step\n`,
);
if (values.out !== undefined) {
  const doc = {
    card: values.card ?? `unknown (${backend.name}; pass --card)`,
    date: new Date().toISOString().slice(0, 10),
    command: `node --import tsx bench/grpo-step.ts ${process.argv.slice(2).join(' ')}`,
    results: [
      {
        name: `GRPO step, mean of steps 2-${rows.length}`,
        value: Number(summary.meanStepSeconds.toFixed(4)),
        unit: 's',
        peer: YARDSTICK_SECONDS,
        peer_source: 'Unsloth + vLLM on an RTX 4090, Qwen2.5-3B, same recipe (DESIGN.md)',
      },
      { name: 'rollout part (generation + rewards)', value: Number(summary.meanRolloutSeconds.toFixed(4)), unit: 's' },
      { name: 'training part (forward + backward + AdamW + publish)', value: Number(summary.meanTrainSeconds.toFixed(4)), unit: 's' },
    ],
    config: summary,
  };
  fs.writeFileSync(values.out, JSON.stringify(doc, null, 2) + '\n');
}

/** GSM8K-shaped problems (question, "#### answer"), padded with filler sentences towards `pad` prompt tokens. */
function writeData(file: string, pad: number): void {
  // About 9 tokens per filler sentence with a BPE vocabulary like Qwen's.
  const filler = 'Read the whole problem carefully before answering. '.repeat(Math.ceil(pad / 9));
  const lines: string[] = [];
  for (let i = 0; i < 64; i++) {
    const a = 3 + ((i * 7) % 40);
    const b = 5 + ((i * 11) % 30);
    lines.push(JSON.stringify({ question: `${filler}Tom has ${a} apples and buys ${b} more. How many apples does he have?`, answer: `${a} + ${b} = ${a + b}\n#### ${a + b}` }));
  }
  fs.writeFileSync(file, lines.join('\n') + '\n');
}

function fmt(x: unknown): string {
  return typeof x === 'number' ? x.toFixed(1) : '?';
}
