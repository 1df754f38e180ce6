/**
 * Malformed requests: each gets its documented 4xx with OpenAI's error shape naming the right
 * field, and the server serves correctly afterwards (nothing leaked: no sequence, no block).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type OpenAI from 'openai';
import { MODEL_NAME, postJson, startServer, type TestServer } from './helpers.ts';

const chat = (extra: Record<string, unknown>) => ({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, ...extra });
const completion = (extra: Record<string, unknown>) => ({ prompt: 'hi', max_tokens: 4, ...extra });
const long = 'hello world '.repeat(2000); // well over the tiny model's 2,048-token context

interface Case {
  name: string;
  path: string;
  body: unknown;
  status: number;
  /** Expected error.param: a string, null, or a RegExp it must match. */
  param: string | null | RegExp;
  code?: string;
  /** The message must mention these (numbers the user can act on). */
  says?: RegExp;
}

const C = '/v1/chat/completions';
const P = '/v1/completions';

const CASES: Case[] = [
  { name: 'malformed JSON', path: C, body: '{"messages": [', status: 400, param: null, code: 'invalid_json' },
  { name: 'empty body', path: C, body: '', status: 400, param: null, code: 'invalid_json' },
  { name: 'JSON array body', path: C, body: '[1, 2]', status: 400, param: null },
  { name: 'JSON string body', path: C, body: '"hello"', status: 400, param: null },
  { name: 'missing messages', path: C, body: {}, status: 400, param: 'messages' },
  { name: 'messages is a string', path: C, body: { messages: 'hi' }, status: 400, param: 'messages' },
  { name: 'empty messages', path: C, body: { messages: [] }, status: 400, param: 'messages' },
  { name: 'unknown role', path: C, body: { messages: [{ role: 'robot', content: 'x' }] }, status: 400, param: 'messages[0].role' },
  { name: 'missing role', path: C, body: { messages: [{ content: 'x' }] }, status: 400, param: 'messages[0].role' },
  { name: 'user without content', path: C, body: { messages: [{ role: 'user', content: 'a' }, { role: 'user' }] }, status: 400, param: 'messages[1].content' },
  { name: 'content is a number', path: C, body: { messages: [{ role: 'user', content: 5 }] }, status: 400, param: 'messages[0].content' },
  {
    name: 'image content part',
    path: C,
    body: { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x' } }] }] },
    status: 400,
    param: 'messages[0].content[0].type',
  },
  { name: 'text part without text', path: C, body: { messages: [{ role: 'user', content: [{ type: 'text' }] }] }, status: 400, param: 'messages[0].content[0].text' },
  { name: 'unknown model', path: C, body: chat({ model: 'gpt-4' }), status: 404, param: 'model', code: 'model_not_found' },
  { name: 'model is a number', path: C, body: chat({ model: 5 }), status: 400, param: 'model' },
  { name: 'temperature 5', path: C, body: chat({ temperature: 5 }), status: 400, param: 'temperature' },
  { name: 'temperature -1', path: C, body: chat({ temperature: -1 }), status: 400, param: 'temperature' },
  { name: 'temperature a string', path: C, body: chat({ temperature: 'hot' }), status: 400, param: 'temperature' },
  { name: 'top_p 2', path: C, body: chat({ top_p: 2 }), status: 400, param: 'top_p' },
  { name: 'top_p 0', path: C, body: chat({ top_p: 0 }), status: 400, param: 'top_p' },
  { name: 'top_k -2', path: C, body: chat({ top_k: -2 }), status: 400, param: 'top_k' },
  { name: 'top_k 1.5', path: C, body: chat({ top_k: 1.5 }), status: 400, param: 'top_k' },
  { name: 'min_p 1.5', path: C, body: chat({ min_p: 1.5 }), status: 400, param: 'min_p' },
  { name: 'n 0', path: C, body: chat({ n: 0 }), status: 400, param: 'n' },
  { name: 'n 129', path: C, body: chat({ n: 129 }), status: 400, param: 'n' },
  { name: 'n 1.5', path: C, body: chat({ n: 1.5 }), status: 400, param: 'n' },
  { name: 'max_tokens 0', path: C, body: chat({ max_tokens: 0 }), status: 400, param: 'max_tokens' },
  { name: 'max_tokens -5', path: C, body: chat({ max_tokens: -5 }), status: 400, param: 'max_tokens' },
  { name: 'max_tokens 1e20', path: C, body: chat({ max_tokens: 1e20 }), status: 400, param: 'max_tokens' },
  {
    name: 'prompt + max_tokens over the context',
    path: C,
    body: chat({ max_tokens: 100_000 }),
    status: 400,
    param: 'max_tokens',
    code: 'context_length_exceeded',
    says: /100,000.*2,048/,
  },
  { name: 'max_completion_tokens 0', path: C, body: chat({ max_completion_tokens: 0 }), status: 400, param: 'max_completion_tokens' },
  { name: 'presence_penalty 3', path: C, body: chat({ presence_penalty: 3 }), status: 400, param: 'presence_penalty' },
  { name: 'frequency_penalty -3', path: C, body: chat({ frequency_penalty: -3 }), status: 400, param: 'frequency_penalty' },
  { name: 'repetition_penalty 0', path: C, body: chat({ repetition_penalty: 0 }), status: 400, param: 'repetition_penalty' },
  { name: 'seed 1.5', path: C, body: chat({ seed: 1.5 }), status: 400, param: 'seed' },
  { name: 'seed a string', path: C, body: chat({ seed: 'abc' }), status: 400, param: 'seed' },
  { name: 'stop of 100 strings', path: C, body: chat({ stop: Array.from({ length: 100 }, (_, i) => `s${i}`) }), status: 400, param: 'stop' },
  { name: 'stop a number', path: C, body: chat({ stop: 5 }), status: 400, param: 'stop' },
  { name: 'stop an empty string', path: C, body: chat({ stop: '' }), status: 400, param: 'stop' },
  { name: 'stop_token_ids negative', path: C, body: chat({ stop_token_ids: [-1] }), status: 400, param: 'stop_token_ids[0]' },
  { name: 'stop_token_ids out of vocabulary', path: C, body: chat({ stop_token_ids: [1, 99_999] }), status: 400, param: 'stop_token_ids[1]' },
  { name: 'logprobs a string', path: C, body: chat({ logprobs: 'yes' }), status: 400, param: 'logprobs' },
  { name: 'top_logprobs 50', path: C, body: chat({ logprobs: true, top_logprobs: 50 }), status: 400, param: 'top_logprobs' },
  { name: 'top_logprobs without logprobs', path: C, body: chat({ top_logprobs: 5 }), status: 400, param: 'top_logprobs' },
  { name: 'stream a string', path: C, body: chat({ stream: 'yes' }), status: 400, param: 'stream' },
  { name: 'stream_options without stream', path: C, body: chat({ stream_options: { include_usage: true } }), status: 400, param: 'stream_options' },
  { name: 'logit_bias', path: C, body: chat({ logit_bias: { '1': 5 } }), status: 400, param: 'logit_bias' },
  { name: 'ignore_eos a string', path: C, body: chat({ ignore_eos: 'no' }), status: 400, param: 'ignore_eos' },
  {
    name: 'continue_final_message with add_generation_prompt',
    path: C,
    body: chat({ continue_final_message: true, add_generation_prompt: true }),
    status: 400,
    param: 'continue_final_message',
  },
  { name: 'chat_template_kwargs a string', path: C, body: chat({ chat_template_kwargs: 'x' }), status: 400, param: 'chat_template_kwargs' },
  {
    name: 'messages over the context',
    path: C,
    body: { messages: [{ role: 'user', content: long }] },
    status: 400,
    param: 'messages',
    code: 'context_length_exceeded',
    says: /2,048/,
  },
  { name: 'missing prompt', path: P, body: { max_tokens: 4 }, status: 400, param: 'prompt' },
  { name: 'empty prompt', path: P, body: completion({ prompt: '' }), status: 400, param: 'prompt' },
  { name: 'empty prompt list', path: P, body: completion({ prompt: [] }), status: 400, param: 'prompt' },
  { name: 'prompt a number', path: P, body: completion({ prompt: 5 }), status: 400, param: 'prompt' },
  { name: 'negative token id', path: P, body: completion({ prompt: [1, -1] }), status: 400, param: 'prompt[1]' },
  { name: 'token-id list with a string', path: P, body: completion({ prompt: [[1, 2, 'x']] }), status: 400, param: 'prompt[0][2]' },
  { name: 'token id out of vocabulary', path: P, body: completion({ prompt: [5, 5000] }), status: 400, param: 'prompt[1]' },
  { name: 'second prompt empty', path: P, body: completion({ prompt: ['a', ''] }), status: 400, param: 'prompt[1]' },
  { name: 'logprobs 21', path: P, body: completion({ logprobs: 21 }), status: 400, param: 'logprobs' },
  { name: 'logprobs true on completions', path: P, body: completion({ logprobs: true }), status: 400, param: 'logprobs' },
  { name: 'echo with logprobs', path: P, body: completion({ echo: true, logprobs: 1 }), status: 400, param: 'echo' },
  { name: 'suffix', path: P, body: completion({ suffix: 'x' }), status: 400, param: 'suffix' },
  { name: 'best_of above n', path: P, body: completion({ best_of: 3 }), status: 400, param: 'best_of' },
  {
    name: 'token prompt over the context',
    path: P,
    body: completion({ prompt: Array.from({ length: 3000 }, (_, i) => i % 500) }),
    status: 400,
    param: 'prompt',
    code: 'context_length_exceeded',
    says: /3,000.*2,048/,
  },
  {
    name: 'second of two prompts over the context',
    path: P,
    body: completion({ prompt: ['short', long], max_tokens: null }),
    status: 400,
    param: 'prompt[1]',
    code: 'context_length_exceeded',
  },
  { name: 'tokenize without prompt or messages', path: '/tokenize', body: {}, status: 400, param: 'prompt' },
  { name: 'tokenize with both', path: '/tokenize', body: { prompt: 'a', messages: [{ role: 'user', content: 'b' }] }, status: 400, param: 'prompt' },
  { name: 'tokenize unknown model', path: '/tokenize', body: { model: 'nope', prompt: 'a' }, status: 404, param: 'model' },
  { name: 'detokenize negative id', path: '/detokenize', body: { tokens: [-1] }, status: 400, param: 'tokens[0]' },
  { name: 'detokenize id out of vocabulary', path: '/detokenize', body: { tokens: [3, 99_999] }, status: 400, param: 'tokens[1]' },
  { name: 'detokenize tokens a string', path: '/detokenize', body: { tokens: 'abc' }, status: 400, param: 'tokens' },
];

function assertErrorShape(body: unknown, what: string): { message: string; type: string; param: string | null; code: string | null } {
  assert.ok(body && typeof body === 'object' && 'error' in body, `${what}: no error object in ${JSON.stringify(body)}`);
  const error = (body as { error: Record<string, unknown> }).error;
  assert.deepEqual(Object.keys(error).sort(), ['code', 'message', 'param', 'type'], what);
  assert.equal(typeof error.message, 'string', what);
  assert.ok((error.message as string).length > 0, what);
  assert.equal(typeof error.type, 'string', what);
  assert.ok(error.param === null || typeof error.param === 'string', what);
  assert.ok(error.code === null || typeof error.code === 'string', what);
  return error as { message: string; type: string; param: string | null; code: string | null };
}

describe('bad input', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ app: { maxBodyBytes: 4 * 1024 * 1024 } });
  });
  after(() => s.close());

  it(`${CASES.length} malformed JSON requests get their 4xx, OpenAI's error shape and the right param`, async () => {
    assert.ok(CASES.length >= 40);
    for (const c of CASES) {
      const r = await postJson(s.base, c.path, c.body);
      assert.equal(r.status, c.status, `${c.name}: status ${r.status}, body ${JSON.stringify(r.body)}`);
      const error = assertErrorShape(r.body, c.name);
      if (c.param instanceof RegExp) assert.match(error.param ?? '', c.param, c.name);
      else assert.equal(error.param, c.param, `${c.name}: ${error.message}`);
      if (c.code) assert.equal(error.code, c.code, c.name);
      if (c.says) assert.match(error.message, c.says, c.name);
      assert.equal(error.type, c.status === 429 ? 'rate_limit_error' : 'invalid_request_error', c.name);
    }
  });

  it('a 10 MB body gets 413 (Content-Length checked first)', async () => {
    const body = JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(10 * 1024 * 1024) }] });
    const r = await postJson(s.base, C, body);
    assert.equal(r.status, 413);
    assert.equal(assertErrorShape(r.body, '413').code, 'request_too_large');
  });

  it('a streamed (chunked) body over the limit gets 413 too', async () => {
    const piece = new TextEncoder().encode('x'.repeat(1024 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 6) controller.enqueue(piece);
        else controller.close();
      },
    });
    const res = await fetch(s.base + C, { method: 'POST', headers: { 'content-type': 'application/json' }, body: stream, duplex: 'half' } as RequestInit);
    assert.equal(res.status, 413);
    assertErrorShape(await res.json(), 'chunked 413');
  });

  it('a body that is not JSON by Content-Type gets 415', async () => {
    const res = await fetch(s.base + C, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: JSON.stringify(chat({})) });
    assert.equal(res.status, 415);
    assertErrorShape(await res.json(), '415');
  });

  it('wrong method on a known route is 405 with Allow; unknown routes 404', async () => {
    const get = await fetch(s.base + C);
    assert.equal(get.status, 405);
    assert.equal(get.headers.get('allow'), 'POST');
    assertErrorShape(await get.json(), '405');
    const del = await fetch(s.base + '/v1/models', { method: 'DELETE' });
    assert.equal(del.status, 405);
    await del.arrayBuffer();
    const missing = await fetch(s.base + '/v1/nothing');
    assert.equal(missing.status, 404);
    assertErrorShape(await missing.json(), '404');
  });

  it('the server still serves correctly afterwards, with nothing left in the engine', async () => {
    const stats = s.engine.stats();
    assert.equal(stats.running, 0);
    assert.equal(stats.waiting, 0);
    assert.equal(stats.kvBlocksUsed, 0);
    const r = await s.client.chat.completions.create({
      model: MODEL_NAME,
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 5,
      temperature: 0,
      ignore_eos: true,
    } as OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming);
    assert.equal(r.choices[0].finish_reason, 'length');
    // Unknown fields are ignored, as OpenAI and vLLM do; null means "not given".
    const extra = await postJson(s.base, C, chat({ some_future_field: { a: 1 }, temperature: null, stop: null, n: null }));
    assert.equal(extra.status, 200, JSON.stringify(extra.body));
  });
});

