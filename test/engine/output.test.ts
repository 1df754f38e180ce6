import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { OutputProcessor, TokenTexts, earliestStop, heldSuffixLength, type OutputOptions, type SampledToken } from '../../src/engine/output.ts';
import type { TextTokenizer } from '../../src/model/tokenizer.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { tinyModel, type TinyModel } from './helpers.ts';

const NO_TOP = { ids: new Int32Array(0), logprobs: new Float32Array(0) };
const tok = (id: number): SampledToken => ({ id, logprob: -1, top: NO_TOP });

describe('stop-string helpers', () => {
  it('finds the earliest stop string', () => {
    assert.deepEqual(earliestStop('abcdef', ['de', 'bc']), { index: 1, string: 'bc' });
    assert.deepEqual(earliestStop('abcdef', ['cd', 'cde']), { index: 2, string: 'cde' });
    assert.equal(earliestStop('abc', ['x']), null);
  });

  it('holds the longest suffix that could start a stop string', () => {
    assert.equal(heldSuffixLength('hello wor', ['world']), 3);
    assert.equal(heldSuffixLength('hello', ['world']), 0);
    assert.equal(heldSuffixLength('abab', ['abac', 'b']), 2);
    assert.equal(heldSuffixLength('xx', ['x']), 0, 'a complete stop string is found, not held');
  });
});

describe('OutputProcessor', () => {
  let m: TinyModel;
  let tokenizer: TextTokenizer;
  let texts: TokenTexts;
  before(() => {
    m = tinyModel(2);
    tokenizer = m.loaded.tokenizer;
    texts = new TokenTexts(tokenizer);
  });
  after(() => m.dispose());

  const processor = (over: Partial<OutputOptions> = {}) =>
    new OutputProcessor(tokenizer, texts, {
      stop: { strings: [], tokenIds: [], ignoreEos: false },
      logprobs: null,
      skipSpecialTokens: true,
      maxTokens: 100,
      eosTokenIds: tokenizer.eosTokenIds,
      ...over,
    });

  it('streams text whose pieces join to the full decode', () => {
    const ids = tokenizer.encode('The cat sat on the mat.');
    const out = processor();
    const text = ids.map((id) => out.push(tok(id)).text).join('');
    assert.equal(text, 'The cat sat on the mat.');
  });

  it('cuts a stop string spanning several tokens', () => {
    const ids = tokenizer.encode('one two three four');
    const pieces = ids.map((id) => tokenizer.decode([id]));
    assert.ok(!pieces.some((p) => p.includes('o thr')), 'the stop string spans tokens');
    const out = processor({ stop: { strings: ['o thr'], tokenIds: [], ignoreEos: false } });
    let text = '';
    let last;
    for (const id of ids) {
      last = out.push(tok(id));
      text += last.text;
      if (last.finishReason) break;
    }
    assert.equal(text, 'one tw');
    assert.equal(last?.finishReason, 'stop');
    assert.equal(last?.stopReason, 'o thr');
    assert.ok(out.finished);
    assert.throws(() => out.push(tok(ids[0])), /after the sequence finished/);
  });

  it('ends at eos with reason stop and stopReason null, emitting no eos text but what was held', () => {
    const eos = tokenizer.eosTokenIds[0];
    const out = processor({ stop: { strings: ['cat!'], tokenIds: [], ignoreEos: false } });
    const texts = [...tokenizer.encode('a cat'), eos].map((id) => out.push(tok(id)));
    const final = texts[texts.length - 1];
    assert.equal(texts.map((t) => t.text).join(''), 'a cat', "the held 'cat' is plain text once nothing follows");
    assert.equal(final.finishReason, 'stop');
    assert.equal(final.stopReason, null);
  });

  it('with ignoreEos, eos is just a token (skipped as a special token)', () => {
    const eos = tokenizer.eosTokenIds[0];
    const out = processor({ stop: { strings: [], tokenIds: [], ignoreEos: true } });
    const r = out.push(tok(eos));
    assert.equal(r.finishReason, undefined);
    assert.equal(r.text, '');
  });

  it('ends at a stop token id with that id as stopReason', () => {
    const ids = tokenizer.encode('xy');
    const out = processor({ stop: { strings: [], tokenIds: [ids[ids.length - 1]], ignoreEos: false } });
    let r;
    for (const id of ids) r = out.push(tok(id));
    assert.equal(r?.finishReason, 'stop');
    assert.equal(r?.stopReason, ids[ids.length - 1]);
  });

  it('ends at max_tokens with reason length, flushing held text', () => {
    const ids = tokenizer.encode('ab');
    const out = processor({ maxTokens: ids.length, stop: { strings: ['b!'], tokenIds: [], ignoreEos: false } });
    const rs = ids.map((id) => out.push(tok(id)));
    assert.equal(rs.map((r) => r.text).join(''), 'ab');
    assert.equal(rs[rs.length - 1].finishReason, 'length');
  });

  it('endsAt(id) says beforehand, without text, exactly when push ends by stop id, eos or max_tokens', () => {
    const words = tokenizer.encode(' the cat sat on a mat; one two three!');
    const eos = tokenizer.eosTokenIds[0];
    const rng = new SeededRandom(17);
    let ended = { byId: 0, byString: 0 };
    for (let trial = 0; trial < 300; trial++) {
      const pick = (): number => (rng.uniform() < 0.08 ? eos : words[Math.floor(rng.uniform() * words.length)]);
      const out = processor({
        maxTokens: 1 + Math.floor(rng.uniform() * 12),
        stop: { strings: rng.uniform() < 0.5 ? ['t t', 'at;'] : [], tokenIds: rng.uniform() < 0.5 ? [words[3]] : [], ignoreEos: rng.uniform() < 0.5 },
      });
      for (;;) {
        const id = pick();
        const predicted = out.endsAt(id);
        const r = out.push(tok(id));
        if (predicted) assert.ok(r.finishReason, `endsAt(${id}) said it ends, push went on (trial ${trial})`);
        if (!r.finishReason) continue;
        // Only a stop string, which needs the text, may end a sequence endsAt did not foresee.
        if (!predicted) assert.equal(typeof r.stopReason, 'string', `push ended by ${r.finishReason}/${r.stopReason} unforeseen (trial ${trial})`);
        ended = predicted ? { ...ended, byId: ended.byId + 1 } : { ...ended, byString: ended.byString + 1 };
        break;
      }
    }
    assert.ok(ended.byId > 100 && ended.byString > 10, `both kinds of end were exercised: ${JSON.stringify(ended)}`);
  });

  it('builds logprob entries with token text and bytes', () => {
    const [id] = tokenizer.encode(' the');
    const out = processor({ logprobs: 1 });
    const r = out.push({ id, logprob: -0.5, top: { ids: Int32Array.of(id, 3), logprobs: Float32Array.of(-0.5, -2) } });
    assert.deepEqual(r.logprob, {
      id,
      token: ' the',
      bytes: [...Buffer.from(' the')],
      logprob: -0.5,
      top: [{ id, token: ' the', bytes: [...Buffer.from(' the')], logprob: -0.5 }],
    });
  });
});
