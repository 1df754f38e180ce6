/** LoRA adapters through the OpenAI API: listing, `model` = adapter name, fingerprints, 404s, metrics. */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type OpenAI from 'openai';
import { loraParameterCount } from '../../src/model/lora.ts';
import { savePeftAdapter } from '../../src/model/lora-peft.ts';
import { trainedAdapter } from '../engine/helpers.ts';
import { metricValue, MODEL_NAME, postJson, scrape, startServer, type TestServer } from './helpers.ts';

type Params = OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming;
const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Tom has 3 apples and buys 5 more. How many?' }];
const greedy = { messages, max_tokens: 10, temperature: 0, ignore_eos: true } as const;

describe('LoRA adapters in the OpenAI API', () => {
  let s: TestServer;
  let root: string;
  const dirs: Record<string, string> = {};
  before(async () => {
    s = await startServer();
    root = mkdtempSync(join(tmpdir(), 'tandem-server-adapters-'));
    const cfg = s.engine.loaded.config;
    for (const [name, seed, targets] of [
      ['math', 1, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']],
      ['math-v2', 2, ['q_proj', 'v_proj']],
    ] as const) {
      dirs[name] = join(root, name);
      savePeftAdapter(dirs[name], trainedAdapter(cfg, seed, { targets: [...targets] }), { baseModel: MODEL_NAME });
    }
    s.engine.adapters.loadPeft('math', dirs.math);
  });
  after(async () => {
    await s.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('GET /v1/models lists the base model and the adapter with parent and root, as vLLM', async () => {
    const list = await s.client.models.list();
    const cards = list.data as unknown as { id: string; parent: string | null; root: string; object: string; owned_by: string }[];
    assert.deepEqual(cards.map((c) => c.id), [MODEL_NAME, 'math']);
    assert.equal(cards[0].parent, null);
    assert.equal(cards[0].root, s.engine.loaded.dir);
    assert.equal(cards[1].parent, MODEL_NAME);
    assert.equal(cards[1].root, dirs.math);
    assert.equal(cards[1].object, 'model');
    const one = (await s.client.models.retrieve('math')) as unknown as { id: string; parent: string };
    assert.deepEqual([one.id, one.parent], ['math', MODEL_NAME]);
  });

  it('chat with model = adapter name: the adapter generates, and the fingerprint names its version', async () => {
    const base = await s.client.chat.completions.create({ ...greedy, model: MODEL_NAME } as Params);
    const adapted = await s.client.chat.completions.create({ ...greedy, model: 'math' } as Params);
    assert.equal(base.system_fingerprint, 'tandem-test');
    assert.equal(adapted.system_fingerprint, 'tandem-test+math@v1');
    assert.equal(adapted.model, 'math');
    assert.notEqual(adapted.choices[0].message.content, base.choices[0].message.content, 'the adapter changes the output');
    // The same tokens the engine gives directly for that adapter.
    const ids = (await postJson(s.base, '/tokenize', { model: 'math', messages, add_generation_prompt: true })).body.tokens as number[];
    const direct: number[] = [];
    for await (const e of s.engine.add({
      requestId: 'direct',
      promptIds: ids,
      maxTokens: 10,
      sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, seed: null, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1 },
      stop: { strings: [], tokenIds: [], ignoreEos: true },
      logprobs: null,
      priority: 0,
      skipSpecialTokens: true,
      adapter: 'math',
    })) {
      direct.push(...e.tokenIds);
    }
    assert.equal(s.engine.loaded.tokenizer.decode(direct, { skipSpecialTokens: true }), adapted.choices[0].message.content);

    // Streaming chunks and completions carry the adapter fingerprint too.
    const stream = await s.client.chat.completions.create({ ...greedy, model: 'math', stream: true } as OpenAI.Chat.Completions.ChatCompletionCreateParamsStreaming);
    let text = '';
    for await (const chunk of stream) {
      assert.equal(chunk.system_fingerprint, 'tandem-test+math@v1');
      assert.equal(chunk.model, 'math');
      text += chunk.choices[0]?.delta.content ?? '';
    }
    assert.equal(text, adapted.choices[0].message.content);
    const cmpl = await s.client.completions.create({ model: 'math', prompt: 'Once upon', max_tokens: 4, temperature: 0 });
    assert.equal(cmpl.system_fingerprint, 'tandem-test+math@v1');
    assert.equal(cmpl.model, 'math');
  });

  it('a new version is what the next request gets, and the fingerprint says so', async () => {
    const v1 = await s.client.chat.completions.create({ ...greedy, model: 'math' } as Params);
    s.engine.adapters.loadPeft('math', dirs['math-v2']);
    s.engine.adapters.loadPeft('v2-reference', dirs['math-v2']);
    const v2 = await s.client.chat.completions.create({ ...greedy, model: 'math' } as Params);
    const reference = await s.client.chat.completions.create({ ...greedy, model: 'v2-reference' } as Params);
    assert.equal(v2.system_fingerprint, 'tandem-test+math@v2');
    assert.equal(reference.system_fingerprint, 'tandem-test+v2-reference@v1');
    assert.equal(v2.choices[0].message.content, reference.choices[0].message.content);
    assert.notEqual(v2.choices[0].message.content, v1.choices[0].message.content);
    s.engine.adapters.unload('v2-reference');
  });

  it('an unknown model is 404 model_not_found in OpenAI\'s error shape, on every route that takes a model', async () => {
    for (const [path, body] of [
      ['/v1/chat/completions', { model: 'nope', messages }],
      ['/v1/completions', { model: 'nope', prompt: 'hi' }],
      ['/tokenize', { model: 'nope', prompt: 'hi' }],
    ] as const) {
      const r = await postJson(s.base, path, body);
      assert.equal(r.status, 404, path);
      assert.deepEqual(Object.keys(r.body.error).sort(), ['code', 'message', 'param', 'type']);
      assert.equal(r.body.error.code, 'model_not_found');
      assert.equal(r.body.error.param, 'model');
      assert.equal(r.body.error.type, 'invalid_request_error');
      assert.match(r.body.error.message, /'nope' does not exist.*'tiny', 'math'/);
    }
    const res = await fetch(`${s.base}/v1/models/nope`);
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'model_not_found');
    await assert.rejects(s.client.chat.completions.create({ ...greedy, model: 'gpt-4o' } as Params), (err: unknown) => {
      const e = err as { status?: number; code?: string; param?: string };
      return e.status === 404 && e.code === 'model_not_found' && e.param === 'model';
    });
  });

  it('metrics report adapter versions and bytes; an unloaded adapter leaves the list and the metrics', async () => {
    const cfg = s.engine.loaded.config;
    const v = s.engine.adapters.get('math')!;
    const text = await scrape(s.base);
    assert.equal(metricValue(text, 'tandem_adapter_versions_loaded{adapter="math"}'), 1);
    assert.equal(metricValue(text, 'tandem_adapter_bytes{adapter="math"}'), 4 * loraParameterCount(cfg, v.lora.spec));
    assert.ok(s.engine.adapters.unload('math'));
    const ids = (await s.client.models.list()).data.map((c) => c.id);
    assert.deepEqual(ids, [MODEL_NAME]);
    const r = await postJson(s.base, '/v1/chat/completions', { model: 'math', messages });
    assert.equal(r.status, 404);
    assert.doesNotMatch(await scrape(s.base), /tandem_adapter_bytes\{adapter="math"\}/);
  });
});
