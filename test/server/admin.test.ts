/**
 * The admin API without training: job config validation (400 naming the field), 404s, who may
 * call /admin (token, loopback, the user key), adapters (load, list, save as PEFT, unload) and
 * rewards, and that the OpenAPI document describes it all.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type OpenAI from 'openai';
import { loadPeftAdapter, savePeftAdapter } from '../../src/model/lora-peft.ts';
import { createApp } from '../../src/server/app.ts';
import { openApiText } from '../../src/server/openapi.ts';
import { createServerState } from '../../src/server/state.ts';
import { parseJobConfig } from '../../src/train/job-config.ts';
import { JobManager } from '../../src/train/job-manager.ts';
import { createRewardRegistry } from '../../src/train/reward-registry.ts';
import { trainedAdapter } from '../engine/helpers.ts';
import { MODEL_NAME, postJson, startServer, type TestServer } from './helpers.ts';

type Params = OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming;
const greedy = { messages: [{ role: 'user' as const, content: 'Ann has 3 apples.' }], max_tokens: 6, temperature: 0, ignore_eos: true };

async function getJson(base: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const res = await fetch(base + path, { headers });
  return { status: res.status, body: await res.json() };
}

const grpo = (extra: Record<string, unknown> = {}) => ({ kind: 'grpo', name: 'unit', data: { source: 'synthetic', limit: 8 }, max_steps: 2, ...extra });

describe('admin API', () => {
  let s: TestServer;
  let root: string;
  before(async () => {
    const rewards = createRewardRegistry();
    rewards.register('length_reward', ({ completion }) => completion.length, { description: 'characters in the completion' });
    s = await startServer({ admin: { rewards } });
    root = mkdtempSync(join(tmpdir(), 'tandem-admin-'));
  });
  after(async () => {
    await s.close();
    rmSync(root, { recursive: true, force: true });
  });

  describe('POST /admin/jobs: a bad config is a 400 whose param names the field', () => {
    const cases: [string, unknown, string, RegExp][] = [
      ['max_steps out of range', grpo({ max_steps: 0 }), 'max_steps', /integer from 1/],
      ['nested field', grpo({ optimizer: { learning_rate: -1 } }), 'optimizer.learning_rate', /number > 0/],
      ['unknown reward (checked against the server registry)', grpo({ reward_funcs: ['length_reward', 'lenght_reward'] }), 'reward_funcs[1]', /no reward named "lenght_reward" \(did you mean "length_reward"\?\)/],
      ['misplaced key', grpo({ learning_rate: 1e-5 }), 'learning_rate', /did you mean optimizer\.learning_rate/],
      ['wrong kind', { ...grpo(), kind: 'ppo' }, 'kind', /"grpo" or "sft"/],
      ['missing data file', grpo({ data: { source: 'gsm8k', path: '/nonexistent/gsm8k.jsonl' } }), 'data.path', /no such file/],
      ['the base model\'s name', grpo({ name: MODEL_NAME }), 'name', /base model/],
      ['batch not a multiple of G', grpo({ num_generations: 4, per_device_train_batch_size: 6 }), 'per_device_train_batch_size', /multiple of num_generations/],
    ];
    for (const [what, body, param, message] of cases) {
      it(what, async () => {
        const r = await postJson(s.base, '/admin/jobs', body);
        assert.equal(r.status, 400, JSON.stringify(r.body));
        assert.equal(r.body.error.param, param);
        assert.match(r.body.error.message, message);
        assert.equal(r.body.error.type, 'invalid_request_error');
      });
    }

    it('malformed JSON and a non-object body', async () => {
      const bad = await postJson(s.base, '/admin/jobs', '{"kind": "grpo",');
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.code, 'invalid_json');
      const arr = await postJson(s.base, '/admin/jobs', [1, 2]);
      assert.equal(arr.status, 400);
      assert.match(arr.body.error.message, /JSON object/);
    });

    it('a refused config leaves no job behind', async () => {
      assert.deepEqual((await getJson(s.base, '/admin/jobs')).body, { object: 'list', data: [] });
    });
  });

  it('unknown job ids are 404 on every job route', async () => {
    assert.equal((await getJson(s.base, '/admin/jobs/job-nope')).status, 404);
    for (const action of ['pause', 'resume', 'stop']) {
      const r = await postJson(s.base, `/admin/jobs/job-nope/${action}`, {});
      assert.equal(r.status, 404, action);
      assert.equal(r.body.error.code, 'job_not_found');
    }
  });

  it('job records: an unfinished one comes back interrupted (on disk too), unreadable ones are skipped with a warning', async () => {
    const dir = join(root, 'records');
    mkdirSync(dir);
    const config = parseJobConfig({ ...grpo({ name: 'old' }), output_dir: join(root, 'old-out') });
    const record = (id: string, status: string, created: string) => ({
      id, status, step: 1, created_at: created, started_at: created, finished_at: null, updated_at: created, error: null,
      last_checkpoint: null, published_version: 'old@v2', config, metrics: [{ step: 1, loss: null, skipped: true }],
    });
    writeFileSync(join(dir, 'job-b.json'), JSON.stringify(record('job-b', 'running', '2026-01-02T00:00:00.000Z')));
    writeFileSync(join(dir, 'job-a.json'), JSON.stringify(record('job-a', 'completed', '2026-01-01T00:00:00.000Z')));
    writeFileSync(join(dir, 'job-c.json'), '{"id": "job-c", "status": "runn');
    writeFileSync(join(dir, 'job-d.json'), JSON.stringify(record('job-x', 'completed', '2026-01-03T00:00:00.000Z')));
    writeFileSync(join(dir, 'job-e.json'), JSON.stringify({ ...record('job-e', 'stopped', '2026-01-04T00:00:00.000Z'), config: { ...config, max_steps: -1 } }));
    const warnings: string[] = [];
    const deps = { loaded: s.engine.loaded, engine: s.engine, queue: s.engine.deviceQueue, rewards: createRewardRegistry(), log: (m: string) => warnings.push(m) };
    const jobs = new JobManager(deps, { dir });
    assert.deepEqual(jobs.list().map((j) => [j.id, j.status, j.step, j.adapter, j.published_version]), [
      ['job-a', 'completed', 1, 'old', 'old@v2'],
      ['job-b', 'interrupted', 1, 'old', 'old@v2'],
    ]);
    assert.deepEqual(warnings.map((w) => /job record .*(job-\w)\.json skipped/.exec(w)?.[1]), ['job-c', 'job-d', 'job-e']);
    assert.match(warnings[1], /does not match the file name/);
    assert.match(warnings[2], /max_steps/);
    assert.equal(JSON.parse(readFileSync(join(dir, 'job-b.json'), 'utf8')).status, 'interrupted');
    assert.equal(JSON.parse(readFileSync(join(dir, 'job-a.json'), 'utf8')).updated_at, '2026-01-01T00:00:00.000Z', 'a final record is not rewritten');
    // Resume of a completed job is refused; pausing a record is refused.
    assert.throws(() => jobs.resume('job-a'), /has run all its max_steps/);
    assert.throws(() => jobs.pause('job-b'), /only a running job can be paused/);
    await jobs.shutdown();
  });

  it('GET /admin/rewards lists the built-in rewards and the registered one', async () => {
    const r = await getJson(s.base, '/admin/rewards');
    assert.equal(r.status, 200);
    const names = r.body.data.map((x: { name: string }) => x.name);
    for (const n of ['gsm8k_correctness', 'gsm8k_int', 'gsm8k_strict_format', 'gsm8k_soft_format', 'gsm8k_xmlcount', 'length_reward']) assert.ok(names.includes(n), n);
    assert.equal(r.body.data.find((x: { name: string }) => x.name === 'length_reward').description, 'characters in the completion');
  });

  describe('adapters', () => {
    const cfg = () => s.engine.loaded.config;
    it('load a PEFT folder, chat with it, list it, save it, load the copy, unload', async () => {
      const original = trainedAdapter(cfg(), 11, { targets: ['q_proj', 'v_proj', 'down_proj'] });
      const dir = join(root, 'peft-a');
      savePeftAdapter(dir, original, { baseModel: MODEL_NAME });

      const loaded = await postJson(s.base, '/admin/adapters/load', { name: 'style', path: dir });
      assert.equal(loaded.status, 200, JSON.stringify(loaded.body));
      assert.equal(loaded.body.id, 'style@v1');
      assert.equal(loaded.body.source, dir);
      const chat = await s.client.chat.completions.create({ ...greedy, model: 'style' } as Params);
      assert.equal(chat.system_fingerprint, 'tandem-test+style@v1');

      const list = (await getJson(s.base, '/admin/adapters')).body.data;
      const card = list.find((a: { name: string }) => a.name === 'style');
      // rank 4 x (in + out) per target per layer, f32.
      const c = cfg();
      const per = { q_proj: c.hiddenSize + c.numHeads * c.headDim, v_proj: c.hiddenSize + c.numKvHeads * c.headDim, down_proj: c.intermediateSize + c.hiddenSize };
      const params = 4 * c.numLayers * (per.q_proj + per.v_proj + per.down_proj);
      assert.deepEqual({ ...card, created: 0 }, { name: 'style', id: 'style@v1', version: 1, bytes: params * 4, source: dir, created: 0, refs: 0, hidden: false, training_job: null });

      // Save, then read the files back with the PEFT reader: the exact weights, all targets.
      const out = join(root, 'saved', 'style');
      const saved = await postJson(s.base, '/admin/adapters/style/save', { path: out });
      assert.equal(saved.status, 200, JSON.stringify(saved.body));
      assert.deepEqual([saved.body.path, saved.body.id], [out, 'style@v1']);
      const back = loadPeftAdapter(out, cfg());
      assert.deepEqual(back.spec.targets, original.spec.targets);
      for (let l = 0; l < original.layers.length; l++) {
        for (const [t, w] of original.layers[l]) {
          assert.deepEqual(back.layers[l].get(t)!.a, w.a, `layer ${l} ${t} A`);
          assert.deepEqual(back.layers[l].get(t)!.b, w.b, `layer ${l} ${t} B`);
        }
      }
      assert.equal(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')).r, 4);
      // Saving again over it needs overwrite; a non-adapter folder is never overwritten.
      assert.equal((await postJson(s.base, '/admin/adapters/style/save', { path: out })).status, 409);
      assert.equal((await postJson(s.base, '/admin/adapters/style/save', { path: out, overwrite: true })).status, 200);
      const junk = join(root, 'junk');
      mkdirSync(junk);
      writeFileSync(join(junk, 'notes.txt'), 'keep me');
      const refused = await postJson(s.base, '/admin/adapters/style/save', { path: junk, overwrite: true });
      assert.equal(refused.status, 409);
      assert.equal(refused.body.error.param, 'path');

      // The saved copy serves the same tokens as the original.
      assert.equal((await postJson(s.base, '/admin/adapters/load', { name: 'style-copy', path: out })).status, 200);
      const copy = await s.client.chat.completions.create({ ...greedy, model: 'style-copy' } as Params);
      assert.equal(copy.choices[0].message.content, chat.choices[0].message.content);

      const un = await postJson(s.base, '/admin/adapters/style/unload', {});
      assert.deepEqual(un.body, { name: 'style', id: 'style@v1', unloaded: true });
      await assert.rejects(s.client.chat.completions.create({ ...greedy, model: 'style' } as Params), (e: { status?: number }) => e.status === 404);
      assert.equal((await postJson(s.base, '/admin/adapters/style/unload', {})).status, 404);
      assert.equal((await postJson(s.base, '/admin/adapters/style/save', { path: join(root, 'x') })).status, 404);
      await postJson(s.base, '/admin/adapters/style-copy/unload', {});
    });

    it('load refuses a bad folder (400, param path), a bad name (400) and the base model\'s name (409)', async () => {
      const missing = await postJson(s.base, '/admin/adapters/load', { name: 'x', path: join(root, 'missing') });
      assert.equal(missing.status, 400);
      assert.equal(missing.body.error.param, 'path');
      assert.match(missing.body.error.message, /not a directory/);
      const empty = join(root, 'empty');
      mkdirSync(empty);
      const noConfig = await postJson(s.base, '/admin/adapters/load', { name: 'x', path: empty });
      assert.equal(noConfig.status, 400);
      assert.match(noConfig.body.error.message, /adapter_config\.json/);
      // An adapter for a model of another shape names the mismatch.
      const other = join(root, 'other');
      const wrong = trainedAdapter({ ...cfg(), hiddenSize: cfg().hiddenSize * 2 }, 3, { targets: ['q_proj'] });
      savePeftAdapter(other, wrong, { baseModel: 'other' });
      const mismatch = await postJson(s.base, '/admin/adapters/load', { name: 'x', path: other });
      assert.equal(mismatch.status, 400);
      assert.match(mismatch.body.error.message, /Cannot load .* as a LoRA adapter of this model/);
      const badName = await postJson(s.base, '/admin/adapters/load', { name: 'a@b', path: other });
      assert.deepEqual([badName.status, badName.body.error.param], [400, 'name']);
      const base = await postJson(s.base, '/admin/adapters/load', { name: MODEL_NAME, path: other });
      assert.equal(base.status, 409);
      assert.equal(base.body.error.param, 'name');
      const noBody = await postJson(s.base, '/admin/adapters/load', { name: 'x' });
      assert.deepEqual([noBody.status, noBody.body.error.param], [400, 'path']);
      assert.equal(s.engine.adapters.get('x'), undefined);
    });
  });

  describe('who may call /admin', () => {
    // app.fetch with the Node bindings @hono/node-server passes: the socket's remote address.
    const call = async (app: ReturnType<typeof createApp>, path: string, address: string, headers: Record<string, string> = {}) =>
      (await app.fetch(new Request(`http://server${path}`, { headers }), { incoming: { socket: { remoteAddress: address } } })).status;

    it('without an admin token: loopback clients only (403 for others)', async () => {
      const app = createApp(s.state, { admin: { token: null, services: s.admin } });
      for (const local of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) assert.equal(await call(app, '/admin/jobs', local), 200, local);
      for (const remote of ['10.0.0.5', '192.168.1.20', '::ffff:10.0.0.5', '2001:db8::1']) assert.equal(await call(app, '/admin/jobs', remote), 403, remote);
      // The rest of the API is not affected.
      assert.equal(await call(app, '/v1/models', '10.0.0.5'), 200);
      // And the live server (a real socket from 127.0.0.1) answers its local client.
      assert.equal((await getJson(s.base, '/admin/jobs')).status, 200);
    });

    it('with an admin token: the token is needed from anywhere (401 missing or wrong)', async () => {
      const app = createApp(s.state, { admin: { token: 'adm-secret', services: s.admin } });
      assert.equal(await call(app, '/admin/jobs', '127.0.0.1'), 401);
      assert.equal(await call(app, '/admin/jobs', '127.0.0.1', { authorization: 'Bearer wrong' }), 401);
      assert.equal(await call(app, '/admin/jobs', '10.0.0.5', { authorization: 'Bearer adm-secret' }), 200);
      assert.equal(await call(app, '/admin/rewards', '10.0.0.5', { authorization: 'bearer adm-secret' }), 200);
    });

    it('the user API key does not open /admin, and the admin token does not open the user API', async () => {
      const both = createApp(s.state, { apiKey: 'user-key', admin: { token: 'adm-secret', services: s.admin } });
      assert.equal(await call(both, '/admin/jobs', '127.0.0.1', { authorization: 'Bearer user-key' }), 401);
      assert.equal(await call(both, '/admin/jobs', '127.0.0.1', { authorization: 'Bearer adm-secret' }), 200);
      assert.equal(await call(both, '/v1/models', '127.0.0.1', { authorization: 'Bearer adm-secret' }), 401);
      assert.equal(await call(both, '/v1/models', '127.0.0.1', { authorization: 'Bearer user-key' }), 200);
      // A user key alone: /admin keeps its loopback rule; the key is neither needed nor enough.
      const userOnly = createApp(s.state, { apiKey: 'user-key', admin: { token: null, services: s.admin } });
      assert.equal(await call(userOnly, '/admin/jobs', '10.0.0.5', { authorization: 'Bearer user-key' }), 403);
      assert.equal(await call(userOnly, '/admin/jobs', '127.0.0.1'), 200);
    });

    it('an app without admin options serves no /admin routes, and still refuses remote clients', async () => {
      const plain = createApp(s.state);
      assert.equal(await call(plain, '/admin/jobs', '127.0.0.1'), 404);
      assert.equal(await call(plain, '/admin/jobs', '10.0.0.5'), 403);
    });
  });

  it('the OpenAPI document describes every admin route under the tag "admin", with or without admin options', () => {
    const state = createServerState({ modelName: 'model', backend: 'cpu', fingerprint: 'tandem' });
    const text = openApiText(createApp(state));
    assert.equal(openApiText(createApp(state, { admin: { token: 'x', services: null } })), text);
    const doc = JSON.parse(text);
    const routes: [string, string][] = [
      ['/admin/jobs', 'post'], ['/admin/jobs', 'get'], ['/admin/jobs/{id}', 'get'], ['/admin/jobs/{id}/pause', 'post'],
      ['/admin/jobs/{id}/resume', 'post'], ['/admin/jobs/{id}/stop', 'post'], ['/admin/adapters', 'get'], ['/admin/adapters/load', 'post'],
      ['/admin/adapters/{name}/unload', 'post'], ['/admin/adapters/{name}/save', 'post'], ['/admin/rewards', 'get'],
    ];
    for (const [path, method] of routes) {
      const op = doc.paths[path]?.[method];
      assert.ok(op, `${method} ${path}`);
      assert.deepEqual(op.tags, ['admin'], `${method} ${path}`);
      assert.ok(op.responses['401'] && op.responses['403'], `${method} ${path} documents the auth errors`);
    }
    assert.equal(doc.paths['/admin/jobs'].post.requestBody.content['application/json'].schema.$ref, '#/components/schemas/JobConfig');
    assert.ok(existsSync(join(process.cwd(), 'openapi', 'openapi.json')));
  });
});
