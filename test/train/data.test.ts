import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DataError,
  EpochIterator,
  loadChatJsonl,
  loadGsm8kJsonl,
  permutation,
  readJsonl,
  shuffled,
  type Example,
} from '../../src/train/data.ts';
import { DIFFICULTIES, syntheticExamples, type DifficultyName } from '../../src/train/synthetic.ts';
import { SYSTEM_PROMPT, xmlCot } from '../../src/train/prompts.ts';
import { pyIsDigit } from '../../src/train/rewards.ts';
import { createRewardRegistry, GSM8K_REWARDS } from '../../src/train/reward-registry.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-data-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
function file(content: string | Buffer, name = `f${counter++}.jsonl`): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, content);
  return p;
}
const line = (v: unknown): string => JSON.stringify(v) + '\n';
const problem = (n: number): string => line({ question: `q${n}?`, answer: `work\n#### ${n}` });

// The real set lives beside the repository (../shared relative to the repo root).
const GSM8K_DIR = [
  fileURLToPath(new URL('../../../shared/data/gsm8k', import.meta.url)),
  fileURLToPath(new URL('../../shared/data/gsm8k', import.meta.url)),
].find((d) => fs.existsSync(path.join(d, 'train.jsonl')));
const NO_GSM8K = 'GSM8K not found at ../shared/data/gsm8k (relative to the repo root)';

describe('GSM8K loader', () => {
  it('loads the real training set: 7,473 problems, prompts as the reference builds them', async (t) => {
    if (GSM8K_DIR === undefined) return t.skip(NO_GSM8K);
    const train = await loadGsm8kJsonl(path.join(GSM8K_DIR, 'train.jsonl'));
    assert.equal(train.length, 7473);
    assert.equal(new Set(train.map((e) => e.id)).size, 7473);
    const first = train[0]!;
    assert.equal(first.id, 'train:1');
    assert.equal(first.answer, '72');
    const question = 'Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. ' +
      'How many clips did Natalia sell altogether in April and May?';
    assert.deepEqual(first.prompt, [
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: question },
    ]);
    assert.ok(first.solution!.endsWith('#### 72'));
    // Kept verbatim as in Unsloth's notebook: 82 answers have commas, so isdigit fails on them.
    assert.equal(train.filter((e) => !pyIsDigit(e.answer!)).length, 82);
    const stripped = await loadGsm8kJsonl(path.join(GSM8K_DIR, 'train.jsonl'), { stripCommasAndDollars: true });
    assert.deepEqual(stripped.filter((e) => !pyIsDigit(e.answer!)).map((e) => e.answer), ['-7', '-47', '-12']);
  });

  it('loads the real test set: 1,319 problems', async (t) => {
    if (GSM8K_DIR === undefined) return t.skip(NO_GSM8K);
    assert.equal((await loadGsm8kJsonl(path.join(GSM8K_DIR, 'test.jsonl'))).length, 1319);
  });

  it('stops reading at the limit', async () => {
    // Line 3 is garbage, but a limit of 2 never reaches it.
    const f = file(problem(1) + problem(2) + '{not json\n');
    assert.deepEqual((await loadGsm8kJsonl(f, { limit: 2 })).map((e) => e.answer), ['1', '2']);
    await assert.rejects(loadGsm8kJsonl(f), /:3: not valid JSON/);
  });

  it('accepts CRLF, a byte-order mark, blank lines and no final newline, counting lines from 1', async () => {
    const f = file('\ufeff' + problem(1).replace('\n', '\r\n') + '\n  \n' + problem(4).trimEnd());
    const ex = await loadGsm8kJsonl(f);
    assert.deepEqual(ex.map((e) => [e.id, e.answer]), [[`${path.basename(f, '.jsonl')}:1`, '1'], [`${path.basename(f, '.jsonl')}:4`, '4']]);
  });

  it('names the file and line of a bad line', async () => {
    const cases: [string, RegExp][] = [
      [problem(1) + '\n' + '{"question": "q"\n', /:3: not valid JSON/],
      [problem(1) + line({ question: 'q' }), /:2: answer: /],
      [problem(1) + line({ question: '', answer: '#### 1' }), /:2: question: question is empty/],
      [problem(1) + line({ question: 'q', answer: 'no final answer' }), /:2: answer: answer has no "####" final answer/],
      [line([1, 2]), /:1: .*object/],
    ];
    for (const [content, pattern] of cases) {
      const f = file(content);
      await assert.rejects(loadGsm8kJsonl(f), (e: unknown) => {
        assert.ok(e instanceof DataError, String(e));
        assert.ok(e.message.startsWith(f + ':'), e.message);
        assert.match(e.message, pattern);
        return true;
      });
    }
  });

  it('rejects invalid UTF-8, over-long lines, missing files and directories clearly', async () => {
    const badUtf8 = file(Buffer.concat([Buffer.from(problem(1)), Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a])]));
    await assert.rejects(loadGsm8kJsonl(badUtf8), /:2: not valid UTF-8/);
    const long = file(problem(1) + line({ question: 'x'.repeat(5000), answer: '#### 1' }));
    await assert.rejects(loadGsm8kJsonl(long, { maxLineBytes: 1000 }), /:2: line is longer than 1000 bytes/);
    // A line with no newline at all (a binary file, say) fails at the cap, not at the end of the file.
    const noNewline = file(Buffer.alloc(300_000, 0x61));
    await assert.rejects(loadGsm8kJsonl(noNewline, { maxLineBytes: 100_000 }), /:1: line is longer than 100000 bytes/);
    await assert.rejects(loadGsm8kJsonl(path.join(tmp, 'absent.jsonl')), /absent\.jsonl: no such file/);
    await assert.rejects(loadGsm8kJsonl(tmp), /not a regular file/);
  });

  it('reads lines that span read chunks', async () => {
    const big = Array.from({ length: 5 }, (_, i) => line({ question: 'y'.repeat(100_000 + i), answer: `#### ${i}` })).join('');
    const records = [];
    for await (const r of readJsonl(file(big))) records.push(r);
    assert.deepEqual(records.map((r) => r.line), [1, 2, 3, 4, 5]);
    assert.deepEqual(records.map((r) => ((r.value as { question: string }).question.length)), [100_000, 100_001, 100_002, 100_003, 100_004]);
  });
});

