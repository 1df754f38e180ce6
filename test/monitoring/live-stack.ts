/**
 * A small live monitoring stack on the CPU, as an operator runs it: `tandem serve` (the CLI, a
 * child process) on a tiny random model, a real Prometheus scraping its /metrics, chat traffic
 * and a GRPO job through the admin API. Used by prometheus-live.test.ts and by
 * scripts/render-dashboard.ts (which draws the dashboard's queries from it).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeModel } from '../../src/model/make-model.ts';
import { OutputWatcher, tandemSpawn } from '../cli/helpers.ts';

export const PROMETHEUS_BIN = process.env.PROMETHEUS_BIN ?? 'prometheus';
export const REWARDS_FIXTURE = new URL('./fixtures/rewards.mjs', import.meta.url).pathname;

/** Why the live stack cannot run here, or null when it can. */
export function prometheusMissing(): string | null {
  const r = spawnSync(PROMETHEUS_BIN, ['--version'], { encoding: 'utf8' });
  if (r.error) return `'${PROMETHEUS_BIN}' not found (apt-get install prometheus, or set PROMETHEUS_BIN)`;
  if (r.status !== 0) return `'${PROMETHEUS_BIN} --version' exited ${r.status}: ${r.stderr.trim()}`;
  return null;
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

export interface LiveTandem {
  base: string;
  port: number;
  modelName: string;
  stop(): Promise<void>;
}

/** `tandem serve` on a fresh tiny model in `dir`, on a free port, with the reward fixture loaded. */
export async function startTandem(dir: string, modelName = 'tiny'): Promise<LiveTandem> {
  const modelDir = join(dir, modelName);
  makeModel({ preset: 'tiny', out: modelDir, seed: 11 });
  const child = tandemSpawn([
    'serve', '--model', modelDir, '--port', '0', '--backend', 'cpu', '--served-model-name', modelName,
    '--rewards', REWARDS_FIXTURE, '--jobs-dir', join(dir, 'jobs'), '--kv-cache-tokens', '4096', '--shutdown-grace-seconds', '2',
  ]);
  const out = new OutputWatcher(child);
  try {
    const port = Number((await out.waitFor(/tandem listening on http:\/\/[^:]+:(\d+)/, 30_000))[1]);
    await out.waitFor(/model ready/, 30_000);
    return { base: `http://127.0.0.1:${port}`, port, modelName, stop: () => stopChild(child, 5000) };
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
}

export interface LivePrometheus {
  base: string;
  stop(): Promise<void>;
}

/**
 * Prometheus scraping `target` every `scrapeInterval`, its data under `dir`, on a port it picks
 * itself (listen address :0; the port is read back from its log, so no port can be taken twice).
 * The `model` target label is what grafana/prometheus.yml sets and the dashboard filters on.
 */
export async function startPrometheus(dir: string, target: string, modelLabel: string, scrapeInterval = '1s'): Promise<LivePrometheus> {
  mkdirSync(dir, { recursive: true });
  const config = join(dir, 'prometheus.yml');
  writeFileSync(
    config,
    [
      'global:',
      `  scrape_interval: ${scrapeInterval}`,
      `  evaluation_interval: ${scrapeInterval}`,
      'scrape_configs:',
      '  - job_name: tandem',
      '    static_configs:',
      `      - targets: ['${target}']`,
      '        labels:',
      `          model: '${modelLabel}'`,
      '',
    ].join('\n'),
  );
  const child = spawn(PROMETHEUS_BIN, [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, '--web.listen-address=127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`prometheus did not report its port in 20 s; log:\n${log}`)), 20_000);
      const onData = (d: Buffer): void => {
        log += d.toString();
        const m = /msg="Listening on" address=[^\s]*:(\d+)/.exec(log);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      };
      child.stderr.on('data', onData);
      child.stdout.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`prometheus exited with ${code}; log:\n${log}`));
      });
    });
    const base = `http://127.0.0.1:${port}`;
    await until(async () => (await fetch(`${base}/-/ready`)).ok, 20_000, 'prometheus /-/ready');
    return { base, stop: () => stopChild(child, 5000) };
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
}

