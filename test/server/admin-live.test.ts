/**
 * Training through the admin API while the server serves: a small GRPO job on the tiny model
 * publishes a new adapter version every step while chat requests (for the adapter and for the
 * base model) keep going; pause / resume / stop; the one-job-at-a-time queue; and job records
 * that a restarted manager lists and resumes from their checkpoints.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type OpenAI from 'openai';
import { createApp } from '../../src/server/app.ts';
import { JobManager } from '../../src/train/job-manager.ts';
import { createRewardRegistry } from '../../src/train/reward-registry.ts';
import { eventually, MODEL_NAME, postJson, scrape, startServer, type TestServer } from './helpers.ts';

type Params = OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming;
const FINAL = ['completed', 'stopped', 'failed', 'interrupted'];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function getJob(base: string, id: string, query = ''): Promise<any> {
  const res = await fetch(`${base}/admin/jobs/${id}${query}`);
  assert.equal(res.status, 200);
  return res.json();
}

describe('admin API: live training', () => {
  let s: TestServer;
  let root: string;
  const rewards = createRewardRegistry();
  // Something a tiny random model can move: the completion's length in characters.
  rewards.register('completion_chars', ({ completion }) => completion.length, { description: 'length of the completion in characters' });

  const config = (name: string, extra: Record<string, unknown> = {}) => ({
    kind: 'grpo',
    name,
    data: { source: 'synthetic', limit: 64 },
    num_generations: 4,
    max_completion_length: 8,
    reward_funcs: ['completion_chars'],
    publish: { every_steps: 1 },
    logging_steps: 1,
    optimizer: { learning_rate: 1e-2 },
    output_dir: join(root, 'out', name),
    ...extra,
  });
  const create = async (body: unknown): Promise<any> => {
    const r = await postJson(s.base, '/admin/jobs', body);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body;
  };
  const finished = async (id: string, timeoutMs = 30_000): Promise<any> => {
    let job: any;
    await eventually(async () => FINAL.includes((job = await getJob(s.base, id)).status), timeoutMs);
    return job;
  };
  /** Waits until a paused job's in-flight step is over: long enough for three steps at its pace. */
  const settle = async (id: string): Promise<number> => {
    const job = await getJob(s.base, id, '?metrics=5');
    const per = Math.max(...job.metrics.map((m: any) => m.rollout_seconds + m.train_seconds), 0.1);
    await sleep(3000 * per + 200);
    return (await getJob(s.base, id)).step;
  };

  before(async () => {
    root = mkdtempSync(join(tmpdir(), 'tandem-admin-live-'));
    s = await startServer({ admin: { rewards, jobsDir: join(root, 'jobs') } });
  });
  after(async () => {
    await s.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('a GRPO job trains and publishes every step while chat requests for the adapter and the base model all succeed', async () => {
    const created = await create(config('live', { max_steps: 4, save_steps: 2 }));
    assert.equal(created.status, 'running');
    assert.deepEqual([created.adapter, created.max_steps, created.kind], ['live', 4, 'grpo']);
    // The job serves its starting weights before the first step; chat from then on.
    await eventually(async () => (await getJob(s.base, created.id)).published_version !== null);

    const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Ann has 3 apples. She gets 4 more.' }];
    const seen: Record<string, Set<string>> = { live: new Set(), [MODEL_NAME]: new Set() };
    const failures: unknown[] = [];
    let requests = 0;
    let done = false;
    const chatLoop = async (model: string): Promise<void> => {
      while (!done) {
        try {
          const r = await s.client.chat.completions.create({ model, messages, max_tokens: 4, temperature: 0.8 } as Params);
          seen[model].add(r.system_fingerprint!);
          requests++;
        } catch (err) {
          failures.push(err);
        }
      }
    };
    const loops = [chatLoop('live'), chatLoop('live'), chatLoop(MODEL_NAME)];
    const job = await finished(created.id);
    done = true;
    await Promise.all(loops);

    assert.deepEqual(failures, []);
    assert.equal(job.status, 'completed', job.error);
    assert.ok(requests >= 10, `only ${requests} chat requests ran during training`);
    assert.deepEqual([...seen[MODEL_NAME]], ['tandem-test']);
    const versions = [...seen.live].map((f) => Number(/^tandem-test\+live@v(\d+)$/.exec(f)?.[1]));
    // The starting weights are v1, then one version per step.
    assert.ok(versions.every((v) => v >= 1 && v <= 5), `fingerprints ${[...seen.live]}`);
    assert.ok(versions.length >= 3, `chat saw only ${[...seen.live]} while the adapter was republished 4 times`);

    assert.deepEqual([job.step, job.max_steps, job.published_version, job.error], [4, 4, 'live@v5', null]);
    assert.deepEqual(job.metrics.map((m: any) => [m.step, m.adapter_version]), [[1, 2], [2, 3], [3, 4], [4, 5]]);
    for (const m of job.metrics) {
      assert.ok(Number.isFinite(m.loss) && Number.isFinite(m.grad_norm) && m.grad_norm > 0, JSON.stringify(m));
      // One reward of weight 1: the total's mean is that reward's mean, in [0, characters of 8 tokens].
      assert.ok(Math.abs(m.reward - m['rewards/completion_chars/mean']) < 1e-9, JSON.stringify(m));
      assert.ok(m.reward >= 0);
    }
    assert.deepEqual(job.eta, null);

    // Checkpoints every 2 steps, the last one is the job's.
    const out = join(root, 'out', 'live');
    assert.equal(job.last_checkpoint, join(out, 'checkpoint-4'));
    for (const step of [2, 4]) assert.ok(existsSync(join(out, `checkpoint-${step}`, 'adapter_model.safetensors')), `checkpoint-${step}`);

    const text = await scrape(s.base);
    assert.match(text, /^tandem_train_step\{adapter="live"\} 4$/m);
    assert.match(text, /^tandem_train_adapter_version\{adapter="live"\} 5$/m);
    assert.match(text, /^tandem_train_steps_total\{adapter="live"\} 4$/m);

    // The record on disk says the same.
    const record = JSON.parse(readFileSync(join(root, 'jobs', `${created.id}.json`), 'utf8'));
    assert.deepEqual([record.status, record.step, record.last_checkpoint, record.metrics.length], ['completed', 4, job.last_checkpoint, 4]);
    // The adapter stays served after the job, and the admin listing shows where it came from.
    const adapters = (await (await fetch(`${s.base}/admin/adapters`)).json()).data;
    assert.deepEqual(adapters.filter((a: any) => a.name.startsWith('live')).map((a: any) => [a.id, a.source, a.training_job]), [['live@v5', null, null]]);
  });

  it('pause, resume and stop; one job trains at a time; one job per adapter', async () => {
    // save_steps beyond max_steps: the only checkpoints are the ones stopping writes.
    const a = await create(config('ctl', { max_steps: 500, save_steps: 1000 }));
    await eventually(async () => (await getJob(s.base, a.id)).step >= 1);

    const clash = await postJson(s.base, '/admin/jobs', config('ctl', { max_steps: 3, output_dir: join(root, 'out', 'ctl-2') }));
    assert.equal(clash.status, 409);
    assert.match(clash.body.error.message, new RegExp(`job ${a.id} \\(running\\) already trains adapter "ctl"`));
    const unload = await postJson(s.base, '/admin/adapters/ctl/unload', {});
    assert.equal(unload.status, 409, 'a job in training keeps its adapter');

    const b = await create(config('next', { max_steps: 1 }));
    assert.deepEqual([b.status, b.queue_position], ['queued', 1]);

    // Pause: no more steps until resumed.
    const paused = await postJson(s.base, `/admin/jobs/${a.id}/pause`, {});
    assert.equal(paused.status, 200);
    assert.equal(paused.body.status, 'paused');
    assert.equal((await postJson(s.base, `/admin/jobs/${a.id}/pause`, {})).status, 409);
    const still = await settle(a.id);
    await sleep(800);
    assert.equal((await getJob(s.base, a.id)).step, still, 'a paused job does not step');
    assert.equal((await getJob(s.base, b.id)).status, 'queued', 'a paused job keeps the device');

    const resumed = await postJson(s.base, `/admin/jobs/${a.id}/resume`, {});
    assert.equal(resumed.body.status, 'running');
    await eventually(async () => (await getJob(s.base, a.id)).step > still + 1);

    // Stop while running: ends after the step, with a checkpoint of that step.
    const stopping = await postJson(s.base, `/admin/jobs/${a.id}/stop`, {});
    assert.equal(stopping.status, 200);
    assert.ok(['stopping', 'stopped'].includes(stopping.body.status));
    const stopped = await finished(a.id);
    assert.equal(stopped.status, 'stopped');
    assert.ok(stopped.step < 500);
    assert.equal(stopped.last_checkpoint, join(root, 'out', 'ctl', `checkpoint-${stopped.step}`));
    assert.ok(existsSync(stopped.last_checkpoint));
    assert.equal((await postJson(s.base, `/admin/jobs/${a.id}/stop`, {})).status, 409);

    // The queued job starts once the device is free.
    const next = await finished(b.id);
    assert.deepEqual([next.status, next.step], ['completed', 1]);

    // Resume of a stopped job: a new run from its checkpoint.
    const again = await postJson(s.base, `/admin/jobs/${a.id}/resume`, {});
    assert.equal(again.status, 200);
    await eventually(async () => (await getJob(s.base, a.id)).step > stopped.step);
    const cont = await getJob(s.base, a.id, '?metrics=1000');
    assert.equal(cont.resumed_from, stopped.last_checkpoint);
    assert.deepEqual(cont.metrics.slice(0, stopped.step).map((m: any) => m.step), Array.from({ length: stopped.step }, (_, i) => i + 1));

    // Stop while paused: the steps since the last checkpoint are kept.
    assert.equal((await postJson(s.base, `/admin/jobs/${a.id}/pause`, {})).status, 200);
    const at = await settle(a.id);
    assert.equal((await postJson(s.base, `/admin/jobs/${a.id}/stop`, {})).status, 200);
    const end = await finished(a.id);
    assert.deepEqual([end.status, end.step], ['stopped', at]);
    assert.equal(end.last_checkpoint, join(root, 'out', 'ctl', `checkpoint-${at}`));
    assert.ok(existsSync(end.last_checkpoint));
  });

  it('records: a manager restarted on the same jobs dir lists the old jobs and resumes an interrupted one', async () => {
    const live = s.admin!.jobs;
    const deps = { loaded: s.engine.loaded, engine: s.engine, queue: s.engine.deviceQueue, rewards };

    const reread = new JobManager(deps, { dir: live.dir });
    const pick = (j: any) => [j.id, j.status, j.step, j.last_checkpoint, j.published_version, j.metrics.length];
    assert.deepEqual(reread.list().map(pick), live.list().map(pick));
    assert.ok(reread.list().length >= 3);
    await reread.shutdown();

    // A job still running when another manager reads the dir looks like one whose process died.
    const job = await create(config('rec', { max_steps: 6, save_steps: 2 }));
    await eventually(async () => (await getJob(s.base, job.id)).last_checkpoint !== null, 30_000);
    const restarted = new JobManager(deps, { dir: live.dir });
    assert.equal(restarted.get(job.id)!.status, 'interrupted');
    // (the "dead" process finishes stopping before the new one resumes: one device)
    live.stop(job.id);
    const before = await live.done(job.id);
    assert.equal(before.status, 'stopped');

    // Resume through the admin route of an app serving the restarted manager.
    const app = createApp(s.state, { admin: { token: null, services: { jobs: restarted, engine: s.engine, rewards } } });
    const res = await app.fetch(new Request(`http://server/admin/jobs/${job.id}/resume`, { method: 'POST' }), { incoming: { socket: { remoteAddress: '127.0.0.1' } } });
    assert.equal(res.status, 200, await res.clone().text());
    const end = await restarted.done(job.id);
    assert.equal(end.status, 'completed', end.error ?? '');
    assert.equal(end.step, 6);
    assert.ok(end.resumed_from !== null && end.resumed_from.startsWith(join(root, 'out', 'rec', 'checkpoint-')));
    assert.deepEqual(end.metrics.map((m) => m.step), [1, 2, 3, 4, 5, 6]);
    const record = JSON.parse(readFileSync(join(live.dir, `${job.id}.json`), 'utf8'));
    assert.deepEqual([record.status, record.step, record.resumed_from], ['completed', 6, end.resumed_from]);
    await restarted.shutdown();
  });
});
