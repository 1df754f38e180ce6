/**
 * `tandem serve`: listen at once (GET /health answers 503 while loading), load the model,
 * build the engine, then health turns 200. SIGTERM/SIGINT drain and exit 0.
 */
import { serve } from '@hono/node-server';
import type { Server } from 'node:http';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { CudaBackend } from '../backend/cuda/cuda-backend.ts';
import { createBackend } from '../backend/index.ts';
import { parseMemorySize, planCategories } from '../backend/memory-plan.ts';
import { checkAdapterName } from '../engine/adapters.ts';
import { GraphCaptureError } from '../engine/decode-graphs.ts';
import { Engine } from '../engine/engine.ts';
import { Metrics } from '../metrics.ts';
import { TrainingMetrics } from '../metrics-training.ts';
import { loadModelConfig } from '../model/config.ts';
import { loadModelAsync } from '../model/load.ts';
import { DEFAULT_MODEL_DIR } from '../paths.ts';
import { createApp, DEFAULT_MAX_BODY_BYTES, type AdminOptions } from '../server/app.ts';
import { shutdown } from '../server/shutdown.ts';
import { createServerState } from '../server/state.ts';
import { VERSION } from '../server/version.ts';
import { JobManager } from '../train/job-manager.ts';
import { registerRewardModule } from '../train/reward-module.ts';
import { createRewardRegistry } from '../train/reward-registry.ts';
import { choiceOption, cudaGraphsOption, floatOption, intOption, switchOption, UsageError } from './args.ts';
import { applyGpuMemoryBudget, checkModelFits, DEFAULT_GPU_MEMORY, type GpuMemoryOptions } from './gpu-memory.ts';

export const SERVE_USAGE = `tandem serve [--model DIR] [options]
  --host H                      listen address (default 127.0.0.1; env TANDEM_HOST)
  --port P                      (default 8000, 0 = any free port; env TANDEM_PORT)
  --backend cpu|cuda|auto       (default auto: cuda where the addon is built and a GPU is visible)
  --gpu-memory SIZE             cuda: the device memory Tandem may use, e.g. 24GiB, 20GB, or 0.9 of the card
                                (default ${DEFAULT_GPU_MEMORY}); split at start into weights, KV cache, workspace, adapters
  --adapter-memory SIZE         cuda: the part of it kept for LoRA adapter versions and training state
                                (default 2% of --gpu-memory, at least 256MiB; a fraction is of --gpu-memory)
  --served-model-name NAME      the model's name in the API (default: the folder's name; env TANDEM_SERVED_MODEL_NAME)
  --api-key KEY                 require Authorization: Bearer KEY on the API (env TANDEM_API_KEY)
  --admin-token TOKEN           require Authorization: Bearer TOKEN on /admin/* (env TANDEM_ADMIN_TOKEN);
                                without it /admin/* answers only clients on this machine (loopback)
  --jobs-dir DIR                training job records (default ./runs/jobs; env TANDEM_JOBS_DIR)
  --max-model-len N             context per request (default: the model's max_position_embeddings)
  --kv-cache-tokens N           KV cache size in tokens (at least --max-model-len; default 32768 on cpu,
                                on cuda what --gpu-memory leaves)
  --kv-blocks N                 ... or in blocks (overrides --kv-cache-tokens)
  --block-size N                tokens per KV block (default 16)
  --max-num-seqs N              requests running at once (default 256)
  --max-num-batched-tokens N    tokens per engine step (default 2048)
  --max-waiting N               queued requests before 429 (default 1024)
  --max-body-bytes N            larger request bodies get 413 (default 4194304)
  --shutdown-grace-seconds S    on SIGTERM, wait this long for requests in flight (default 30)
  --lora NAME=DIR               serve the PEFT LoRA adapter in DIR as model NAME (repeatable)
  --rewards FILE                a JS/TS module whose exported functions become training rewards (repeatable)
  --cuda-graphs                 replay decode steps as CUDA graphs per batch-size bucket, all captured at
                                start (default on the cuda backend; env TANDEM_CUDA_GRAPHS=1)
  --enforce-eager               launch every kernel of every step instead (env TANDEM_CUDA_GRAPHS=0); the
                                cpu backend is always eager
  --no-async-scheduling         each decode step waits for the previous one's tokens on the host instead of
                                reading them on the device (env TANDEM_ASYNC_SCHEDULING=0)
  --async-scheduling            queue each decode step before the previous one's tokens are back (env
                                TANDEM_ASYNC_SCHEDULING=1): the default with --backend cuda; off by default
                                on the cpu backend, whose ops finish before they return
  env: TANDEM_MODEL for --model`;

