/** /v1/chat/completions end to end through the official OpenAI client. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type OpenAI from 'openai';
import { countTokens, MODEL_NAME, startServer, type TestServer } from './helpers.ts';

type Params = OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming;
const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Tom has 3 apples and buys 5 more. How many?' },
];

async function streamText(s: TestServer, params: Omit<Params, 'stream'>): Promise<{ chunks: OpenAI.Chat.Completions.ChatCompletionChunk[]; texts: string[] }> {
  const stream = await s.client.chat.completions.create({ ...params, stream: true });
  const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
  const texts: string[] = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    for (const ch of chunk.choices) texts[ch.index] = (texts[ch.index] ?? '') + (ch.delta.content ?? '');
  }
  return { chunks, texts };
}

describe('chat completions', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.close());

  it('answers in OpenAI\'s shape; usage counts match /tokenize and max_tokens', async () => {
    const r = await s.client.chat.completions.create({ model: MODEL_NAME, messages, max_tokens: 12, temperature: 0, ignore_eos: true } as Params);
    assert.match(r.id, /^chatcmpl-[0-9a-f]{32}$/);
    assert.equal(r.object, 'chat.completion');
    assert.ok(Number.isInteger(r.created) && Math.abs(r.created - Date.now() / 1000) < 60);
    assert.equal(r.model, MODEL_NAME);
    assert.equal(r.system_fingerprint, 'tandem-test');
    assert.equal(r.choices.length, 1);
    const [choice] = r.choices;
    assert.equal(choice.index, 0);
    assert.equal(choice.message.role, 'assistant');
    assert.equal(typeof choice.message.content, 'string');
    assert.equal(choice.finish_reason, 'length');
    assert.equal((choice as unknown as { stop_reason: unknown }).stop_reason, null);
    assert.equal(choice.logprobs, null);
    const promptTokens = await countTokens(s.base, { messages });
    assert.deepEqual(r.usage, {
      prompt_tokens: promptTokens,
      completion_tokens: 12,
      total_tokens: promptTokens + 12,
      prompt_tokens_details: { cached_tokens: r.usage!.prompt_tokens_details!.cached_tokens },
    });
  });

  it('streams like OpenAI: role chunk, content deltas, finish chunk, usage chunk, [DONE]', async () => {
    const params = { model: MODEL_NAME, messages, max_tokens: 10, temperature: 0, ignore_eos: true } as Params;
    const whole = await s.client.chat.completions.create(params);
    const { chunks, texts } = await streamText(s, { ...params, stream_options: { include_usage: true } });
    assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
    assert.equal(texts[0], whole.choices[0].message.content);
    const ids = new Set(chunks.map((c) => c.id));
    assert.equal(ids.size, 1);
    assert.match([...ids][0], /^chatcmpl-/);
    for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
    const last = chunks[chunks.length - 1];
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage?.completion_tokens, 10);
    assert.equal(last.usage?.prompt_tokens, whole.usage?.prompt_tokens);
    for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
    const finish = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(finish.length, 1);
    assert.equal(finish[0].choices[0].finish_reason, 'length');
    assert.deepEqual(finish[0].choices[0].delta, {});

    // The raw wire format: data lines, and [DONE] at the end; no usage key without include_usage.
    const res = await fetch(`${s.base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...params, stream: true }),
    });
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const raw = await res.text();
    const events = raw.split('\n\n').filter((e) => e !== '');
    assert.ok(events.every((e) => e.startsWith('data: ')));
    assert.equal(events[events.length - 1], 'data: [DONE]');
    assert.ok(events.slice(0, -1).every((e) => !('usage' in JSON.parse(e.slice(6)))));
  });

  it('n=3 gives three choices, streamed interleaved by index', async () => {
    const params = { model: MODEL_NAME, messages, max_tokens: 8, n: 3, temperature: 1, seed: 7, ignore_eos: true } as Params;
    const whole = await s.client.chat.completions.create(params);
    assert.deepEqual(whole.choices.map((c) => c.index), [0, 1, 2]);
    assert.equal(whole.usage?.completion_tokens, 24);
    assert.ok(new Set(whole.choices.map((c) => c.message.content)).size > 1, 'seed + i gives the choices different samples');
    const { chunks, texts } = await streamText(s, params);
    assert.deepEqual(texts, whole.choices.map((c) => c.message.content));
    for (let i = 0; i < 3; i++) {
      const mine = chunks.filter((c) => c.choices[0]?.index === i);
      assert.deepEqual(mine[0].choices[0].delta, { role: 'assistant', content: '' });
      assert.equal(mine[mine.length - 1].choices[0].finish_reason, 'length');
    }
  });

  it('the same seed repeats the same text at temperature > 0; another seed differs', async () => {
    const params = { model: MODEL_NAME, messages, max_tokens: 24, temperature: 1, ignore_eos: true } as Params;
    const a = await s.client.chat.completions.create({ ...params, seed: 1234 });
    const b = await s.client.chat.completions.create({ ...params, seed: 1234 });
    const c = await s.client.chat.completions.create({ ...params, seed: 4321 });
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    assert.notEqual(a.choices[0].message.content, c.choices[0].message.content);
    const streamed = await streamText(s, { ...params, seed: 1234 });
    assert.equal(streamed.texts[0], a.choices[0].message.content);
  });

  it('stop strings end generation and never leak, streamed or not', async () => {
    const base = { model: MODEL_NAME, messages, max_tokens: 40, temperature: 0, ignore_eos: true } as Params;
    const full = (await s.client.chat.completions.create(base)).choices[0].message.content!;
    assert.ok(full.length > 12, `greedy output too short to cut: ${JSON.stringify(full)}`);
    // A stop string from the middle of the text; the answer must end right before its first occurrence.
    const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3);
    const expected = full.slice(0, full.indexOf(stop));
    const r = await s.client.chat.completions.create({ ...base, stop: ['@@never@@', stop] });
    assert.equal(r.choices[0].message.content, expected);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal((r.choices[0] as unknown as { stop_reason: unknown }).stop_reason, stop);
    const { chunks, texts } = await streamText(s, { ...base, stop });
    assert.equal(texts[0], expected);
    for (const c of chunks) assert.ok(!(c.choices[0]?.delta.content ?? '').includes(stop));
  });

  it('a stop string that spans two tokens is cut cleanly, streamed or not', async () => {
    const base = { model: MODEL_NAME, messages, max_tokens: 40, temperature: 0, ignore_eos: true } as Params;
    const r = await s.client.chat.completions.create({ ...base, logprobs: true });
    const full = r.choices[0].message.content!;
    const tokens = r.choices[0].logprobs!.content!.map((e) => e.token);
    // Find a boundary between two tokens whose last and first characters make a string that
    // first occurs right there; ending generation on it needs text from both tokens.
    let offset = 0;
    let stop: string | null = null;
    for (let k = 0; k + 1 < tokens.length && stop === null; k++) {
      offset += tokens[k].length;
      const [a, b] = [tokens[k], tokens[k + 1]];
      if (a.length === 0 || b.length === 0 || (a + b).includes('\ufffd')) continue;
      const candidate = a.slice(-1) + b[0];
      if (full.indexOf(candidate) === offset - 1) stop = candidate;
    }
    assert.ok(stop !== null, `no usable token boundary in ${JSON.stringify(tokens)}`);
    const expected = full.slice(0, full.indexOf(stop));
    const cut = await s.client.chat.completions.create({ ...base, stop });
    assert.equal(cut.choices[0].message.content, expected);
    const { texts } = await streamText(s, { ...base, stop });
    assert.equal(texts[0], expected);
  });

  it('stop_token_ids end generation at that token (ids via return_tokens_as_token_ids)', async () => {
    const base = { model: MODEL_NAME, messages, max_tokens: 12, temperature: 0, ignore_eos: true, logprobs: true } as Params;
    const r = await s.client.chat.completions.create({ ...base, return_tokens_as_token_ids: true } as Params);
    const ids = r.choices[0].logprobs!.content!.map((e) => Number(e.token.replace('token_id:', '')));
    assert.equal(ids.length, 12);
    const stopId = ids[4];
    const cut = await s.client.chat.completions.create({ ...base, stop_token_ids: [stopId] } as Params);
    assert.equal(cut.choices[0].finish_reason, 'stop');
    assert.equal((cut.choices[0] as unknown as { stop_reason: unknown }).stop_reason, stopId);
    assert.equal(cut.usage?.completion_tokens, ids.indexOf(stopId) + 1);
  });

  it('logprobs: top_logprobs sorted, probabilities sum to at most 1, the chosen token matches its top entry', async () => {
    const r = await s.client.chat.completions.create({
      model: MODEL_NAME,
      messages,
      max_tokens: 10,
      temperature: 0,
      // generation_config's repetition_penalty (1.05) reshapes the sampled distribution, not the
      // reported logprobs (raw, as vLLM's); without it greedy picks the top logprob.
      repetition_penalty: 1,
      ignore_eos: true,
      logprobs: true,
      top_logprobs: 5,
    } as Params);
    const content = r.choices[0].logprobs!.content!;
    assert.equal(content.length, r.usage!.completion_tokens);
    for (const e of content) {
      assert.equal(typeof e.token, 'string');
      assert.ok(e.logprob <= 0);
      assert.ok(Array.isArray(e.bytes));
      assert.equal(e.top_logprobs.length, 5);
      const probs = e.top_logprobs.map((t) => Math.exp(t.logprob));
      assert.ok(probs.reduce((a, b) => a + b, 0) <= 1 + 1e-6);
      for (let i = 1; i < probs.length; i++) assert.ok(probs[i] <= probs[i - 1] + 1e-9, 'sorted most likely first');
      // Greedy: the chosen token is the most likely one.
      assert.deepEqual(e.top_logprobs[0].bytes, e.bytes);
      assert.ok(Math.abs(e.top_logprobs[0].logprob - e.logprob) < 1e-5);
    }
    // At temperature 1 the chosen token may be any; when it is among the top 5 its logprob matches.
    const sampled = await s.client.chat.completions.create({
      model: MODEL_NAME,
      messages,
      max_tokens: 16,
      temperature: 1,
      seed: 5,
      ignore_eos: true,
      logprobs: true,
      top_logprobs: 5,
    } as Params);
    for (const e of sampled.choices[0].logprobs!.content!) {
      const match = e.top_logprobs.find((t) => JSON.stringify(t.bytes) === JSON.stringify(e.bytes));
      if (match) assert.ok(Math.abs(match.logprob - e.logprob) < 1e-5);
    }
    const plain = await s.client.chat.completions.create({ model: MODEL_NAME, messages, max_tokens: 3, logprobs: true } as Params);
    assert.ok(plain.choices[0].logprobs!.content!.every((e) => e.top_logprobs.length === 0));
  });

  it('content as text parts equals the same content as a string; an unknown model is 404', async () => {
    const params = { model: MODEL_NAME, max_tokens: 6, temperature: 0 } as const;
    const a = await s.client.chat.completions.create({ ...params, messages: [{ role: 'user', content: 'ab\ncd' }] });
    const b = await s.client.chat.completions.create({
      ...params,
      messages: [{ role: 'user', content: [{ type: 'text', text: 'ab' }, { type: 'text', text: 'cd' }] }],
    });
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    assert.equal(a.usage?.prompt_tokens, b.usage?.prompt_tokens);
    await assert.rejects(s.client.chat.completions.create({ ...params, model: 'gpt-4o', messages }), (err: unknown) => {
      const e = err as { status?: number; code?: string; param?: string };
      return e.status === 404 && e.code === 'model_not_found' && e.param === 'model';
    });
  });
});