describe('chat JSONL loader', () => {
  const convo = (extra: object = {}) => ({
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello.', weight: 1 },
    ],
    ...extra,
  });

  it('loads conversations for SFT and prompts with answers for GRPO', async () => {
    const sft = await loadChatJsonl(file(line(convo()) + line(convo())), { purpose: 'sft' });
    assert.equal(sft.length, 2);
    assert.deepEqual(sft[0]!.prompt, convo().messages);
    const grpo = await loadChatJsonl(file(line({ messages: [{ role: 'user', content: '2+2?' }], answer: '4' })), { purpose: 'grpo' });
    assert.deepEqual(grpo[0]!.prompt, [{ role: 'user', content: '2+2?' }]);
    assert.equal(grpo[0]!.answer, '4');
  });

  it('names the file, line and field of a bad conversation', async () => {
    const bad = file(line(convo()) + line({ messages: [{ role: 'robot', content: 'x' }] }));
    await assert.rejects(loadChatJsonl(bad, { purpose: 'sft' }), (e: unknown) =>
      e instanceof DataError && e.line === 2 && e.message.startsWith(`${bad}:2: messages.0.role`));
    await assert.rejects(loadChatJsonl(file(line({ messages: [] })), { purpose: 'sft' }), /:1: messages: messages is empty/);
    await assert.rejects(loadChatJsonl(file(line({ messages: [{ role: 'user', content: 1 }] })), { purpose: 'grpo' }), /:1: messages\.0\.content/);
    await assert.rejects(loadChatJsonl(file(line({ prompt: 'x' })), { purpose: 'grpo' }), /:1: messages: /);
  });

  it('checks each conversation fits its purpose', async () => {
    const noReply = file(line({ messages: [{ role: 'user', content: 'Hi' }] }));
    await assert.rejects(loadChatJsonl(noReply, { purpose: 'sft' }), /:1: no assistant turn to train on/);
    const zeroWeight = file(line({ messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'x', weight: 0 }] }));
    await assert.rejects(loadChatJsonl(zeroWeight, { purpose: 'sft' }), /no assistant turn to train on/);
    await assert.rejects(loadChatJsonl(file(line(convo())), { purpose: 'grpo' }), /:1: last turn is an assistant reply/);
  });
});

describe('seeded order', () => {
  it('a permutation depends on the seed alone', () => {
    const a = permutation(100, 7);
    assert.deepEqual(a, permutation(100, 7));
    assert.notDeepEqual(a, permutation(100, 8));
    assert.deepEqual([...a].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i));
    assert.notDeepEqual(a, Array.from({ length: 100 }, (_, i) => i));
    assert.deepEqual(shuffled(['a', 'b', 'c', 'd'], 3), permutation(4, 3).map((i) => 'abcd'[i]));
    assert.deepEqual(permutation(0, 1), []);
  });

  const items = Array.from({ length: 10 }, (_, i) => i);

  it('visits every item once per epoch, in a different order each epoch', () => {
    const it = new EpochIterator(items, { seed: 1 });
    const e0 = it.take(10);
    assert.deepEqual(it.position, { epoch: 1, index: 0 });
    const e1 = it.take(10);
    assert.deepEqual([...e0].sort((a, b) => a - b), items);
    assert.deepEqual([...e1].sort((a, b) => a - b), items);
    assert.notDeepEqual(e0, e1);
    assert.deepEqual(new EpochIterator(items, { seed: 1 }).take(20), [...e0, ...e1]);
  });

  it('resumes exactly from a saved position, mid-epoch or at a boundary', () => {
    const whole = new EpochIterator(items, { seed: 42 }).take(35);
    for (const stop of [0, 3, 10, 17, 20, 29]) {
      const first = new EpochIterator(items, { seed: 42 });
      first.take(stop);
      const saved = JSON.parse(JSON.stringify(first.position));
      const resumed = new EpochIterator(items, { seed: 42, start: saved });
      assert.deepEqual([...whole.slice(0, stop), ...resumed.take(35 - stop)], whole, `stopped after ${stop}`);
    }
    // { epoch: 0, index: 10 } is the end of epoch 0, the same place as { epoch: 1, index: 0 }.
    assert.deepEqual(new EpochIterator(items, { seed: 42, start: { epoch: 0, index: 10 } }).take(5), whole.slice(10, 15));
  });

  it('walks in file order without shuffling, and refuses bad positions and empty data', () => {
    assert.deepEqual(new EpochIterator(['a', 'b', 'c'], { seed: 1, shuffle: false }).take(5), ['a', 'b', 'c', 'a', 'b']);
    assert.throws(() => new EpochIterator(items, { seed: 1, start: { epoch: 0, index: 11 } }), /past the end of a 10-item dataset/);
    assert.throws(() => new EpochIterator(items, { seed: 1, start: { epoch: -1, index: 0 } }));
    assert.throws(() => new EpochIterator(items, { seed: 1, start: { epoch: 0, index: 1.5 } }));
    assert.throws(() => new EpochIterator([], { seed: 1 }), /empty dataset/);
  });
});

