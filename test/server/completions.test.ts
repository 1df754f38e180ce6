/** /v1/completions end to end through the official OpenAI client. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type OpenAI from 'openai';
import { countTokens, MODEL_NAME, postJson, startServer, type TestServer } from './helpers.ts';

type Params = OpenAI.Completions.CompletionCreateParamsNonStreaming;
const greedy = { model: MODEL_NAME, temperature: 0, ignore_eos: true } as const;

describe('completions', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer();
  });
  after(() => s.close());

  it('answers in OpenAI\'s shape with usage from the prompt\'s token count', async () => {
    const prompt = 'Natalia sold clips to 48 of her friends';
    const r = await s.client.completions.create({ ...greedy, prompt, max_tokens: 9 } as Params);
    assert.match(r.id, /^cmpl-[0-9a-f]{32}$/);
    assert.equal(r.object, 'text_completion');
    assert.equal(r.model, MODEL_NAME);
    assert.equal(r.system_fingerprint, 'tandem-test');
    assert.equal(r.choices[0].index, 0);
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.choices[0].logprobs, null);
    const promptTokens = await countTokens(s.base, { prompt });
    assert.equal(r.usage?.prompt_tokens, promptTokens);
    assert.equal(r.usage?.completion_tokens, 9);
    assert.equal(r.usage?.total_tokens, promptTokens + 9);
    assert.equal(typeof r.usage?.prompt_tokens_details?.cached_tokens, 'number');
  });

  it('a list of prompts gives n choices per prompt, in prompt order; token-id prompts equal text prompts', async () => {
    const prompts = ['The cat', 'A dog ran'];
    const r = await s.client.completions.create({ ...greedy, prompt: prompts, n: 2, max_tokens: 6 } as Params);
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
    for (const [i, prompt] of prompts.entries()) {
      const alone = await s.client.completions.create({ ...greedy, prompt, max_tokens: 6 } as Params);
      assert.equal(r.choices[i * 2].text, alone.choices[0].text);
      assert.equal(r.choices[i * 2 + 1].text, alone.choices[0].text, 'greedy choices agree');
    }
    const counts = await Promise.all(prompts.map((prompt) => countTokens(s.base, { prompt })));
    assert.equal(r.usage?.prompt_tokens, counts[0] + counts[1]);
    assert.equal(r.usage?.completion_tokens, 4 * 6);

    const ids = (await postJson(s.base, '/tokenize', { prompt: prompts[0] })).body.tokens as number[];
    const byIds = await s.client.completions.create({ ...greedy, prompt: ids, max_tokens: 6 } as Params);
    assert.equal(byIds.choices[0].text, r.choices[0].text);
    const byIdLists = await s.client.completions.create({ ...greedy, prompt: [ids, ids], max_tokens: 6 } as Params);
    assert.equal(byIdLists.choices.length, 2);
    assert.equal(byIdLists.choices[1].text, r.choices[0].text);
  });

  it('streams text chunks, then usage, then [DONE]; the text equals the non-streamed one', async () => {
    const params = { ...greedy, prompt: 'Once upon a time', max_tokens: 12 } as Params;
    const whole = await s.client.completions.create(params);
    const stream = await s.client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    let text = '';
    const chunks: OpenAI.Completions.Completion[] = [];
    for await (const chunk of stream) {
      chunks.push(chunk);
      for (const c of chunk.choices) text += c.text;
    }
    assert.equal(text, whole.choices[0].text);
    const last = chunks[chunks.length - 1];
    assert.deepEqual(last.choices, []);
    assert.deepEqual(last.usage, whole.usage);
    assert.equal(chunks.filter((c) => c.choices[0]?.finish_reason === 'length').length, 1);
  });

  it('echo puts the prompt before the completion', async () => {
    const prompt = 'Echo me';
    const plain = await s.client.completions.create({ ...greedy, prompt, max_tokens: 5 } as Params);
    const echoed = await s.client.completions.create({ ...greedy, prompt, max_tokens: 5, echo: true } as Params);
    assert.equal(echoed.choices[0].text, prompt + plain.choices[0].text);
    const stream = await s.client.completions.create({ ...greedy, prompt, max_tokens: 5, echo: true, stream: true } as OpenAI.Completions.CompletionCreateParamsStreaming);
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    assert.equal(text, echoed.choices[0].text);
  });

  it('logprobs: parallel arrays, the chosen token among the alternatives with the same logprob', async () => {
    const r = await s.client.completions.create({ ...greedy, prompt: 'Count: 1, 2, 3', max_tokens: 8, logprobs: 3, repetition_penalty: 1 } as Params);
    const lp = r.choices[0].logprobs!;
    assert.equal(lp.tokens!.length, 8);
    assert.equal(lp.token_logprobs!.length, 8);
    assert.equal(lp.top_logprobs!.length, 8);
    assert.equal(lp.text_offset!.length, 8);
    assert.equal(lp.text_offset![0], 0);
    for (let i = 0; i < 8; i++) {
      const top = lp.top_logprobs![i];
      const size = Object.keys(top).length;
      assert.ok(size >= 1 && size <= 4, `logprobs 3 gives 3 alternatives plus the chosen token, got ${size}`);
      assert.equal(top[lp.tokens![i]], lp.token_logprobs![i]);
      assert.ok(Object.values(top).reduce((a, b) => a + Math.exp(b), 0) <= 1 + 1e-6);
      if (i > 0) assert.equal(lp.text_offset![i], lp.text_offset![i - 1] + lp.tokens![i - 1].length);
    }
  });

  it('stop strings never leak with several prompts and n', async () => {
    const base = { ...greedy, prompt: ['Alpha beta', 'Gamma'], max_tokens: 30 } as Params;
    const full = await s.client.completions.create(base);
    for (const offset of [2, 7, 15]) {
      const stop = full.choices[0].text.slice(offset, offset + 2);
      const r = await s.client.completions.create({ ...base, stop, n: 2 } as Params);
      for (const c of r.choices) {
        const original = full.choices[Math.floor(c.index / 2)].text;
        const at = original.indexOf(stop);
        assert.equal(c.text, at < 0 ? original : original.slice(0, at), `stop ${JSON.stringify(stop)}`);
        assert.ok(!c.text.includes(stop));
      }
    }
  });
});