export async function until(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// ---- Prometheus HTTP API ----

export interface PromSample {
  metric: Record<string, string>;
  value?: [number, string];
  values?: [number, string][];
}
export type PromResult = { ok: true; resultType: string; result: PromSample[] } | { ok: false; error: string };

async function promGet(url: string): Promise<PromResult> {
  const res = await fetch(url);
  const body = (await res.json()) as { status: string; error?: string; errorType?: string; data?: { resultType: string; result: PromSample[] | [number, string] } };
  if (body.status !== 'success' || !body.data) return { ok: false, error: `${body.errorType ?? res.status}: ${body.error ?? 'no data'}` };
  // A scalar result is one [time, value] pair: present it as one sample.
  const result = body.data.resultType === 'scalar' ? [{ metric: {}, value: body.data.result as [number, string] }] : (body.data.result as PromSample[]);
  return { ok: true, resultType: body.data.resultType, result };
}

/** GET /api/v1/query: an instant query at `time` (Unix seconds; default now). */
export function promQuery(base: string, expr: string, time?: number): Promise<PromResult> {
  const params = new URLSearchParams({ query: expr });
  if (time !== undefined) params.set('time', String(time));
  return promGet(`${base}/api/v1/query?${params}`);
}

/** GET /api/v1/query_range from `start` to `end` (Unix seconds) every `step` seconds. */
export function promQueryRange(base: string, expr: string, start: number, end: number, step: number): Promise<PromResult> {
  return promGet(`${base}/api/v1/query_range?${new URLSearchParams({ query: expr, start: String(start), end: String(end), step: String(step) })}`);
}

/** GET /api/v1/label/<label>/values?match[]=selector: what a Grafana `label_values(selector, label)` variable lists. */
export async function promLabelValues(base: string, selector: string, label: string): Promise<string[]> {
  const res = await fetch(`${base}/api/v1/label/${label}/values?${new URLSearchParams({ 'match[]': selector })}`);
  const body = (await res.json()) as { status: string; data?: string[]; error?: string };
  if (body.status !== 'success') throw new Error(`label_values(${selector}, ${label}): ${body.error}`);
  return body.data ?? [];
}

// ---- load: chat traffic and a training job ----

export interface Load {
  /** The adapter the GRPO job trains and publishes. */
  adapter: string;
  jobId: string;
  requests(): number;
  failures(): string[];
  stop(): Promise<void>;
}

/** A shared prefix longer than one KV block (16 tokens), so repeated prompts hit the prefix cache. */
const SYSTEM = 'You are a careful assistant who answers arithmetic questions with one number and nothing else.';

/**
 * Starts a GRPO job (beta > 0 so KL is reported, the fixture's two rewards) that runs until
 * stopped, and `clients` chat loops (streaming and not, for the base model and the adapter).
 */
export async function startLoad(t: LiveTandem, dir: string, clients = 3, adapter = 'watch'): Promise<Load> {
  const res = await fetch(`${t.base}/admin/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      kind: 'grpo',
      name: adapter,
      data: { source: 'synthetic', limit: 64 },
      num_generations: 4,
      max_completion_length: 8,
      beta: 0.04,
      reward_funcs: ['letter_e_share', 'completion_chars'],
      max_steps: 100_000,
      save_steps: 100_000,
      logging_steps: 1,
      publish: { every_steps: 1 },
      optimizer: { learning_rate: 1e-2 },
      output_dir: join(dir, 'out', adapter),
    }),
  });
  const job = (await res.json()) as { id?: string; error?: { message: string } };
  if (res.status !== 201 || !job.id) throw new Error(`POST /admin/jobs: ${res.status} ${JSON.stringify(job)}`);

  let done = false;
  let requests = 0;
  const failures: string[] = [];
  const chat = async (i: number, n: number): Promise<void> => {
    const stream = n % 2 === 1;
    // Every third request goes to the adapter (it exists from the job's start: v1 is its initial weights).
    const model = n % 3 === 2 ? adapter : t.modelName;
    const r = await fetch(`${t.base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model,
        stream,
        max_tokens: 4 + (n % 5) * 3,
        temperature: 0.8,
        messages: [{ role: 'system', content: SYSTEM }, { role: 'user', content: `Client ${i}: what is ${n % 9} plus ${(n * 7) % 9}?` }],
      }),
    });
    const text = await r.text();
    if (!r.ok && !(r.status === 404 && model === adapter)) failures.push(`${r.status} ${text.slice(0, 200)}`);
    requests++;
  };
  const loops = Array.from({ length: clients }, async (_, i) => {
    for (let n = 0; !done; n++) {
      try {
        await chat(i, n);
      } catch (err) {
        if (!done) failures.push(String(err));
      }
    }
  });
  return {
    adapter,
    jobId: job.id,
    requests: () => requests,
    failures: () => failures,
    stop: async () => {
      done = true;
      await Promise.all(loops);
    },
  };
}
