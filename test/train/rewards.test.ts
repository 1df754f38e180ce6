import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  correctnessReward,
  extractHashAnswer,
  extractXmlAnswer,
  intReward,
  pyIsDigit,
  pyLen,
  pyStrip,
  softFormatReward,
  strictFormatReward,
  xmlCountReward,
} from '../../src/train/rewards.ts';
import {
  createRewardRegistry,
  getReward,
  GSM8K_REWARDS,
  listRewards,
  registerReward,
  RewardError,
  RewardRegistry,
  scoreCompletions,
  type RewardInput,
} from '../../src/train/reward-registry.ts';
import { gsm8kExample, readJsonl, type Example } from '../../src/train/data.ts';
import { SYSTEM_PROMPT, xmlCot } from '../../src/train/prompts.ts';

// A completion in exactly the shape the recipe asks for.
const CANON = '<reasoning>\nr\n</reasoning>\n<answer>\n7\n</answer>\n';
const example: Example = { id: 'ex:1', prompt: 'q', answer: '7' };
const input = (completion: string, ex: Example = example): RewardInput => ({ prompt: 'q', completion, example: ex });

describe('Python string semantics', () => {
  it('strip uses Python whitespace: \\x85 and \\x1c go, \\ufeff stays', () => {
    assert.equal(pyStrip(' \t\n\x85\x1c42\u3000\r'), '42');
    assert.equal(pyStrip('\ufeff42'), '\ufeff42');
  });
  it('isdigit: empty, signs, separators and points are not digits; Unicode digits are', () => {
    for (const s of ['', '-3', '+3', '1,080', '1.5', '4 2', ' 7', '7\n', 'x']) assert.equal(pyIsDigit(s), false, JSON.stringify(s));
    for (const s of ['0', '042', '٣', '²', '①', '１２']) assert.equal(pyIsDigit(s), true, JSON.stringify(s));
  });
  it('len counts code points', () => {
    assert.equal(pyLen('a😀'), 2);
    assert.equal('a😀'.length, 3);
  });
});

describe('answer extraction', () => {
  it('takes the text after the last <answer>, before the next </answer>, stripped', () => {
    assert.equal(extractXmlAnswer('<answer>1</answer> <answer>\n 2 \n</answer> tail'), '2');
    assert.equal(extractXmlAnswer('<answer> 3 '), '3');
    assert.equal(extractXmlAnswer('no tags at all '), 'no tags at all');
    assert.equal(extractXmlAnswer(''), '');
  });
  it('takes the text after "####", stripped, or null', () => {
    assert.equal(extractHashAnswer('steps\n#### 72'), '72');
    assert.equal(extractHashAnswer('#### 1,080 '), '1,080');
    assert.equal(extractHashAnswer('no final answer'), null);
    // split("####")[1]: the piece up to a second "####".
    assert.equal(extractHashAnswer('#### 5 #### 6'), '5');
  });
});

