/**
 * Many clients at once, clients that leave, and the prefix cache, observed from outside:
 * outputs under load equal outputs alone, and /metrics shows blocks freed and prefixes reused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { eventually, metricValue, MODEL_NAME, scrape, startServer, type TestServer } from './helpers.ts';

const KV_USED = 'tandem_kv_cache_blocks_used';

/** Streams a completion with plain fetch and returns its text (the client is ours to cut off). */
async function streamCompletion(base: string, body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...body, stream: true }),
  });
  assert.equal(res.status, 200);
  let text = '';
  for (const event of (await res.text()).split('\n\n')) {
    if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
    const chunk = JSON.parse(event.slice(6));
    text += chunk.choices[0]?.text ?? '';
  }
  return text;
}

describe('under load', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.close());

  it('64 concurrent streaming clients each get what they get alone (greedy)', async () => {
    const bodies = Array.from({ length: 64 }, (_, i) => ({
      model: MODEL_NAME,
      prompt: `Request number ${i}: the ${['cat', 'dog', 'bird', 'fish'][i % 4]} sat`,
      max_tokens: 12 + (i % 5),
      temperature: 0,
      ignore_eos: true,
    }));
    const alone: string[] = [];
    for (const body of bodies) alone.push(await streamCompletion(s.base, body));
    const together = await Promise.all(bodies.map((body) => streamCompletion(s.base, body)));
    assert.deepEqual(together, alone);
    // Chat streams too, at temperature > 0 with seeds: batching changes nothing.
    const chat = (i: number) =>
      s.client.chat.completions
        .create({ model: MODEL_NAME, messages: [{ role: 'user', content: `hi ${i}` }], max_tokens: 8, temperature: 1, seed: i, stream: true })
        .then(async (stream) => {
          let text = '';
          for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
          return text;
        });
    const chatAlone: string[] = [];
    for (let i = 0; i < 16; i++) chatAlone.push(await chat(i));
    assert.deepEqual(await Promise.all(Array.from({ length: 16 }, (_, i) => chat(i))), chatAlone);
  });

  it('a client that disconnects mid-stream frees its KV blocks', async () => {
    await eventually(async () => metricValue(await scrape(s.base), KV_USED) === 0);
    const abortsBefore = await abortCount(s);
    const controller = new AbortController();
    const res = await fetch(`${s.base}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL_NAME, prompt: 'A long story begins', max_tokens: 1500, ignore_eos: true, stream: true }),
      signal: controller.signal,
    });
    const reader = res.body!.getReader();
    let received = 0;
    while (received < 5) {
      const { value } = await reader.read();
      received += new TextDecoder().decode(value).split('data: ').length - 1;
    }
    assert.ok(metricValue(await scrape(s.base), KV_USED) > 0, 'the request holds blocks while it streams');
    controller.abort();
    await eventually(async () => metricValue(await scrape(s.base), KV_USED) === 0);
    assert.equal(await abortCount(s), abortsBefore + 1);
    assert.equal(s.state.inFlight.count, 0);
  });

  it('a client that disconnects before a non-streamed response frees its blocks too', async () => {
    const abortsBefore = await abortCount(s);
    const controller = new AbortController();
    const pending = fetch(`${s.base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'go on' }], max_tokens: 1500, ignore_eos: true }),
      signal: controller.signal,
    });
    await eventually(async () => metricValue(await scrape(s.base), KV_USED) > 0);
    controller.abort();
    await assert.rejects(pending);
    await eventually(async () => metricValue(await scrape(s.base), KV_USED) === 0);
    assert.equal(await abortCount(s), abortsBefore + 1);
    await eventually(async () => s.state.inFlight.count === 0);
  });

  it('n > 1 and shared prefixes hit the prefix cache', async () => {
    const hits = async () => metricValue(await scrape(s.base), 'tandem_prefix_cache_hits_tokens_total');
    const prefix = 'You are a careful assistant. Answer in one short sentence. '.repeat(4);
    const h0 = await hits();
    const first = await s.client.chat.completions.create({
      model: MODEL_NAME,
      messages: [{ role: 'system', content: prefix }, { role: 'user', content: 'What is 1 + 1?' }],
      max_tokens: 4,
      n: 4,
    });
    const h1 = await hits();
    assert.ok(h1 > h0, `n=4 shares the prompt's blocks (hits ${h0} -> ${h1})`);
    const second = await s.client.chat.completions.create({
      model: MODEL_NAME,
      messages: [{ role: 'system', content: prefix }, { role: 'user', content: 'What is 2 + 2?' }],
      max_tokens: 4,
    });
    const h2 = await hits();
    assert.ok(h2 - h1 >= 16, `a shared system prompt is reused (hits ${h1} -> ${h2})`);
    assert.ok(second.usage!.prompt_tokens_details!.cached_tokens! >= 16, 'usage reports the cached tokens');
    assert.ok(first.usage!.prompt_tokens > 32);
  });
});

async function abortCount(s: TestServer): Promise<number> {
  const text = await scrape(s.base);
  const line = text.split('\n').find((l) => l.startsWith('tandem_requests_finished_total{finish_reason="abort"}'));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}
