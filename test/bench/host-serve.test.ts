/**
 * bench/host-serve.ts (the host's serving ceiling: serve on a stand-in CUDA addon) runs end to end
 * on a small load: every request completes with its tokens, graph steps are taken (the stand-in
 * replays captured graphs), and the server's CPU time per output token is reported.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('bench/host-serve.ts', () => {
  it('serves a small load on the stand-in addon and reports the steps and the server CPU per token', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tandem-host-serve-test-'));
    try {
      const out = join(dir, 'out.json');
      const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/host-serve.ts', '--layers', '2', '--concurrency', '4', '--num-prompts', '12',
        '--input-len', '20', '--output-len', '10', '--out', out], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 0, r.stderr);
      const doc = JSON.parse(readFileSync(out, 'utf8')) as { command: string; results: { name: string; value: number }[] };
      const fig = (name: string): number | undefined => doc.results.find((x) => x.name === name)?.value;
      assert.match(doc.command, /bench\/host-serve\.ts/);
      assert.equal(fig('completed'), 12);
      assert.equal(fig('failed'), 0);
      assert.equal(fig('total_output_tokens'), 120);
      assert.ok((fig('engine_steps_graph') ?? 0) >= 9, `graph steps ${fig('engine_steps_graph')}`);
      const cpu = fig('server_cpu_us_per_output_token');
      assert.ok(cpu !== undefined && cpu > 0, `server CPU per token ${cpu}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