describe('gsm8k rewards', () => {
  it('correctness: 2.0 only for an exact string match', () => {
    assert.equal(correctnessReward(CANON, '7'), 2.0);
    assert.equal(correctnessReward('<answer> 7 </answer>', '7'), 2.0);
    assert.equal(correctnessReward(CANON, '7.0'), 0.0);
    assert.equal(correctnessReward('<answer>7.0</answer>', '7'), 0.0);
    assert.equal(correctnessReward('<answer>$7</answer>', '7'), 0.0);
    // No gold answer (Python: r == None) never matches, not even an empty answer.
    assert.equal(correctnessReward('<answer></answer>', undefined), 0.0);
  });

  it('int: 0.5 when the extracted answer isdigit()', () => {
    assert.equal(intReward(CANON), 0.5);
    assert.equal(intReward('<answer>-3</answer>'), 0.0);
    assert.equal(intReward('<answer></answer>'), 0.0);
    assert.equal(intReward('<answer>1,080</answer>'), 0.0);
    assert.equal(intReward('<answer>²</answer>'), 0.5);
    assert.equal(intReward(' 42\n'), 0.5, 'no tags: the whole text is the answer');
    assert.equal(intReward('just 42'), 0.0);
  });

  it('strict format: one line each, anchored at the start, $ before at most one final newline', () => {
    assert.equal(strictFormatReward(CANON), 0.5);
    assert.equal(strictFormatReward('<reasoning>\n\n</reasoning>\n<answer>\n\n</answer>\n'), 0.5, 'empty lines are fine');
    assert.equal(strictFormatReward(CANON + '\n'), 0.5, "$ matches before a final '\\n'");
    assert.equal(strictFormatReward(CANON + '\n\n'), 0.0);
    assert.equal(strictFormatReward(CANON.slice(0, -1)), 0.0, 'the pattern itself ends in \\n');
    assert.equal(strictFormatReward(CANON + 'x'), 0.0);
    assert.equal(strictFormatReward(' ' + CANON), 0.0);
    assert.equal(strictFormatReward('<reasoning>\nline 1\nline 2\n</reasoning>\n<answer>\n7\n</answer>\n'), 0.0, 'no DOTALL');
    assert.equal(strictFormatReward('<reasoning>\r\nr\r\n</reasoning>\r\n<answer>\r\n7\r\n</answer>\r\n'), 0.0);
    // Python's . matches \r and \u2028 (JavaScript's would not).
    assert.equal(strictFormatReward('<reasoning>\na\rb\u2028c\n</reasoning>\n<answer>\n7\n</answer>\n'), 0.5);
  });

  it('soft format: anchored at the start only, no newline inside the elements', () => {
    assert.equal(softFormatReward('<reasoning>r</reasoning>\n<answer>7</answer>'), 0.5);
    assert.equal(softFormatReward('<reasoning>r</reasoning><answer>7</answer> and then anything\n'), 0.5, 'trailing text is ignored');
    assert.equal(softFormatReward('<reasoning>r</reasoning> \n\t\x85 <answer>7</answer>'), 0.5, '\\s is Python whitespace');
    assert.equal(softFormatReward('<reasoning>r</reasoning>\ufeff<answer>7</answer>'), 0.0, '\\ufeff is not Python whitespace');
    assert.equal(softFormatReward('x<reasoning>r</reasoning><answer>7</answer>'), 0.0, 're.match anchors at the start');
    assert.equal(softFormatReward('<reasoning>r</reasoning>so<answer>7</answer>'), 0.0);
    assert.equal(softFormatReward('<reasoning>a\rb\u2028</reasoning><answer>7</answer>'), 0.5, "Python's . matches \\r and \\u2028");
    // The reference's quirk: its own multi-line format fails the soft check (unslothai/unsloth#1761).
    assert.equal(softFormatReward(CANON), 0.0);
  });

  it('xmlcount: 0.125 per tag, 0.001 per trailing character, values as CPython computes them', () => {
    assert.equal(xmlCountReward(CANON), 0.5);
    assert.equal(xmlCountReward(''), 0.0);
    // "abc" after the answer: -3*0.001 twice (len("abc") and len("\nabc") - 1).
    assert.equal(xmlCountReward(CANON + 'abc'), 0.494);
    // Code points, not UTF-16 units: one emoji costs 0.001, not 0.002.
    assert.equal(xmlCountReward(CANON + '😀'), 0.498);
    // No final '\n': "\n</answer>\n" is absent, so split leaves the whole 47-character text as
    // the "tail" (-0.047), while the last term gains (0 - 1) * -0.001 = +0.001.
    assert.equal(xmlCountReward(CANON.slice(0, -1)), 0.454);
    // A duplicated "<reasoning>\n" loses its 0.125.
    assert.equal(xmlCountReward('<reasoning>\n' + CANON), 0.375);
    // "\n</answer>" twice: no last term; split("\n</answer>\n") splits left to right without
    // overlap, so the tail is "</answer>\n" (10 characters), not the empty string.
    assert.equal(xmlCountReward(CANON + '</answer>\n'), 0.365);
    // Unbounded below, as in the reference.
    assert.equal(xmlCountReward(CANON + 'x'.repeat(400)), -0.30000000000000004);
  });
});

