/**
 * `tandem serve` as a user runs it: health 503 then 200, and SIGTERM drains: new requests get
 * 503, requests in flight finish (or, past --shutdown-grace-seconds, end with "abort"), exit 0.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { makeModel } from '../../src/model/make-model.ts';
import { OutputWatcher, tandemSpawn } from '../cli/helpers.ts';

interface Started {
  child: ChildProcess;
  base: string;
  exited: Promise<number | null>;
}

async function startServe(model: string, extra: string[]): Promise<Started> {
  const child = tandemSpawn(['serve', '--model', model, '--port', '0', '--served-model-name', 'tiny', ...extra]);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const out = new OutputWatcher(child);
  const base = (await out.waitFor(/listening on (http:\/\/[\d.]+:\d+)/))[1];
  await out.waitFor(/model ready/);
  return { child, base, exited };
}

/** Opens a streamed completion and returns a reader of its SSE events, after the first one. */
async function openStream(base: string, maxTokens: number): Promise<{ rest: Promise<string[]> }> {
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: maxTokens, ignore_eos: true, stream: true }),
  });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  while (!buffer.includes('\n\n')) buffer += decoder.decode((await reader.read()).value, { stream: true });
  const rest = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
    }
    return buffer.split('\n\n').filter((e) => e !== '');
  })();
  return { rest };
}

function finishReasons(events: string[]): string[] {
  return events
    .filter((e) => e !== 'data: [DONE]')
    .flatMap((e) => (JSON.parse(e.slice(6)).choices as { finish_reason: string | null }[]).map((c) => c.finish_reason))
    .filter((r): r is string => r !== null);
}

describe('tandem serve: SIGTERM', () => {
  let root: string;
  let model: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'tandem-serve-'));
    model = join(root, 'tiny');
    makeModel({ preset: 'tiny', out: model, seed: 3 });
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('stops admitting, lets the request in flight finish, exits 0', async () => {
    const s = await startServe(model, ['--shutdown-grace-seconds', '60']);
    const { rest } = await openStream(s.base, 1500);
    s.child.kill('SIGTERM');
    // Still listening while the stream runs, but closed to new work.
    const health = await fetch(`${s.base}/health`);
    assert.equal(health.status, 503);
    assert.equal((await health.json()).status, 'stopping');
    const refused = await fetch(`${s.base}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'x', max_tokens: 2 }),
    });
    assert.equal(refused.status, 503);
    assert.equal((await refused.json()).error.code, 'shutting_down');
    const events = await rest;
    assert.equal(events[events.length - 1], 'data: [DONE]');
    assert.deepEqual(finishReasons(events), ['length']);
    assert.equal(await s.exited, 0);
  });

  it('past the grace period, requests in flight end with finish_reason "abort"; exit 0', async () => {
    const s = await startServe(model, ['--shutdown-grace-seconds', '0.2']);
    const { rest } = await openStream(s.base, 2000);
    s.child.kill('SIGTERM');
    const events = await rest;
    assert.equal(events[events.length - 1], 'data: [DONE]');
    assert.deepEqual(finishReasons(events), ['abort']);
    assert.equal(await s.exited, 0);
  });
});
