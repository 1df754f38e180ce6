/**
 * Print Tandem's token ids and chat-template rendering for a model dir as JSON, for
 * bench/peer/hf_tokenizer.py to compare with transformers' AutoTokenizer.
 * Usage: node --import tsx bench/peer/encode.ts MODEL_DIR > ours.json
 */
import { TextTokenizer } from '../../src/model/tokenizer.ts';

export const TEXTS = [
  'Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.',
  '  leading spaces,\ttabs\nand newlines\n\n',
  'emoji 👩‍👩‍👧 and CJK 你好，世界 and accents: café naïve',
  "numbers 1234567 3.14159 and code: for (let i = 0; i < n; i++) { x += i; }",
  '<|im_start|>user\nhi<|im_end|>',
];

const dir = process.argv[2];
if (!dir) throw new Error('usage: encode.ts MODEL_DIR');
const tok = TextTokenizer.load(dir);
const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'What is 2+2?' },
  { role: 'assistant', content: '4' },
  { role: 'user', content: 'And 3+3?' },
];
process.stdout.write(
  JSON.stringify({
    texts: TEXTS,
    ids: TEXTS.map((t) => tok.encode(t)),
    messages,
    chat: tok.applyChatTemplate(messages, { addGenerationPrompt: true }),
  }) + '\n',
);