describe('reward registry', () => {
  it('has the five built-ins and looks them up by name', async () => {
    const names = listRewards().map((r) => r.name);
    for (const { name } of GSM8K_REWARDS) assert.ok(names.includes(name), name);
    assert.equal(await getReward('gsm8k_correctness').fn(input(CANON)), 2.0);
  });

  it('names what is registered when a name is unknown', () => {
    assert.throws(() => getReward('gsm8k_corectness'), /no reward named "gsm8k_corectness"; registered: .*gsm8k_correctness/);
  });

  it('refuses duplicates unless asked to replace, and bad names', () => {
    const r = new RewardRegistry();
    r.register('mine', () => 1);
    assert.throws(() => r.register('mine', () => 2), /already registered.*replace: true/);
    r.register('mine', () => 2, { replace: true, description: 'two' });
    assert.deepEqual(r.list(), [{ name: 'mine', description: 'two' }]);
    assert.throws(() => r.register('has space', () => 1), /not valid/);
    assert.throws(() => r.register('', () => 1), /not valid/);
  });

  it('turns a throwing or non-finite reward into an error naming the reward and example', async () => {
    const r = new RewardRegistry();
    r.register('throws', () => {
      throw new Error('boom');
    });
    r.register('rejects', async () => Promise.reject(new Error('async boom')));
    r.register('nan', () => NaN);
    r.register('inf', () => -Infinity);
    r.register('string', (() => '1') as unknown as () => number);
    r.register('nothing', (() => undefined) as unknown as () => number);
    await assert.rejects(r.score('throws', input('x')), (e: unknown) =>
      e instanceof RewardError && e.reward === 'throws' && /reward "throws" threw on example ex:1: boom/.test(e.message));
    await assert.rejects(r.score('rejects', input('x')), /reward "rejects" threw on example ex:1: async boom/);
    await assert.rejects(r.score('nan', input('x')), /reward "nan" returned NaN on example ex:1; a reward must be a finite number/);
    await assert.rejects(r.score('inf', input('x')), /reward "inf" returned -Infinity/);
    await assert.rejects(r.score('string', input('x')), /reward "string" returned string "1"/);
    await assert.rejects(r.score('nothing', input('x')), /reward "nothing" returned undefined/);
  });

  it('scores a batch: weighted totals and unweighted per-reward values, sync and async alike', async () => {
    const r = createRewardRegistry();
    r.register('len', async ({ completion }) => completion.length);
    const batch = [input(CANON), input('<answer>8</answer>')];
    const scores = await r.scoreCompletions([{ name: 'gsm8k_correctness', weight: 0.5 }, { name: 'len' }], batch);
    assert.deepEqual(scores.perReward, { gsm8k_correctness: [2, 0], len: [CANON.length, 18] });
    assert.deepEqual(scores.totals, [1 + CANON.length, 18]);
  });

  it('rejects empty, duplicated, unknown or badly weighted reward lists', async () => {
    const r = createRewardRegistry();
    const batch = [input(CANON)];
    await assert.rejects(r.scoreCompletions([], batch), /no rewards given/);
    await assert.rejects(r.scoreCompletions([{ name: 'gsm8k_int' }, { name: 'gsm8k_int' }], batch), /listed twice/);
    await assert.rejects(r.scoreCompletions([{ name: 'nope' }], batch), /no reward named "nope"/);
    await assert.rejects(r.scoreCompletions([{ name: 'gsm8k_int', weight: NaN }], batch));
  });

  it('the process-wide registry takes user rewards', async () => {
    registerReward('test_rewards_always_one', () => 1, { description: 'test' });
    const scores = await scoreCompletions([{ name: 'test_rewards_always_one', weight: 3 }], [input('x')]);
    assert.deepEqual(scores.totals, [3]);
  });
});

describe('real GSM8K answers', () => {
  const file = [
    fileURLToPath(new URL('../../../shared/data/gsm8k/train.jsonl', import.meta.url)),
    fileURLToPath(new URL('../../shared/data/gsm8k/train.jsonl', import.meta.url)),
  ].find((f) => fs.existsSync(f));

  it('a gold completion of each of the first 50 problems scores 3.5 of the reference rewards', async (t) => {
    if (file === undefined) return t.skip('GSM8K not found at ../shared/data/gsm8k (relative to the repo root)');
    const batch: RewardInput[] = [];
    for await (const { line, value } of readJsonl(file, { limit: 50 })) {
      const ex = gsm8kExample(`train:${line}`, value as { question: string; answer: string });
      assert.ok(pyIsDigit(ex.answer!), `line ${line}: ${ex.answer}`);
      // The worked solution on one line, as the strict format wants.
      const reasoning = ex.solution!.split('####')[0]!.trim().replaceAll('\n', ' ');
      batch.push({ prompt: SYSTEM_PROMPT, completion: xmlCot(reasoning, ex.answer!), example: ex });
    }
    assert.equal(batch.length, 50);
    const { totals, perReward } = await createRewardRegistry().scoreCompletions(GSM8K_REWARDS, batch);
    assert.deepEqual(perReward.gsm8k_correctness, new Array(50).fill(2.0));
    assert.deepEqual(perReward.gsm8k_int, new Array(50).fill(0.5));
    assert.deepEqual(perReward.gsm8k_strict_format, new Array(50).fill(0.5));
    assert.deepEqual(perReward.gsm8k_xmlcount, new Array(50).fill(0.5));
    // Not 0.5: the soft pattern has no DOTALL, so the recipe's own newlines fail it.
    assert.deepEqual(perReward.gsm8k_soft_format, new Array(50).fill(0.0));
    assert.deepEqual(totals, new Array(50).fill(3.5));

    // The single-line form earns the soft reward instead of the strict one.
    const oneLine = batch.map((b) => ({ ...b, completion: `<reasoning>r</reasoning>\n<answer>${b.example.answer}</answer>` }));
    const soft = await createRewardRegistry().scoreCompletions(GSM8K_REWARDS, oneLine);
    assert.deepEqual(soft.perReward.gsm8k_soft_format, new Array(50).fill(0.5));
    assert.deepEqual(soft.perReward.gsm8k_strict_format, new Array(50).fill(0.0));
    assert.deepEqual(soft.perReward.gsm8k_correctness, new Array(50).fill(2.0));

    // A wrong answer loses exactly the correctness reward.
    const wrong = batch.map((b) => ({ ...b, completion: xmlCot('r', String(Number(b.example.answer) + 1)) }));
    const w = await createRewardRegistry().scoreCompletions(GSM8K_REWARDS, wrong);
    assert.deepEqual(w.totals, new Array(50).fill(1.5));
  });
});
