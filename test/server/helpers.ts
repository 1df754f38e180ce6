/**
 * A live Tandem server in this process on a free port, serving the tiny preset model through
 * the real engine, plus the official OpenAI client pointed at it.
 */
import { serve } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { createBackend } from '../../src/backend/index.ts';
import { Engine, type EngineOptions } from '../../src/engine/engine.ts';
import { Metrics } from '../../src/metrics.ts';
import { TrainingMetrics } from '../../src/metrics-training.ts';
import { loadModel } from '../../src/model/load.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { createApp, type AppOptions } from '../../src/server/app.ts';
import { createServerState, type ServerState } from '../../src/server/state.ts';
import type { AdminServices } from '../../src/server/admin/index.ts';
import { JobManager } from '../../src/train/job-manager.ts';
import { createRewardRegistry, type RewardRegistry } from '../../src/train/reward-registry.ts';

export const MODEL_NAME = 'tiny';

export interface TestServer {
  base: string;
  client: OpenAI;
  state: ServerState;
  engine: Engine;
  metrics: Metrics;
  /** The admin API's job manager, adapters and rewards (with `admin` options). */
  admin: AdminServices | null;
  /** Stop listening, stop training jobs, free the engine. */
  close(): Promise<void>;
}

/** One tiny model per process: writing it takes a moment, and every suite can share it. */
let modelDir: string | null = null;
function tinyModel(): string {
  if (modelDir === null) {
    const root = mkdtempSync(join(tmpdir(), 'tandem-server-'));
    modelDir = join(root, MODEL_NAME);
    makeModel({ preset: 'tiny', out: modelDir, seed: 3 });
    process.once('exit', () => rmSync(root, { recursive: true, force: true }));
  }
  return modelDir;
}

/** The admin API: a JobManager over `jobsDir` (a fresh temp dir by default) sharing the engine's device queue. */
export interface TestAdminOptions {
  token?: string | null;
  rewards?: RewardRegistry;
  jobsDir?: string;
  log?: (line: string) => void;
}

export async function startServer(
  opts: { app?: AppOptions; engine?: Partial<EngineOptions>; apiKey?: string; ready?: boolean; admin?: TestAdminOptions } = {},
): Promise<TestServer> {
  const loaded = loadModel(tinyModel(), createBackend('cpu'));
  const metrics = new Metrics({ processMetrics: false });
  const engine = new Engine(loaded, {
    blockSize: 16,
    numBlocks: 512,
    maxNumSeqs: 256,
    maxNumBatchedTokens: 2048,
    maxWaiting: 512,
    metrics,
    ...opts.engine,
  });
  const state = createServerState({ modelName: MODEL_NAME, backend: 'cpu', fingerprint: 'tandem-test' });
  if (opts.ready ?? true) {
    state.engine = engine;
    state.status = 'ready';
  }
  let admin: AdminServices | null = null;
  let jobsRoot: string | null = null;
  if (opts.admin) {
    const rewards = opts.admin.rewards ?? createRewardRegistry();
    jobsRoot = opts.admin.jobsDir === undefined ? mkdtempSync(join(tmpdir(), 'tandem-jobs-')) : null;
    const deps = { loaded, engine, queue: engine.deviceQueue, rewards, metrics: new TrainingMetrics(metrics.registry), log: opts.admin.log };
    const jobs = new JobManager(deps, { dir: opts.admin.jobsDir ?? jobsRoot!, reservedNames: [MODEL_NAME], persistIntervalMs: 200 });
    admin = { jobs, engine, rewards };
  }
  const adminOptions = opts.admin ? { token: opts.admin.token ?? null, services: admin } : null;
  const app = createApp(state, { metrics, apiKey: opts.apiKey ?? null, admin: adminOptions, ...opts.app });
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s as Server)) as Server;
  });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: opts.apiKey ?? 'unused', maxRetries: 0, timeout: 60_000 });
  return {
    base,
    client,
    state,
    engine,
    metrics,
    admin,
    close: async () => {
      await admin?.jobs.shutdown(30_000);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await engine.close();
      if (jobsRoot) rmSync(jobsRoot, { recursive: true, force: true });
    },
  };
}

/** POST a JSON body (a string is sent as is) and return status and parsed body. */
export async function postJson(base: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** Token count of a prompt or conversation, via POST /tokenize. */
export async function countTokens(base: string, body: { prompt: string } | { messages: unknown[] }): Promise<number> {
  const r = await postJson(base, '/tokenize', body);
  if (r.status !== 200) throw new Error(`tokenize: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.count as number;
}

// Values out of a /metrics exposition.
export { metricSum, metricValue } from '../metrics-text.ts';

export async function scrape(base: string): Promise<string> {
  return (await fetch(base + '/metrics')).text();
}

/** Poll until `check` holds (the engine frees blocks between its steps). */
export async function eventually(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
