/**
 * bench/serve.ts (the load generator of the serving figures) against a live CPU server: every
 * request completes, the token counts come from the server's usage, the latency figures are
 * consistent with each other, and the server's engine steps during the run are read from its
 * /metrics by kind.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { metricSum } from '../metrics-text.ts';
import { scrape, startServer, type TestServer } from '../server/helpers.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('bench/serve.ts', () => {
  let server: TestServer;
  const dir = mkdtempSync(join(tmpdir(), 'tandem-serve-bench-'));
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('drives the server, reports vLLM-style figures and the engine steps by kind', async () => {
    const out = join(dir, 'serve.json');
    const stepsBefore = metricSum(await scrape(server.base), 'tandem_engine_step_seconds_count');
    // Asynchronous: the server runs in this process and must answer while the bench runs.
    const child = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, ['--import', 'tsx', 'bench/serve.ts', '--base-url', server.base, '--concurrency', '4', '--num-prompts', '12',
        '--input-len', '24', '--output-len', '6', '--out', out], { cwd: ROOT });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d));
      p.stderr.on('data', (d: Buffer) => (stderr += d));
      p.on('close', (status: number | null) => resolve({ status, stdout, stderr }));
    });
    assert.equal(child.status, 0, child.stderr);
    const doc = JSON.parse(readFileSync(out, 'utf8')) as { results: { name: string; value: number; unit: string }[]; config: Record<string, number> };
    const fig = (name: string): number => {
      const r = doc.results.find((x) => x.name === name);
      assert.ok(r, `no ${name} in ${JSON.stringify(doc.results.map((x) => x.name))}`);
      return r.value;
    };
    assert.equal(fig('completed'), 12);
    assert.equal(fig('failed'), 0);
    assert.equal(fig('total_input_tokens'), 12 * 24);
    assert.equal(fig('total_output_tokens'), 12 * 6);
    assert.ok(fig('median_ttft_ms') > 0 && fig('median_ttft_ms') <= fig('p99_ttft_ms'));
    assert.ok(fig('median_tpot_ms') > 0 && fig('mean_e2el_ms') >= fig('mean_ttft_ms'));
    // The engine's steps in the run window, by kind: prompts arrive while others decode.
    const kinds = ['graph', 'decode', 'mixed', 'prefill'].filter((k) => doc.results.some((x) => x.name === `engine_steps_${k}`));
    assert.ok(kinds.includes('decode') && (kinds.includes('prefill') || kinds.includes('mixed')), `step kinds ${kinds}`);
    assert.ok(!kinds.includes('graph'), 'no graphs on the cpu backend');
    for (const k of kinds) assert.ok(fig(`engine_step_mean_ms_${k}`) > 0, k);
    const reported = kinds.reduce((a, k) => a + fig(`engine_steps_${k}`), 0);
    const stepsAfter = metricSum(await scrape(server.base), 'tandem_engine_step_seconds_count');
    // The warm-up request's steps come before the window: the run's are at most the server's total.
    assert.ok(reported > 0 && reported <= stepsAfter - stepsBefore, `reported ${reported}, server ${stepsAfter - stepsBefore}`);
    assert.match(child.stdout, /engine_steps_decode|engine_steps_mixed/);
  });
});