interface ServeConfig {
  modelDir: string;
  host: string;
  port: number;
  backend: 'cpu' | 'cuda' | 'auto';
  servedModelName: string;
  apiKey: string | null;
  adminToken: string | null;
  jobsDir: string;
  maxModelLen: number | undefined;
  kvBlocks: number | undefined;
  /** Absent: 32768 on cpu, what the memory budget leaves on cuda. */
  kvCacheTokens: number | undefined;
  gpuMemory: string | undefined;
  adapterMemory: string | undefined;
  blockSize: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  maxWaiting: number;
  maxBodyBytes: number;
  graceSeconds: number;
  /** --lora NAME=DIR, in the order given. */
  loras: { name: string; dir: string }[];
  /** --rewards FILE: reward modules for training jobs. */
  rewardModules: string[];
  /**
   * --cuda-graphs / TANDEM_CUDA_GRAPHS=1: true; --enforce-eager / TANDEM_CUDA_GRAPHS=0: false; else
   * undefined: on for the cuda backend, off for cpu (which has no graphs).
   */
  cudaGraphs: boolean | undefined;
  /**
   * --async-scheduling / TANDEM_ASYNC_SCHEDULING=1: true; --no-async-scheduling /
   * TANDEM_ASYNC_SCHEDULING=0: false; else undefined, the engine's default for the backend (on
   * for cuda, off for cpu; EngineOptions.asyncScheduling).
   */
  asyncScheduling: boolean | undefined;
}

function parseServeArgs(argv: string[]): ServeConfig {
  const str = { type: 'string' } as const;
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      model: str, host: str, port: str, backend: str, 'served-model-name': str, 'api-key': str, 'max-model-len': str,
      'kv-blocks': str, 'kv-cache-tokens': str, 'block-size': str, 'max-num-seqs': str, 'max-num-batched-tokens': str,
      'max-waiting': str, 'max-body-bytes': str, 'shutdown-grace-seconds': str, 'admin-token': str, 'jobs-dir': str,
      'gpu-memory': str, 'adapter-memory': str,
      lora: { type: 'string', multiple: true },
      rewards: { type: 'string', multiple: true },
      'cuda-graphs': { type: 'boolean' },
      'enforce-eager': { type: 'boolean' },
      'no-async-scheduling': { type: 'boolean' },
      'async-scheduling': { type: 'boolean' },
    },
  });
  const env = process.env;
  const modelDir = v.model ?? env.TANDEM_MODEL ?? DEFAULT_MODEL_DIR;
  const servedModelName = v['served-model-name'] ?? env.TANDEM_SERVED_MODEL_NAME ?? basename(modelDir);
  if (servedModelName.trim() === '') throw new UsageError('--served-model-name must not be empty');
  const apiKey = v['api-key'] ?? env.TANDEM_API_KEY ?? null;
  if (apiKey !== null && apiKey.trim() === '') throw new UsageError('--api-key must not be empty');
  const adminToken = v['admin-token'] ?? env.TANDEM_ADMIN_TOKEN ?? null;
  if (adminToken !== null && adminToken.trim() === '') throw new UsageError('--admin-token must not be empty');
  const jobsDir = v['jobs-dir'] ?? env.TANDEM_JOBS_DIR ?? 'runs/jobs';
  if (jobsDir.trim() === '') throw new UsageError('--jobs-dir must not be empty');
  const optionalInt = (name: string, raw: string | undefined, min: number): number | undefined =>
    raw === undefined ? undefined : intOption(name, raw, 0, min);
  return {
    modelDir,
    host: v.host ?? env.TANDEM_HOST ?? '127.0.0.1',
    port: intOption('port', v.port ?? env.TANDEM_PORT, 8000, 0, 65535),
    backend: choiceOption('backend', v.backend, ['cpu', 'cuda', 'auto'] as const, 'auto'),
    servedModelName,
    apiKey,
    adminToken,
    jobsDir,
    maxModelLen: optionalInt('max-model-len', v['max-model-len'], 1),
    kvBlocks: optionalInt('kv-blocks', v['kv-blocks'], 1),
    kvCacheTokens: optionalInt('kv-cache-tokens', v['kv-cache-tokens'], 1),
    gpuMemory: sizeOption('gpu-memory', v['gpu-memory']),
    adapterMemory: sizeOption('adapter-memory', v['adapter-memory']),
    blockSize: intOption('block-size', v['block-size'], 16, 1, 1024),
    maxNumSeqs: intOption('max-num-seqs', v['max-num-seqs'], 256, 1),
    maxNumBatchedTokens: intOption('max-num-batched-tokens', v['max-num-batched-tokens'], 2048, 1),
    maxWaiting: intOption('max-waiting', v['max-waiting'], 1024, 0),
    maxBodyBytes: intOption('max-body-bytes', v['max-body-bytes'], DEFAULT_MAX_BODY_BYTES, 1),
    graceSeconds: floatOption('shutdown-grace-seconds', v['shutdown-grace-seconds'], 30, 0, 86400),
    loras: parseLoras(v.lora ?? [], servedModelName),
    rewardModules: v.rewards ?? [],
    cudaGraphs: cudaGraphsOption(v, env.TANDEM_CUDA_GRAPHS),
    asyncScheduling: switchOption(
      { name: 'async-scheduling', set: v['async-scheduling'] === true },
      { name: 'no-async-scheduling', set: v['no-async-scheduling'] === true },
      'TANDEM_ASYNC_SCHEDULING',
      env.TANDEM_ASYNC_SCHEDULING,
    ),
  };
}

