/** /v1/models, /tokenize, /detokenize, /health, /version, /metrics, /docs, and --api-key. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { MODEL_NAME, postJson, startServer, type TestServer } from './helpers.ts';

describe('models, tokenizer and operational routes', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.close());

  it('GET /v1/models lists the served model as vLLM does; retrieve by id', async () => {
    const list = await s.client.models.list();
    assert.equal(list.data.length, 1);
    const m = list.data[0] as OpenAI.Models.Model & { root: string; max_model_len: number; parent: null };
    assert.equal(m.id, MODEL_NAME);
    assert.equal(m.object, 'model');
    assert.equal(m.owned_by, 'tandem');
    assert.equal(m.root, s.engine.loaded.dir);
    assert.equal(m.max_model_len, 2048);
    assert.equal(m.parent, null);
    assert.equal((await s.client.models.retrieve(MODEL_NAME)).id, MODEL_NAME);
    await assert.rejects(s.client.models.retrieve('other'), (e: { status?: number }) => e.status === 404);
  });

  it('tokenize / detokenize round trip; chat tokenization counts what a chat request sends', async () => {
    const text = 'Hello, world! 12 + 30 = 42';
    const t = await postJson(s.base, '/tokenize', { prompt: text, return_token_strs: true });
    assert.equal(t.status, 200);
    assert.equal(t.body.count, t.body.tokens.length);
    assert.equal(t.body.max_model_len, 2048);
    assert.equal(t.body.token_strs.join(''), text);
    const d = await postJson(s.base, '/detokenize', { tokens: t.body.tokens });
    assert.deepEqual(d.body, { prompt: text });

    const messages = [{ role: 'user', content: 'What is 2 + 2?' }];
    const chat = await postJson(s.base, '/tokenize', { messages, model: MODEL_NAME });
    const r = await s.client.chat.completions.create({ model: MODEL_NAME, messages: messages as OpenAI.Chat.ChatCompletionMessageParam[], max_tokens: 1 });
    assert.equal(chat.body.count, r.usage?.prompt_tokens);
    const noPrompt = await postJson(s.base, '/tokenize', { messages, add_generation_prompt: false });
    assert.ok(noPrompt.body.count < chat.body.count);

    // continue_final_message leaves the assistant's turn open, ending with its content.
    const open = await postJson(s.base, '/tokenize', {
      messages: [...messages, { role: 'assistant', content: 'The answer is' }],
      continue_final_message: true,
    });
    assert.equal(open.status, 200, JSON.stringify(open.body));
    const rendered = (await postJson(s.base, '/detokenize', { tokens: open.body.tokens })).body.prompt as string;
    assert.ok(rendered.endsWith('The answer is'), JSON.stringify(rendered));
  });

  it('health 200, version, metrics, openapi.json and the /docs page', async () => {
    const health = await fetch(`${s.base}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok', model: MODEL_NAME, backend: 'cpu' });
    assert.match((await (await fetch(`${s.base}/version`)).json()).version, /^\d+\.\d+\.\d+/);
    const metrics = await fetch(`${s.base}/metrics`);
    assert.match(metrics.headers.get('content-type') ?? '', /text\/plain/);
    assert.match(await metrics.text(), /tandem_kv_cache_blocks_total 512/);
    const doc = await (await fetch(`${s.base}/openapi.json`)).json();
    assert.equal(doc.openapi, '3.1.0');
    const html = await (await fetch(`${s.base}/docs`)).text();
    assert.match(html, /^<!doctype html>/);
    assert.doesNotMatch(html, /<script|https?:\/\/(?!127)/, 'self-contained: no scripts, no remote assets');
    for (const path of Object.keys(doc.paths)) assert.ok(html.includes(`<code>${path}</code>`), `/docs lists ${path}`);
    assert.match(html, /id="schema-ChatCompletionRequest"/);
  });
});

describe('--api-key', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ apiKey: 'sk-test-123' });
  });
  after(() => s.close());

  it('the API needs the bearer token; health, metrics, version and docs stay open', async () => {
    const ok = await s.client.chat.completions.create({ model: MODEL_NAME, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
    assert.equal(ok.choices.length, 1);
    const wrong = new OpenAI({ baseURL: `${s.base}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e: { status?: number; code?: string }) => e.status === 401 && e.code === 'invalid_api_key');
    const none = await fetch(`${s.base}/v1/models`);
    assert.equal(none.status, 401);
    assert.equal((await none.json()).error.type, 'invalid_request_error');
    assert.equal((await postJson(s.base, '/tokenize', { prompt: 'a' })).status, 401);
    assert.equal((await postJson(s.base, '/tokenize', { prompt: 'a' }, { authorization: 'Bearer sk-test-123' })).status, 200);
    for (const path of ['/health', '/metrics', '/version', '/docs', '/openapi.json']) {
      const r = await fetch(s.base + path);
      assert.equal(r.status, 200, path);
      await r.arrayBuffer();
    }
  });
});
