import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OutputWatcher, tandem, tandemSpawn } from './helpers.ts';

/** Parse a little-endian f32 .npy written by `tandem logits`. */
function readNpy(path: string): { shape: number[]; data: Float32Array } {
  const buf = readFileSync(path);
  assert.equal(buf.subarray(0, 6).toString('latin1'), '\x93NUMPY');
  const headerLen = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLen).toString('latin1');
  assert.match(header, /'descr': '<f4'/);
  assert.equal((10 + headerLen) % 64, 0);
  const shape = header.match(/'shape': \(([^)]*)\)/)![1].split(',').filter((s) => s.trim()).map(Number);
  const body = buf.subarray(10 + headerLen);
  const data = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength));
  return { shape, data };
}

describe('tandem CLI', () => {
  let root: string;
  let model: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'tandem-cli-'));
    model = join(root, 'tiny');
    const r = tandem(['make-model', '--preset', 'tiny', '--seed', '5', '--out', model]);
    assert.equal(r.code, 0, r.stderr);
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) {
      assert.ok(existsSync(join(model, f)), `make-model wrote no ${f}`);
    }
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('generate: the same seed gives the same text, another seed other text', () => {
    const args = ['generate', '--model', model, '--prompt', 'Tom has 3 apples', '--max-tokens', '24', '--temperature', '1', '--ignore-eos'];
    const a = tandem([...args, '--seed', '1']);
    const b = tandem([...args, '--seed', '1']);
    const c = tandem([...args, '--seed', '2']);
    assert.equal(a.code, 0, a.stderr);
    assert.ok(a.stdout.trim().length > 0);
    assert.equal(a.stdout, b.stdout);
    assert.notEqual(a.stdout, c.stdout);
  });

  it('generate --chat renders the chat template and reports speed with --stats', () => {
    const r = tandem(['generate', '--model', model, '--chat', '--system', 'Be brief.', '--prompt', 'hi', '--max-tokens', '5', '--greedy', '--stats']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /prompt \d+ tokens, first token after [\d.]+ ms; \d+ tokens generated/);
  });

  it('logits writes [positions, vocab] fp32 logits as .npy', () => {
    const out = join(root, 'l.npy');
    const r = tandem(['logits', '--model', model, '--ids', '1,2,3,4,5', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const { shape, data } = readNpy(out);
    assert.deepEqual(shape, [5, 512]);
    assert.equal(data.length, 5 * 512);
    assert.ok(data.every(Number.isFinite));
    // Row 0 depends only on token 1: a shorter prompt with the same first token agrees there.
    const out1 = join(root, 'l1.npy');
    assert.equal(tandem(['logits', '--model', model, '--ids', '1', '--out', out1]).code, 0);
    const one = readNpy(out1).data;
    for (let i = 0; i < 512; i++) assert.ok(Math.abs(one[i] - data[i]) < 1e-4);
  });

  it('bad usage exits 2 with a message; a bad model dir exits 1 naming it', () => {
    const r1 = tandem(['logits', '--model', model, '--ids', '1,x', '--out', join(root, 'x.npy')]);
    assert.equal(r1.code, 2);
    assert.match(r1.stderr, /'x' is not a token id/);
    const r2 = tandem(['generate', '--model', model, '--prompt', 'a', '--top-p', '7']);
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /--top-p must be a number in \[0, 1\]/);
    const r3 = tandem(['frobnicate']);
    assert.equal(r3.code, 2);
    const r4 = tandem(['generate', '--model', join(root, 'nope'), '--prompt', 'a']);
    assert.equal(r4.code, 1);
    assert.match(r4.stderr, /nope/);
    const r5 = tandem(['logits', '--model', model, '--ids', '600', '--out', join(root, 'x.npy')]);
    assert.equal(r5.code, 2);
    assert.match(r5.stderr, /outside the vocabulary/);
  });

  it('serve: /health is 200 once loaded, unknown routes 404, SIGTERM exits 0', async () => {
    const child = tandemSpawn(['serve', '--model', model, '--port', '0']);
    const out = new OutputWatcher(child);
    try {
      const base = (await out.waitFor(/listening on (http:\/\/[\d.]+:\d+)/))[1];
      await out.waitFor(/model ready/);
      const health = await fetch(`${base}/health`);
      assert.equal(health.status, 200);
      assert.equal(((await health.json()) as { status: string }).status, 'ok');
      const version = (await (await fetch(`${base}/version`)).json()) as { version: string };
      assert.match(version.version, /^\d+\.\d+\.\d+/);
      const missing = await fetch(`${base}/nope`);
      assert.equal(missing.status, 404);
      assert.equal(((await missing.json()) as { error: { type: string } }).error.type, 'invalid_request_error');
    } finally {
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    }
  });

  it('serve --async-scheduling answers as --no-async-scheduling does; the cpu default is off', async () => {
    const complete = async (args: string[], mode: 'on' | 'off'): Promise<string> => {
      const child = tandemSpawn(['serve', '--model', model, '--port', '0', ...args]);
      const out = new OutputWatcher(child);
      try {
        const base = (await out.waitFor(/listening on (http:\/\/[\d.]+:\d+)/))[1];
        assert.equal((await out.waitFor(/model ready.*async scheduling (on|off)/))[1], mode, `serve ${args.join(' ')}`);
        const res = await fetch(`${base}/v1/completions`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ prompt: 'The quick brown fox', max_tokens: 12, temperature: 0 }),
        });
        assert.equal(res.status, 200);
        return ((await res.json()) as { choices: { text: string }[] }).choices[0].text;
      } finally {
        const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
        child.kill('SIGTERM');
        assert.equal(await exited, 0);
      }
    };
    const sync = await complete(['--no-async-scheduling'], 'off');
    assert.ok(sync.length > 0);
    assert.equal(await complete(['--async-scheduling'], 'on'), sync);
    assert.equal(await complete([], 'off'), sync);
  });

  it('serve: contradicting switches, a switch variable other than 0/1, and graphs on cpu exit with the reason', async () => {
    const cases: { args: string[]; env?: Record<string, string>; message: RegExp }[] = [
      { args: ['--async-scheduling', '--no-async-scheduling'], message: /--async-scheduling and --no-async-scheduling contradict/ },
      { args: ['--cuda-graphs', '--enforce-eager'], message: /--cuda-graphs and --enforce-eager contradict/ },
      { args: [], env: { TANDEM_CUDA_GRAPHS: 'yes' }, message: /TANDEM_CUDA_GRAPHS must be 0 or 1, got "yes"/ },
      { args: [], env: { TANDEM_ASYNC_SCHEDULING: 'on' }, message: /TANDEM_ASYNC_SCHEDULING must be 0 or 1/ },
      { args: ['--backend', 'cpu', '--cuda-graphs'], message: /no CUDA graphs \(use the cuda backend/ },
    ];
    for (const { args, env, message } of cases) {
      const child = tandemSpawn(['serve', '--model', model, '--port', '0', ...args], { ...process.env, ...env });
      const out = new OutputWatcher(child);
      const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      assert.notEqual(code, 0, `serve ${args.join(' ')} ${JSON.stringify(env ?? {})}`);
      assert.match(out.stderr + out.stdout, message);
    }
  });

  it('serve on cpu: graphs off by default; --enforce-eager is accepted', async () => {
    for (const args of [[], ['--enforce-eager']]) {
      const child = tandemSpawn(['serve', '--model', model, '--port', '0', ...args]);
      const out = new OutputWatcher(child);
      try {
        assert.equal((await out.waitFor(/model ready.*cuda graphs (on|off)/))[1], 'off', `serve ${args.join(' ')}`);
      } finally {
        const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
        child.kill('SIGTERM');
        assert.equal(await exited, 0);
      }
    }
  });

  it('serve: a broken model dir makes /health report failed and the process exit 1', async () => {
    const child = tandemSpawn(['serve', '--model', join(root, 'missing'), '--port', '0']);
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    assert.equal(code, 1);
  });
});