/** A --gpu-memory style size, checked for form now (a fraction is resolved against the card later). */
function sizeOption(name: string, raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  try {
    parseMemorySize(name, raw, 1);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return raw;
}

/** `--lora NAME=DIR` options (as vLLM's --lora-modules name=path). */
function parseLoras(raw: string[], servedModelName: string): { name: string; dir: string }[] {
  const seen = new Set<string>();
  return raw.map((item) => {
    const eq = item.indexOf('=');
    const name = eq < 0 ? '' : item.slice(0, eq).trim();
    const dir = eq < 0 ? '' : item.slice(eq + 1).trim();
    if (name === '' || dir === '') throw new UsageError(`--lora must be NAME=DIR (a PEFT adapter folder), got '${item}'`);
    try {
      checkAdapterName(name);
    } catch (err) {
      throw new UsageError(`--lora ${item}: ${(err as Error).message}`);
    }
    if (name === servedModelName) throw new UsageError(`--lora ${item}: '${name}' is the base model's name (--served-model-name); pick another`);
    if (seen.has(name)) throw new UsageError(`--lora ${item}: the name '${name}' is given twice`);
    seen.add(name);
    return { name, dir };
  });
}

export async function runServe(argv: string[]): Promise<void> {
  const cfg = parseServeArgs(argv);
  const state = createServerState({ modelName: cfg.servedModelName, backend: cfg.backend, fingerprint: `tandem-${VERSION}` });
  const metrics = new Metrics();
  // The admin services appear once the engine exists; until then /admin/* answers 503.
  const admin: AdminOptions = { token: cfg.adminToken, services: null };
  const app = createApp(state, { apiKey: cfg.apiKey, maxBodyBytes: cfg.maxBodyBytes, metrics, admin });
  const server = serve({ fetch: app.fetch, hostname: cfg.host, port: cfg.port }, (info) => {
    process.stdout.write(`tandem listening on http://${cfg.host}:${info.port} (loading ${cfg.modelDir})\n`);
  }) as Server;

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`${signal}: shutting down (grace ${cfg.graceSeconds} s)\n`);
    const stopJobs = (graceMs: number): Promise<void> => admin.services?.jobs.shutdown(graceMs) ?? Promise.resolve();
    shutdown(state, server, cfg.graceSeconds * 1000, (line) => process.stdout.write(line + '\n'), { stopJobs }).then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`shutdown failed: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));

  try {
    const log = (line: string): void => void process.stdout.write(line + '\n');
    const backend = createBackend(cfg.backend, log);
    const cuda = backend instanceof CudaBackend ? backend : null;
    // Graphs by default where there are graphs (as vLLM); --cuda-graphs on cpu fails in the engine with the reason.
    const cudaGraphs = cfg.cudaGraphs ?? cuda !== null;
    const started = performance.now();
    const maxModelLenOf = (maxPositions: number): number => cfg.maxModelLen ?? maxPositions;
    // Explicit KV sizes; without one, cpu takes 32768 tokens and cuda what the budget leaves.
    const requestedBlocks = (maxModelLen: number): number | undefined =>
      cfg.kvBlocks ?? (cfg.kvCacheTokens === undefined ? undefined : Math.ceil(Math.max(cfg.kvCacheTokens, maxModelLen) / cfg.blockSize));
    const budgetOptions = (maxModelLen: number): GpuMemoryOptions => ({
      gpuMemory: cfg.gpuMemory,
      adapterMemory: cfg.adapterMemory,
      blockSize: cfg.blockSize,
      maxModelLen,
      maxNumSeqs: cfg.maxNumSeqs,
      maxNumBatchedTokens: cfg.maxNumBatchedTokens,
      requestedBlocks: requestedBlocks(maxModelLen),
      cudaGraphs,
    });
    const checkKvHoldsOneRequest = (numBlocks: number, maxModelLen: number): void => {
      // As vLLM refuses to start: a KV cache smaller than one full-length request would turn
      // every long request (and every default max_tokens) into an error.
      if (numBlocks * cfg.blockSize < maxModelLen) {
        throw new UsageError(
          `--kv-blocks ${numBlocks} x --block-size ${cfg.blockSize} = ${numBlocks * cfg.blockSize} tokens cannot hold one request ` +
            `of the context length ${maxModelLen}: raise --kv-blocks to at least ${Math.ceil(maxModelLen / cfg.blockSize)} or lower --max-model-len`,
        );
      }
    };
    if (cuda !== null) {
      // Fail in a second, before reading gigabytes, when the budget cannot hold the model.
      const config = loadModelConfig(cfg.modelDir);
      const requested = requestedBlocks(maxModelLenOf(config.maxPositionEmbeddings));
      if (requested !== undefined) checkKvHoldsOneRequest(requested, maxModelLenOf(config.maxPositionEmbeddings));
      checkModelFits(cuda, config, budgetOptions(maxModelLenOf(config.maxPositionEmbeddings)));
    } else if (cfg.gpuMemory !== undefined || cfg.adapterMemory !== undefined) {
      log('--gpu-memory / --adapter-memory apply to the cuda backend only: ignored on cpu');
    }
    const loaded = await loadModelAsync(cfg.modelDir, backend);
    const maxModelLen = maxModelLenOf(loaded.config.maxPositionEmbeddings);
    let numBlocks = requestedBlocks(maxModelLen) ?? Math.ceil(Math.max(32768, maxModelLen) / cfg.blockSize);
    checkKvHoldsOneRequest(numBlocks, maxModelLen);
    if (cuda !== null) {
      const plan = await applyGpuMemoryBudget(cuda, loaded.model, budgetOptions(maxModelLen), log);
      numBlocks = plan.numBlocks;
      metrics.setMemoryBudget(planCategories(plan));
    }
    const engine = new Engine(loaded, {
      blockSize: cfg.blockSize,
      numBlocks,
      maxNumSeqs: cfg.maxNumSeqs,
      maxNumBatchedTokens: cfg.maxNumBatchedTokens,
      maxWaiting: cfg.maxWaiting,
      maxModelLen,
      metrics,
      cudaGraphs,
      asyncScheduling: cfg.asyncScheduling,
    });
    if (cudaGraphs) {
      // All decode graphs now, as vLLM does: a capture inside a step would stall the first users.
      const t0 = performance.now();
      try {
        const n = await engine.captureGraphs();
        log(`captured ${n} decode graphs in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
      } catch (err) {
        if (!(err instanceof GraphCaptureError)) throw err;
        log(`${err.message}; that bucket runs eagerly, larger ones capture on first use`);
      }
    }
    for (const { name, dir } of cfg.loras) {
      const v = engine.adapters.loadPeft(name, dir);
      process.stdout.write(`adapter '${name}' loaded from ${dir}: rank ${v.lora.spec.rank}, ${v.lora.spec.targets.join(', ')} (${v.bytes} bytes) as ${v.id}\n`);
    }
    if (stopping) return; // SIGTERM arrived while loading: shutdown is already under way
    const rewards = createRewardRegistry();
    for (const file of cfg.rewardModules) {
      const names = await registerRewardModule(rewards, file);
      process.stdout.write(`rewards from ${file}: ${names.join(', ')}\n`);
    }
    const deps = { loaded, engine, queue: engine.deviceQueue, rewards, metrics: new TrainingMetrics(metrics.registry), log };
    const jobs = new JobManager(deps, { dir: cfg.jobsDir, reservedNames: [cfg.servedModelName] });
    admin.services = { jobs, engine, rewards };
    const listed = jobs.list();
    if (listed.length > 0) {
      const interrupted = listed.filter((j) => j.status === 'interrupted').map((j) => j.id);
      log(`training jobs: ${listed.length} record(s) in ${jobs.dir}${interrupted.length > 0 ? `; interrupted (POST /admin/jobs/{id}/resume): ${interrupted.join(', ')}` : ''}`);
    }
    state.backend = backend.name;
    state.engine = engine;
    state.status = 'ready';
    const c = loaded.config;
    process.stdout.write(
      `model ready in ${((performance.now() - started) / 1000).toFixed(2)} s: ${c.architecture}, ${c.numLayers} layers, ` +
        `hidden ${c.hiddenSize}, vocab ${c.vocabSize}, backend ${backend.name}; serving '${cfg.servedModelName}', ` +
        `context ${engine.maxModelLen}, KV cache ${numBlocks} blocks x ${cfg.blockSize} tokens, ` +
        `async scheduling ${engine.asyncScheduling ? 'on' : 'off'}, cuda graphs ${cudaGraphs ? 'on' : 'off'}\n`,
    );
  } catch (err) {
    state.status = 'failed';
    state.error = err instanceof Error ? err.message : String(err);
    process.stderr.write(`failed to load ${cfg.modelDir}: ${state.error}\n`);
    process.exitCode = 1;
    server.close();
  }
}
