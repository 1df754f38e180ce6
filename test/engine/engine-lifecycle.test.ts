// Requests coming and going: stops, aborts, limits, errors, drain.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EngineError, type TokenEvent } from '../../src/engine/types.ts';
import { collect, makeEngine, randomPrompt, request, tinyModel, type TinyModel } from './helpers.ts';

/** A greedy run of this prompt gives 8 distinct tokens on the tiny model with seed 2. */
const PROMPT = randomPrompt(20, 1);

function engineError(code: EngineError['code'], message?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof EngineError, `expected an EngineError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (message) assert.match(err.message, message);
    return true;
  };
}

describe('engine lifecycle', () => {
  let m: TinyModel;
  before(() => {
    m = tinyModel(2);
  });
  after(() => m.dispose());

  it('cuts a stop string that spans tokens and never emits any of it', async () => {
    const engine = makeEngine(m.loaded);
    const plain = await collect(engine.add(request(PROMPT, { maxTokens: 20 })));
    const pieces = plain.events.map((e) => e.text);
    const full = pieces.join('');
    // The first boundary between two tokens with clean text on both sides whose 2+2 characters
    // around it occur nowhere earlier.
    let stop = '';
    let cut = -1;
    let offset = 0;
    for (let k = 0; k + 1 < pieces.length && stop === ''; k++) {
      offset += pieces[k].length;
      const [left, right] = [pieces[k], pieces[k + 1]];
      if (left.length < 2 || right.length < 1 || /\uFFFD/.test(left + right)) continue;
      const candidate = left.slice(-2) + right.slice(0, 2);
      if (full.indexOf(candidate) === offset - 2) [stop, cut] = [candidate, offset - 2];
    }
    assert.ok(stop !== '', `no usable token boundary in ${JSON.stringify(pieces)}`);
    assert.ok(pieces.every((p) => !p.includes(stop)), 'the stop string must span a token boundary');

    const got = await collect(engine.add(request(PROMPT, { maxTokens: 20, stop: { strings: ['never-seen', stop], tokenIds: [], ignoreEos: true } })));
    assert.equal(got.text, full.slice(0, cut));
    assert.equal(got.final.finishReason, 'stop');
    assert.equal(got.final.stopReason, stop);
    // Text only ever grows, so a correct concatenation proves no event leaked part of the stop.
    let emitted = '';
    for (const e of got.events) {
      emitted += e.text;
      assert.ok(full.slice(0, cut).startsWith(emitted));
    }
    // It finished on the token that completed the stop string, which counts.
    let completing = 0;
    for (let total = pieces[0].length; total < cut + stop.length; total += pieces[++completing].length);
    assert.equal(got.final.usage?.completionTokens, completing + 1);
    assert.deepEqual(got.ids, plain.ids.slice(0, completing + 1));
    await engine.close();
  });

  it('holds back a possible stop-string start, then releases it once it is not one', async () => {
    const engine = makeEngine(m.loaded);
    const plain = await collect(engine.add(request(PROMPT, { maxTokens: 20 })));
    const k = plain.events.findIndex((e) => e.text.length > 0 && !e.text.includes('\uFFFD'));
    const piece = plain.events[k].text;
    const stop = piece.slice(-1) + '\u0001\u0002never';
    const got = await collect(engine.add(request(PROMPT, { maxTokens: 20, stop: { strings: [stop], tokenIds: [], ignoreEos: true } })));
    assert.equal(got.events[k].text, piece.slice(0, -1), 'the last character waits for the next token');
    assert.equal(got.text, plain.text, 'and nothing is lost');
    assert.equal(got.final.finishReason, 'length');
    await engine.close();
  });

  it('finishes on a stop token id: counted and reported, its text not emitted', async () => {
    const engine = makeEngine(m.loaded);
    const plain = await collect(engine.add(request(PROMPT, { maxTokens: 20 })));
    const j = plain.ids.findIndex((id, i) => i >= 3 && plain.ids.indexOf(id) === i);
    const stopId = plain.ids[j];
    const got = await collect(engine.add(request(PROMPT, { maxTokens: 20, stop: { strings: [], tokenIds: [stopId], ignoreEos: true } })));
    assert.deepEqual(got.ids, plain.ids.slice(0, j + 1));
    assert.equal(got.final.finishReason, 'stop');
    assert.equal(got.final.stopReason, stopId);
    assert.equal(got.final.usage?.completionTokens, j + 1);
    assert.equal(got.text, m.loaded.tokenizer.decode(plain.ids.slice(0, j), { skipSpecialTokens: true }));
    await engine.close();
  });

  it('finishes with length at max_tokens', async () => {
    const engine = makeEngine(m.loaded);
    const got = await collect(engine.add(request(PROMPT, { maxTokens: 1 })));
    assert.equal(got.events.length, 1);
    assert.equal(got.final.finishReason, 'length');
    assert.equal(got.final.usage?.completionTokens, 1);
    await engine.close();
  });

  it('gives logprobs per token, with the top alternatives', async () => {
    const engine = makeEngine(m.loaded);
    const got = await collect(engine.add(request(PROMPT, { maxTokens: 5, logprobs: 3 })));
    for (const e of got.events) {
      assert.equal(e.logprobs?.length, 1);
      const lp = e.logprobs![0];
      assert.equal(lp.id, e.tokenIds[0]);
      assert.ok(lp.logprob <= 0);
      assert.equal(lp.top.length, 3);
      assert.equal(lp.top[0].id, lp.id, 'greedy picks the most likely token');
      assert.ok(Math.abs(lp.top[0].logprob - lp.logprob) < 1e-6);
      assert.ok(lp.top[1].logprob <= lp.top[0].logprob);
      assert.equal(lp.top[1].token, new TextDecoder().decode(Uint8Array.from(lp.top[1].bytes)));
    }
    const text = got.events.flatMap((e) => e.logprobs!.map((l) => Buffer.from(l.bytes))).reduce((a, b) => Buffer.concat([a, b]), Buffer.alloc(0));
    assert.equal(text.toString('utf8'), m.loaded.tokenizer.decode(got.ids), 'token bytes concatenate to the text');
    await engine.close();
  });

  it('abort() ends a stream mid-way with finishReason abort and frees its blocks at once', async () => {
    const engine = makeEngine(m.loaded);
    const req = request(PROMPT, { maxTokens: 500 });
    const events: TokenEvent[] = [];
    for await (const e of engine.add(req)) {
      events.push(e);
      if (events.length === 3) {
        assert.ok(engine.stats().kvBlocksUsed > 0);
        engine.abort(req.requestId);
        assert.equal(engine.stats().kvBlocksUsed, 0, 'freed synchronously');
        assert.equal(engine.stats().running, 0);
      }
    }
    const final = events[events.length - 1];
    assert.equal(final.finishReason, 'abort');
    assert.ok(events.length <= 5);
    assert.equal(final.usage?.completionTokens, events.flatMap((e) => e.tokenIds).length);
    await engine.close();
  });

  it('breaking out of the iteration aborts the request', async () => {
    const engine = makeEngine(m.loaded);
    let n = 0;
    for await (const _ of engine.add(request(PROMPT, { maxTokens: 500 }))) {
      if (++n === 2) break;
    }
    assert.deepEqual([engine.stats().running, engine.stats().waiting, engine.stats().kvBlocksUsed], [0, 0, 0]);
    await engine.drain(); // resolves: nothing is left running
    await engine.close();
  });

  it('an AbortSignal aborts the request', async () => {
    const engine = makeEngine(m.loaded);
    const ac = new AbortController();
    const events: TokenEvent[] = [];
    for await (const e of engine.add(request(PROMPT, { maxTokens: 500, signal: ac.signal }))) {
      events.push(e);
      if (events.length === 2) ac.abort();
    }
    assert.equal(events[events.length - 1].finishReason, 'abort');
    assert.equal(engine.stats().kvBlocksUsed, 0);
    await engine.close();
  });

  it('rejects prompts that exceed the context, naming the numbers', () => {
    const engine = makeEngine(m.loaded, { maxModelLen: 64 });
    assert.throws(() => engine.add(request(randomPrompt(70, 1))), engineError('context_length_exceeded', /prompt is 70 tokens; this model's context is 64/));
    assert.throws(
      () => engine.add(request(randomPrompt(50, 1), { maxTokens: 20 })),
      engineError('context_length_exceeded', /prompt \(50\) \+ max_tokens \(20\) = 70 exceeds the context of 64/),
    );
    const wide = makeEngine(m.loaded);
    assert.equal(wide.maxModelLen, 2048, "default: the model's max_position_embeddings");
    assert.throws(() => wide.add(request(new Array(9000).fill(1))), engineError('context_length_exceeded', /prompt is 9,000 tokens; this model's context is 2,048/));
    void engine.close();
    void wide.close();
  });

  it('rejects token ids outside the vocabulary and requests that can never fit the KV pool', () => {
    const engine = makeEngine(m.loaded, { blockSize: 4, numBlocks: 4 });
    assert.throws(() => engine.add(request([1, 512])), engineError('invalid_request', /512, outside this model's vocabulary \[0, 512\)/));
    assert.throws(() => engine.add(request([1, -1])), engineError('invalid_request'));
    assert.throws(() => engine.add(request(randomPrompt(10, 1), { maxTokens: 10 })), engineError('out_of_capacity', /20 tokens need 5 KV blocks.*only 4 blocks/));
    assert.throws(() => engine.add(request([1], { maxTokens: 0 })), engineError('invalid_request', /max_tokens/));
    const dup = request([1, 2], { maxTokens: 2 });
    engine.add(dup);
    assert.throws(() => engine.add({ ...dup }), engineError('invalid_request', /already in use/));
    void engine.close();
  });

  it('throws queue_full beyond maxWaiting', async () => {
    const engine = makeEngine(m.loaded, { maxWaiting: 2 });
    const a = engine.add(request(PROMPT, { maxTokens: 3 }));
    const b = engine.add(request(PROMPT, { maxTokens: 3 }));
    assert.throws(() => engine.add(request(PROMPT)), engineError('queue_full', /2 waiting/));
    const done = await Promise.all([collect(a), collect(b)]);
    assert.deepEqual(done.map((d) => d.final.finishReason), ['length', 'length']);
    await engine.close();
  });

  it('drain() stops admitting, lets running and waiting requests finish, and resolves when idle', async () => {
    const engine = makeEngine(m.loaded, { maxNumSeqs: 2 });
    const streams = [0, 1, 2].map((i) => collect(engine.add(request(randomPrompt(8, i), { maxTokens: 6 }))));
    const drained = engine.drain();
    assert.throws(() => engine.add(request(PROMPT)), engineError('shutting_down'));
    await drained;
    const stats = engine.stats();
    assert.deepEqual([stats.running, stats.waiting, stats.kvBlocksUsed], [0, 0, 0]);
    const done = await Promise.all(streams);
    assert.deepEqual(done.map((d) => d.final.usage?.completionTokens), [6, 6, 6]);
    await engine.close();
  });

  it('abortAll() ends every request', async () => {
    const engine = makeEngine(m.loaded, { maxNumSeqs: 1 });
    const streams = [0, 1, 2].map((i) => collect(engine.add(request(randomPrompt(8, i), { maxTokens: 50 }))));
    await new Promise((r) => setTimeout(r, 5));
    engine.abortAll();
    const done = await Promise.all(streams);
    assert.deepEqual(done.map((d) => d.final.finishReason), ['abort', 'abort', 'abort']);
    assert.equal(engine.stats().kvBlocksUsed, 0);
    await engine.close();
  });

  it('a failing step fails the requests in it with the error instead of hanging, and the engine goes on', async () => {
    const engine = makeEngine(m.loaded);
    const model = m.loaded.model;
    const forward = model.forward;
    model.forward = () => {
      throw new Error('injected forward failure');
    };
    try {
      await assert.rejects(collect(engine.add(request(PROMPT, { maxTokens: 4 }))), /injected forward failure/);
    } finally {
      model.forward = forward;
    }
    assert.equal(engine.stats().kvBlocksUsed, 0);
    const ok = await collect(engine.add(request(PROMPT, { maxTokens: 4 })));
    assert.equal(ok.final.finishReason, 'length');
    await engine.close();
  });
});