describe('queue full and partial admission', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ engine: { maxWaiting: 2 } });
  });
  after(() => s.close());

  it('n beyond the waiting queue gets 429 queue_full and leaves nothing behind', async () => {
    const r = await postJson(s.base, C, chat({ n: 3 }));
    assert.equal(r.status, 429, JSON.stringify(r.body));
    const error = assertErrorShape(r.body, '429');
    assert.equal(error.code, 'queue_full');
    assert.equal(error.type, 'rate_limit_error');
    // The two choices admitted before the refusal were aborted.
    const stats = s.engine.stats();
    assert.equal(stats.waiting + stats.running, 0);
    assert.equal(stats.kvBlocksUsed, 0);
    const ok = await postJson(s.base, C, chat({ n: 2 }));
    assert.equal(ok.status, 200);
    assert.equal(ok.body.choices.length, 2);
  });
});

describe('while loading', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({ ready: false });
  });
  after(() => s.close());

  it('health and model routes answer 503; version and docs work', async () => {
    const health = await fetch(s.base + '/health');
    assert.equal(health.status, 503);
    assert.equal((await health.json()).status, 'loading');
    for (const [path, body] of [[C, chat({})], [P, completion({})], ['/tokenize', { prompt: 'a' }]] as const) {
      const r = await postJson(s.base, path, body);
      assert.equal(r.status, 503, path);
      assert.equal(assertErrorShape(r.body, path).code, 'model_loading');
    }
    const models = await fetch(s.base + '/v1/models');
    assert.equal(models.status, 503);
    await models.arrayBuffer();
    assert.equal((await fetch(s.base + '/version')).status, 200);
    assert.equal((await fetch(s.base + '/docs')).status, 200);
  });
});
