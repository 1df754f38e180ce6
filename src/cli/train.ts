/**
 * `tandem train --config job.json`: run one training job without the HTTP server, as a TRL
 * script would: the same job config as POST /admin/jobs, the same trainer, rollouts through
 * the same engine, the same checkpoints (a second run with the same output_dir resumes from
 * the newest one). A progress line per logging step goes to stdout.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { CudaBackend } from '../backend/cuda/cuda-backend.ts';
import { createBackend } from '../backend/index.ts';
import { Engine } from '../engine/engine.ts';
import { loadModelAsync } from '../model/load.ts';
import { DEFAULT_MODEL_DIR } from '../paths.ts';
import { JobConfigError, parseJobConfig } from '../train/job-config.ts';
import { registerRewardModule } from '../train/reward-module.ts';
import { createRewardRegistry } from '../train/reward-registry.ts';
import { TrainingJob } from '../train/trainer.ts';
import { choiceOption, cudaGraphsOption, intOption, UsageError } from './args.ts';

export const TRAIN_USAGE = `tandem train --config JOB.json [--model DIR] [options]
  --config FILE        the job (GRPO or SFT), as POST /admin/jobs takes it
  --model DIR          base model (default: the embedded one)
  --rewards FILE       a JS/TS module whose exported functions become rewards (by export name)
  --kv-cache-tokens N  KV cache for rollouts, in tokens (default 16384)
  --backend cpu|cuda|auto
  --cuda-graphs        replay rollout decode steps as CUDA graphs, a graph per batch bucket and
                       adapter version (default on the cuda backend; env TANDEM_CUDA_GRAPHS=1)
  --enforce-eager      launch every kernel of every rollout step instead (env TANDEM_CUDA_GRAPHS=0)`;

export async function runTrain(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      config: { type: 'string' },
      model: { type: 'string' },
      'kv-cache-tokens': { type: 'string' },
      rewards: { type: 'string', multiple: true },
      backend: { type: 'string' },
      'cuda-graphs': { type: 'boolean' },
      'enforce-eager': { type: 'boolean' },
    },
  });
  if (values.config === undefined) throw new UsageError('--config is required (a JSON job file)');
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(values.config, 'utf8'));
  } catch (err) {
    throw new UsageError(`--config ${values.config}: ${(err as Error).message}`);
  }
  let config;
  try {
    config = parseJobConfig(raw);
  } catch (err) {
    if (err instanceof JobConfigError) throw new UsageError(`${values.config}: ${err.message}`);
    throw err;
  }
  const rewards = createRewardRegistry();
  for (const file of values.rewards ?? []) {
    try {
      await registerRewardModule(rewards, file);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  const graphsSwitch = cudaGraphsOption(values, process.env.TANDEM_CUDA_GRAPHS);
  const backend = createBackend(choiceOption('backend', values.backend, ['cpu', 'cuda', 'auto'] as const, 'auto'));
  const loaded = await loadModelAsync(values.model ?? DEFAULT_MODEL_DIR, backend);
  const blockSize = 16;
  const kvTokens = intOption('kv-cache-tokens', values['kv-cache-tokens'], 16384, blockSize);
  const maxModelLen = Math.min(loaded.config.maxPositionEmbeddings, kvTokens);
  const engine = new Engine(loaded, {
    blockSize,
    numBlocks: Math.ceil(kvTokens / blockSize),
    maxNumSeqs: 256,
    maxNumBatchedTokens: 4096,
    maxWaiting: 4096,
    maxModelLen,
    // Graphs by default where there are graphs, as serve does.
    cudaGraphs: graphsSwitch ?? backend instanceof CudaBackend,
  });
  const job = new TrainingJob(config, {
    loaded,
    engine,
    queue: engine.deviceQueue,
    rewards,
    log: (line) => process.stdout.write(line + '\n'),
  });
  let signals = 0;
  const onSignal = (): void => {
    if (++signals > 1) process.exit(130);
    process.stdout.write('stopping after this step (a checkpoint is written); press Ctrl-C again to quit now\n');
    job.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.stdout.write(`training '${config.name}' (${config.kind}) on ${loaded.dir}, backend ${backend.name}, ${config.max_steps} steps, checkpoints in ${config.output_dir}\n`);
  await job.start();
  await engine.close();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  if (job.status === 'failed') throw new Error(job.error ?? 'training failed');
  process.stdout.write(`${job.status} at step ${job.step}; last checkpoint ${job.lastCheckpoint ?? 'none'}\n`);
}
