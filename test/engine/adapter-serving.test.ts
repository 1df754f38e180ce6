// The engine serving LoRA adapters: mixed batches give each request what it gets alone, a
// publish mid-generation leaves running requests on their pinned version (preempted ones too),
// old versions are freed once unpinned, and the prefix cache never shares K/V across adapters.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Engine } from '../../src/engine/engine.ts';
import { hashBlock, ROOT_HASH } from '../../src/engine/kv-cache.ts';
import { Sequence } from '../../src/engine/sequence.ts';
import type { GenerationRequest, TokenEvent } from '../../src/engine/types.ts';
import { uploadLora } from '../../src/model/lora-device.ts';
import type { ForwardBatch } from '../../src/model/transformer.ts';
import { collect, makeEngine, randomPrompt, request, tinyModel, trainedAdapter, type Collected, type TinyModel } from './helpers.ts';

describe('engine with LoRA adapters', () => {
  let m: TinyModel;
  before(() => {
    m = tinyModel(5);
  });
  after(() => m.dispose());

  const publish = (engine: Engine, name: string, seed: number) =>
    engine.adapters.publish(name, uploadLora(m.loaded.model.backend, m.loaded.config, trainedAdapter(m.loaded.config, seed)));

  it('a greedy batch mixing base rows and two adapters gives every sequence its tokens from a run alone', async () => {
    const prompt = randomPrompt(11, 40);
    const reqs = (): GenerationRequest[] => [
      request(prompt, { adapter: 'b' }),
      request(prompt),
      request(randomPrompt(9, 41), { adapter: 'a' }),
      request(prompt, { adapter: 'a' }),
      request(randomPrompt(14, 42)),
      request(randomPrompt(6, 43), { adapter: 'b' }),
    ];
    const alone = makeEngine(m.loaded);
    publish(alone, 'a', 1);
    publish(alone, 'b', 2);
    const expected: Collected[] = [];
    for (const r of reqs()) expected.push(await collect(alone.add(r)));
    await alone.close();

    const engine = makeEngine(m.loaded);
    publish(engine, 'a', 1);
    publish(engine, 'b', 2);
    const batches: ForwardBatch[] = [];
    const model = m.loaded.model;
    const forward = model.forward.bind(model);
    model.forward = (batch, cache) => {
      batches.push(batch);
      return forward(batch, cache);
    };
    try {
      const got = await Promise.all(reqs().map((r) => collect(engine.add(r))));
      assert.deepEqual(got.map((g) => g.ids), expected.map((e) => e.ids));
    } finally {
      delete (model as { forward?: unknown }).forward; // back to the prototype's
    }
    // The same prompt under the base model and each adapter: three different continuations.
    const [underB, underBase, , underA] = expected.map((e) => e.ids.join(','));
    assert.notEqual(underA, underBase);
    assert.notEqual(underB, underBase);
    assert.notEqual(underA, underB);
    // They really ran together, grouped: the first step has one segment per adapter, base rows outside.
    const first = batches[0];
    assert.equal(first.cuSeqlensQ.length - 1, 6, 'all six requests in the first step');
    const segs = first.lora!.map((s) => s.end - s.start);
    assert.equal(segs.length, 2, 'each adapter version is one contiguous segment');
    const adapterRows = [9 + 11, 11 + 6];
    assert.deepEqual([...segs].sort(), [...adapterRows].sort());
    for (const b of batches) assert.ok((b.lora?.length ?? 0) <= 2);
    await engine.close();
  });

  it('publishing mid-generation: the running request keeps its version, the next gets the new one, the old is freed after', async () => {
    const prompt = randomPrompt(10, 50);
    const engine = makeEngine(m.loaded);
    const v1 = publish(engine, 'x', 3);
    const withV1 = await collect(engine.add(request(prompt, { adapter: 'x', maxTokens: 16 })));
    publish(engine, 'ref2', 4); // v2's weights under another name: what 'x' must give after the publish
    const withV2 = await collect(engine.add(request(prompt, { adapter: 'ref2', maxTokens: 16 })));
    assert.notDeepEqual(withV2.ids, withV1.ids, 'the two versions must differ for this test to mean anything');

    const running = engine.add(request(prompt, { adapter: 'x', maxTokens: 16 }))[Symbol.asyncIterator]();
    const events: TokenEvent[] = [];
    for (let i = 0; i < 3; i++) events.push((await running.next()).value as TokenEvent);
    const weightsBefore = m.loaded.model.backend.memoryUsage().weights;
    const v2 = publish(engine, 'x', 4);
    assert.equal(v2.id, 'x@v2');
    assert.equal(v1.state, 'retired', 'still pinned by the running request');
    assert.equal(v1.refs, 1);
    const next = collect(engine.add(request(prompt, { adapter: 'x', maxTokens: 16 })));
    for (;;) {
      const r = await running.next();
      if (r.done) break;
      events.push(r.value);
    }
    assert.deepEqual(events.flatMap((e) => e.tokenIds), withV1.ids, 'finished with the version it started with');
    assert.deepEqual((await next).ids, withV2.ids, 'the next request uses the new version');
    assert.equal(v1.state, 'freed');
    assert.equal(engine.adapters.freedCount, 1);
    assert.equal(weightsBefore + v2.bytes - m.loaded.model.backend.memoryUsage().weights, v1.bytes, 'v1 left the backend');
    assert.equal(v2.refs, 0);
    await engine.close();
  });

  it('a preempted request recomputes with its pinned version after a publish', async () => {
    const reqs = (): GenerationRequest[] =>
      [0, 1, 2, 3].map((i) => request(randomPrompt(10 + i, 300 + i), { maxTokens: 24, adapter: i === 2 ? null : 'x', priority: i }));
    const roomy = makeEngine(m.loaded, { blockSize: 4 });
    publish(roomy, 'x', 6);
    const expected = await Promise.all(reqs().map((r) => collect(roomy.add(r))));
    await roomy.close();

    // 14 blocks of 4 hold one request and a bit: they keep preempting each other.
    const tight = makeEngine(m.loaded, { blockSize: 4, numBlocks: 14 });
    const v1 = publish(tight, 'x', 6);
    const streams = reqs().map((r) => tight.add(r)[Symbol.asyncIterator]());
    const firstEvent = (await streams[0].next()).value as TokenEvent;
    publish(tight, 'x', 7); // every request above pinned v1 when it was added
    const rest = await Promise.all(
      streams.map(async (it, i) => {
        const ids = i === 0 ? [...firstEvent.tokenIds] : [];
        for (let r = await it.next(); !r.done; r = await it.next()) ids.push(...r.value.tokenIds);
        return ids;
      }),
    );
    const preemptions = (await tight.metrics.preemptions.get()).values[0].value;
    assert.ok(preemptions > 0, 'the tiny pool should have forced preemption');
    assert.deepEqual(rest, expected.map((e) => e.ids));
    assert.equal(v1.state, 'freed');
    await tight.close();
  });

  it('the prefix cache never shares blocks between the base model, adapters, or versions of one adapter', async () => {
    const engine = makeEngine(m.loaded, { blockSize: 4 });
    publish(engine, 'x', 8);
    publish(engine, 'y', 9);
    const prompt = randomPrompt(30, 60); // 7 full blocks = 28 cacheable tokens
    const cached = async (adapter: string | null): Promise<number> =>
      (await collect(engine.add(request(prompt, { maxTokens: 2, adapter })))).final.usage!.cachedPromptTokens;
    assert.equal(await cached(null), 0);
    assert.equal(await cached(null), 28, 'the base model hits its own blocks');
    assert.equal(await cached('x'), 0, 'an adapter does not hit blocks computed by the base model');
    assert.equal(await cached('x'), 28, 'an adapter hits its own blocks');
    assert.equal(await cached('y'), 0, 'nor those of another adapter');
    publish(engine, 'x', 10);
    assert.equal(await cached('x'), 0, 'nor those of its previous version');
    assert.equal(await cached(null), 28, 'the base model still finds its blocks');

    // Added together, the base request and the adapter one do not wait for each other's blocks.
    const both = await Promise.all([null, 'y'].map((a) => collect(engine.add(request(randomPrompt(30, 61), { maxTokens: 2, adapter: a })))));
    assert.deepEqual(both.map((b) => b.final.usage!.cachedPromptTokens), [0, 0]);
    await engine.close();
  });

  it('hash chains: the base model keeps the plain root; each adapter version starts its own chain', () => {
    const engine = makeEngine(m.loaded);
    const x1 = publish(engine, 'x', 11);
    const tokens = randomPrompt(8, 70);
    const greedy = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0 };
    const base = new Sequence('b', tokens, 4, greedy, 0, 0);
    const adapted = new Sequence('a', tokens, 4, greedy, 0, 0, x1);
    assert.equal(base.blockHash(0, 4), hashBlock(ROOT_HASH, tokens.slice(0, 4)));
    assert.equal(base.blockHash(1, 4), hashBlock(hashBlock(ROOT_HASH, tokens.slice(0, 4)), tokens.slice(4, 8)));
    assert.notEqual(adapted.blockHash(0, 4), base.blockHash(0, 4));
    const x2 = publish(engine, 'x', 12);
    assert.notEqual(new Sequence('c', tokens, 4, greedy, 0, 0, x2).blockHash(0, 4), adapted.blockHash(0, 4));
    return engine.close();
  });
});
