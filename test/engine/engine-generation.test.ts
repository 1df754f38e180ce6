// What the engine generates: equal to the single-sequence loop, and the same for a request
// whether it runs alone, batched with 15 others, or preempted and recomputed.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateTokens } from '../../src/engine/generate-one.ts';
import type { GenerationRequest } from '../../src/engine/types.ts';
import { collect, makeEngine, randomPrompt, request, seeded, tinyModel, type TinyModel } from './helpers.ts';

describe('engine generation', () => {
  let m: TinyModel;
  before(() => {
    m = tinyModel(2);
  });
  after(() => m.dispose());

  it('greedy output equals generate-one for the same prompt', async () => {
    const prompt = randomPrompt(20, 1);
    const expected: number[] = [];
    for await (const t of generateTokens(m.loaded.model, prompt, {
      maxTokens: 20,
      sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0 },
      stopTokenIds: [],
    })) {
      expected.push(t.id);
    }
    const engine = makeEngine(m.loaded, { blockSize: 4 });
    const got = await collect(engine.add(request(prompt, { maxTokens: 20 })));
    assert.deepEqual(got.ids, expected);
    assert.ok(new Set(expected).size > 3, 'a degenerate run (one repeated token) would prove little');
    assert.equal(got.final.finishReason, 'length');
    assert.deepEqual(got.final.usage, { promptTokens: 20, completionTokens: 20, cachedPromptTokens: 0 });
    assert.equal(got.text, m.loaded.tokenizer.decode(expected, { skipSpecialTokens: true }));
    await engine.close();
  });

  it('16 concurrent requests each equal the request run alone (greedy and seeded)', async () => {
    const requests = (): GenerationRequest[] =>
      Array.from({ length: 16 }, (_, i) =>
        request(randomPrompt(5 + ((i * 7) % 23), 100 + i), {
          maxTokens: 10 + (i % 5),
          sampling: [
            seeded(0, 0),
            { ...seeded(2000 + i, 0.9), topK: 50, topP: 0.95 },
            { ...seeded(0, 0), repetitionPenalty: 1.3 },
            { ...seeded(3000 + i), frequencyPenalty: 0.5, presencePenalty: 0.3 },
          ][i % 4],
        }),
      );
    const alone = makeEngine(m.loaded, { blockSize: 4 });
    const expected = [];
    for (const r of requests()) expected.push((await collect(alone.add(r))).ids);
    await alone.close();

    // A small token budget makes the batch mix chunked prefills with decodes.
    const together = makeEngine(m.loaded, { blockSize: 4, maxNumBatchedTokens: 48 });
    const got = await Promise.all(requests().map((r) => collect(together.add(r))));
    assert.deepEqual(got.map((g) => g.ids), expected);
    const steps = (await together.metrics.stepDuration.get()).values.find((v) => v.metricName?.endsWith('_count'))!.value;
    const tokens = expected.reduce((n, ids) => n + ids.length, 0);
    assert.ok(steps < tokens / 4, `${steps} steps for ${tokens} tokens: the requests did not share steps`);
    const distinct = new Set(expected.map((ids) => ids.join(',')));
    assert.ok(distinct.size >= 12, `expected varied outputs, got ${distinct.size} distinct of 16`);
    await together.close();
  });

  it('passes penalties to the sampler: a repetition penalty breaks a greedy loop', async () => {
    const engine = makeEngine(m.loaded);
    const prompt = randomPrompt(20, 4); // greedy repeats one token here
    const plain = await collect(engine.add(request(prompt, { maxTokens: 12 })));
    const penalised = await collect(engine.add(request(prompt, { maxTokens: 12, sampling: { ...seeded(0, 0), repetitionPenalty: 2 } })));
    assert.ok(new Set(plain.ids).size <= 2);
    assert.ok(new Set(penalised.ids).size > new Set(plain.ids).size, `${penalised.ids} vs ${plain.ids}`);
    await engine.close();
  });

  it('a request without a seed still samples (a random one), and the same seed repeats its tokens', async () => {
    const engine = makeEngine(m.loaded);
    const prompt = randomPrompt(9, 5);
    const a = await collect(engine.add(request(prompt, { maxTokens: 16, sampling: seeded(77) })));
    const b = await collect(engine.add(request(prompt, { maxTokens: 16, sampling: seeded(77) })));
    assert.deepEqual(a.ids, b.ids);
    const unseeded = await Promise.all(
      [0, 1, 2].map(() => collect(engine.add(request(prompt, { maxTokens: 16, sampling: { ...seeded(0), seed: null } })))),
    );
    assert.ok(new Set(unseeded.map((u) => u.ids.join(','))).size > 1, 'three unseeded runs all drew the same tokens');
    await engine.close();
  });

  it('preemption and recompute give the same greedy and seeded output as an unpreempted run', async () => {
    const reqs = (): GenerationRequest[] =>
      [0, 1, 2, 3].map((i) =>
        request(randomPrompt(10 + i, 300 + i), { maxTokens: 24, sampling: i % 2 ? seeded(40 + i) : seeded(0, 0), priority: i }),
      );
    const roomy = makeEngine(m.loaded, { blockSize: 4 });
    const expected = await Promise.all(reqs().map((r) => collect(roomy.add(r))));
    await roomy.close();

    // Each needs up to 10 blocks of 4; 14 blocks hold one and a bit, so they keep evicting each other.
    const tight = makeEngine(m.loaded, { blockSize: 4, numBlocks: 14 });
    const got = await Promise.all(reqs().map((r) => collect(tight.add(r))));
    const preemptions = (await tight.metrics.preemptions.get()).values[0].value;
    assert.ok(preemptions > 0, 'the tiny pool should have forced preemption');
    assert.deepEqual(got.map((g) => g.ids), expected.map((e) => e.ids));
    assert.deepEqual(got.map((g) => g.text), expected.map((e) => e.text));
    for (const g of got) {
      assert.equal(g.final.usage?.completionTokens, 24, 'recompute must not emit tokens again');
      assert.equal(g.events.length, 24, 'one event per generated token');
    }
    assert.equal(tight.stats().kvBlocksUsed, 0);
    await tight.close();
  });

  it('n identical prompts share the prompt blocks through the prefix cache, and free them all at the end', async () => {
    const engine = makeEngine(m.loaded, { blockSize: 4 });
    const prompt = randomPrompt(30, 9);
    const runs = await Promise.all([1, 2, 3].map((i) => collect(engine.add(request(prompt, { maxTokens: 8, sampling: seeded(i) })))));
    // 30 tokens: 7 full blocks = 28 tokens found by the second and the third.
    assert.deepEqual(runs.map((r) => r.final.usage?.cachedPromptTokens), [0, 28, 28]);
    const stats = engine.stats();
    assert.equal(stats.prefixCacheHits, 56);
    assert.equal(stats.prefixCacheQueries, 90);
    assert.equal(stats.kvBlocksUsed, 0);
    assert.ok(stats.kvBlocksCachedFree >= 7, 'the shared prompt blocks stay cached after the requests end');
    // A later request with the same prompt hits too.
    const later = await collect(engine.add(request(prompt, { maxTokens: 2 })));
    assert.equal(later.final.usage?.cachedPromptTokens, 28);
    await engine.close();
  });

  it('a long prompt runs in chunks and still matches the single-sequence loop', async () => {
    const prompt = randomPrompt(150, 11);
    const expected: number[] = [];
    for await (const t of generateTokens(m.loaded.model, prompt, {
      maxTokens: 6,
      sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0 },
      stopTokenIds: [],
    })) {
      expected.push(t.id);
    }
    const engine = makeEngine(m.loaded, { blockSize: 8, maxNumBatchedTokens: 32 });
    const got = await collect(engine.add(request(prompt, { maxTokens: 6 })));
    assert.deepEqual(got.ids, expected);
    await engine.close();
  });
});
