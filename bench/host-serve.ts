/**
 * The host's ceiling for serving: `tandem serve`'s HTTP app and engine, on the CUDA backend driving
 * a stand-in addon (bench/stand-in-addon.ts: every GPU op returns at once), under bench/serve.ts in
 * a child process, as on the GPU machine. Every step then costs only its host work (scheduling,
 * step inputs, launches, sampling's bookkeeping, detokenizing, SSE chunks), so the output
 * tokens/s here is what this host allows whatever the GPU: where a GPU run's serving figure is
 * near it, serving is host-bound there. The server's CPU time per output token (the client runs
 * in its own process) is the steadier figure to compare changes by. The model is `make-model
 * --preset small` with 36 layers and head_dim 128 (Qwen2.5-3B's launch pattern; host work scales
 * with launches, not tensor sizes).
 *
 *   node --import tsx bench/host-serve.ts [--concurrency 64] [--num-prompts 256] [--input-len 128]
 *     [--output-len 128] [--request-rate inf] [--layers 36] [--no-graphs] [--no-async] [--out FILE.json]
 * (--request-rate N: Poisson arrivals, so prompts join running decodes: mixed steps.)
 */
import { serve } from '@hono/node-server';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import { Engine } from '../src/engine/engine.ts';
import { Metrics } from '../src/metrics.ts';
import { loadModel } from '../src/model/load.ts';
import { makeModel } from '../src/model/make-model.ts';
import { createApp } from '../src/server/app.ts';
import { createServerState } from '../src/server/state.ts';
import { standInAddon } from './stand-in-addon.ts';

const { values: v } = parseArgs({
  options: {
    concurrency: { type: 'string', default: '64' },
    'num-prompts': { type: 'string', default: '256' },
    'input-len': { type: 'string', default: '128' },
    'output-len': { type: 'string', default: '128' },
    'request-rate': { type: 'string', default: 'inf' },
    layers: { type: 'string', default: '36' },
    'no-graphs': { type: 'boolean', default: false },
    'no-async': { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const layers = Number(v.layers);
if (!Number.isInteger(layers) || layers < 1) throw new Error(`--layers must be an integer >= 1, got '${v.layers}'`);

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tandem-host-serve-'));
try {
  makeModel({ preset: 'small', out: dir, seed: 1, numLayers: layers, headDim: 128 });
  const loaded = loadModel(dir, new CudaBackend({ native: standInAddon() }));
  const metrics = new Metrics({ processMetrics: false });
  const engine = new Engine(loaded, {
    blockSize: 16,
    numBlocks: 8192,
    maxNumSeqs: 256,
    maxNumBatchedTokens: 2048,
    maxWaiting: 1024,
    maxModelLen: 4096,
    metrics,
    cudaGraphs: !v['no-graphs'],
    asyncScheduling: !v['no-async'],
  });
  await engine.captureGraphs();
  const state = createServerState({ modelName: 'host-serve', backend: 'cuda (stand-in)', fingerprint: 'host-serve' });
  state.engine = engine;
  state.status = 'ready';
  const app = createApp(state, { metrics });
  const server = await new Promise<Server>((resolve) => {
    const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s as Server)) as Server;
  });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const out = join(dir, 'serve.json');
  const cpu = `${cpus()[0]?.model ?? '?'} (${cpus().length} cores)`;
  const args = ['--import', 'tsx', 'bench/serve.ts', '--base-url', base, '--concurrency', v.concurrency!, '--num-prompts', v['num-prompts']!,
    '--input-len', v['input-len']!, '--output-len', v['output-len']!, '--request-rate', v['request-rate']!, '--card', `none (host only: ${cpu}; stand-in addon)`, '--out', out];
  const cpu0 = process.cpuUsage();
  const status = await new Promise<number | null>((resolve) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('close', resolve);
  });
  const cpuUsed = process.cpuUsage(cpu0);
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
  await engine.close();
  if (status !== 0) throw new Error(`bench/serve.ts exited with ${status}`);
  const doc = JSON.parse(readFileSync(out, 'utf8')) as { command: string; results: { name: string; value: number; unit: string }[] };
  doc.command = `node --import tsx bench/host-serve.ts ${process.argv.slice(2).join(' ')}`.trim();
  // The server's own CPU time (this process: HTTP, engine, backend host side; the client is the
  // child's) per output token: steadier than throughput on a host the client shares.
  const outputTokens = doc.results.find((r) => r.name === 'total_output_tokens')?.value ?? 0;
  const serverCpuUs = (cpuUsed.user + cpuUsed.system) / Math.max(1, outputTokens);
  doc.results.push({ name: 'server_cpu_us_per_output_token', value: Number(serverCpuUs.toFixed(2)), unit: 'us' });
  console.log(`  server CPU per output token: ${serverCpuUs.toFixed(2)} us (${((cpuUsed.user + cpuUsed.system) / 1000).toFixed(0)} ms in all)`);
  if (v.out) writeFileSync(v.out, JSON.stringify(doc, null, 2) + '\n');
} finally {
  rmSync(dir, { recursive: true, force: true });
}