describe('synthetic arithmetic set', () => {
  const turns = (ex: Example): readonly { role: string; content: string }[] => {
    assert.ok(typeof ex.prompt !== 'string');
    return ex.prompt;
  };
  // Checks a problem's worked steps: each "<<a op b=c>>" is right, and the last c is the answer.
  function checkWork(ex: Example): number {
    const steps = [...ex.solution!.matchAll(/<<(\d+)([-+*])(\d+)=(\d+)>>/g)];
    assert.ok(steps.length > 0, ex.solution);
    for (const [, a, op, b, c] of steps) {
      const [x, y] = [Number(a), Number(b)];
      assert.equal(Number(c), op === '+' ? x + y : op === '-' ? x - y : x * y, ex.solution);
    }
    assert.equal(ex.answer, steps.at(-1)![4]);
    assert.ok(pyIsDigit(ex.answer!));
    return Number(ex.answer);
  }

  it('is reproducible from its seed, and problem i does not depend on the count', () => {
    const a = syntheticExamples({ count: 50, seed: 3 });
    assert.deepEqual(a, syntheticExamples({ count: 50, seed: 3 }));
    assert.deepEqual(a.slice(0, 10), syntheticExamples({ count: 10, seed: 3 }));
    assert.notDeepEqual(a, syntheticExamples({ count: 50, seed: 4 }));
    assert.equal(new Set(a.map((e) => e.id)).size, 50);
  });

  it('defaults to single-digit sums a tiny model can learn, in GSM8K format', () => {
    for (const ex of syntheticExamples({ count: 200, seed: 11 })) {
      const question = turns(ex)[1]!.content;
      const [a, b] = [...question.matchAll(/\d+/g)].map((m) => Number(m[0]));
      assert.ok(a! >= 1 && a! <= 9 && b! >= 1 && b! <= 9, question);
      assert.equal(checkWork(ex), a! + b!);
      assert.match(ex.solution!, /\n#### \d+$/);
      assert.equal(turns(ex)[0]!.content, SYSTEM_PROMPT);
    }
  });

  it('gets harder by name, and every answer is a whole number the rewards can match', async () => {
    for (const name of Object.keys(DIFFICULTIES) as DifficultyName[]) {
      const examples = syntheticExamples({ count: 100, seed: 5, difficulty: name });
      const answers = examples.map(checkWork);
      assert.ok(answers.every((n) => Number.isSafeInteger(n) && n >= 0), name);
      const steps = examples[0]!.solution!.match(/<</g)!.length;
      assert.equal(steps, DIFFICULTIES[name].steps, name);
      const batch = examples.map((example) => ({ prompt: '', completion: xmlCot('r', example.answer!), example }));
      const { totals } = await createRewardRegistry().scoreCompletions(GSM8K_REWARDS, batch);
      assert.deepEqual(totals, new Array(100).fill(3.5), name);
    }
  });

  it('takes a custom difficulty and refuses a bad one', () => {
    const ex = syntheticExamples({ count: 20, seed: 1, difficulty: { operations: ['*'], steps: 1, maxOperand: 5, maxMultiplier: 3 } });
    for (const e of ex) assert.ok(Number(e.answer) <= 15);
    assert.throws(() => syntheticExamples({ count: 1, seed: 1, difficulty: 'impossible' as DifficultyName }), /unknown difficulty "impossible"/);
    assert.throws(() => syntheticExamples({ count: 1, seed: 1, difficulty: { operations: [], steps: 1, maxOperand: 9 } }), /at least one operation/);
    assert.throws(() => syntheticExamples({ count: -1, seed: 1 }), /whole number/);
  });
});
