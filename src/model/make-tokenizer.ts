// Trains a small byte-level BPE tokenizer in Qwen2's exact file format, for the models that
// `tandem make-model` writes: tokenizer.json and tokenizer_config.json load unchanged in
// @huggingface/tokenizers here and in Python's tokenizers / transformers AutoTokenizer.
//
// Ids: 0..255 are the byte alphabet, then one id per learned merge, then the special tokens
// <|endoftext|> (pad), <|im_start|>, <|im_end|> (eos), in Qwen's order.
import { Tokenizer } from '@huggingface/tokenizers';
import { BPE_CORPUS } from './bpe-corpus.ts';
import { BYTE_ALPHABET_IN_VOCAB_ORDER } from './detokenizer.ts';

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>'] as const;

// Qwen2's pre-tokenizer split: contractions, letters with one leading non-letter, single
// digits, punctuation runs, newlines, spaces. Byte for byte the Regex of Qwen2/2.5/3's tokenizer.json.
const QWEN_SPLIT_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// A ChatML template in the style of Qwen2.5's, without its default system prompt or tools.
export const CHATML_TEMPLATE = `{%- for message in messages %}
    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
`;

export interface ByteLevelBpe {
  tokenizerJson: object;
  tokenizerConfig: object;
  chatTemplate: string;
  specialTokens: string[];
}

export interface ByteLevelBpeOptions {
  /** Total ids, special tokens included. At least 259 (256 bytes + 3 specials). */
  vocabSize: number;
  /** Text to learn merges from; defaults to the built-in BPE_CORPUS. */
  corpus?: string;
  /** tokenizer_config.json model_max_length; defaults to 32768. */
  modelMaxLength?: number;
}

/** Deterministic: the same options give byte-identical JSON. */
export function buildByteLevelBpe(opts: ByteLevelBpeOptions): ByteLevelBpe {
  const { vocabSize, corpus = BPE_CORPUS, modelMaxLength = 32768 } = opts;
  const minimum = BYTE_ALPHABET_IN_VOCAB_ORDER.length + SPECIAL_TOKENS.length;
  if (!Number.isInteger(vocabSize) || vocabSize < minimum || vocabSize > MAX_TOKENS) {
    throw new Error(`make-tokenizer: vocabSize must be an integer from ${minimum} to ${MAX_TOKENS}, got ${vocabSize}`);
  }
  const skeleton = tokenizerJson(new Map(BYTE_ALPHABET_IN_VOCAB_ORDER.map((t, i) => [t, i])), [], 256);
  const words = countWords(corpus, skeleton);
  const { tokens, merges } = learnMerges(words, BYTE_ALPHABET_IN_VOCAB_ORDER, vocabSize - SPECIAL_TOKENS.length);
  const vocab = new Map(tokens.map((t, i) => [t, i]));
  const chatTemplate = CHATML_TEMPLATE;
  return {
    tokenizerJson: tokenizerJson(vocab, merges, tokens.length),
    tokenizerConfig: tokenizerConfig(tokens.length, chatTemplate, modelMaxLength),
    chatTemplate,
    specialTokens: [...SPECIAL_TOKENS],
  };
}

// --- files -----------------------------------------------------------------------------

const BYTE_LEVEL = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false };

function tokenizerJson(vocab: Map<string, number>, merges: [string, string][], firstSpecialId: number): object {
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((content, i) => ({
      id: firstSpecialId + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: QWEN_SPLIT_REGEX }, behavior: 'Isolated', invert: false },
        BYTE_LEVEL,
      ],
    },
    post_processor: BYTE_LEVEL,
    decoder: BYTE_LEVEL,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      // Pairs, as tokenizers >= 0.20 writes them (Qwen3's file too); the older "a b" strings
      // also load, but pairs cannot be misread whatever a token contains.
      merges,
    },
  };
}

function tokenizerConfig(firstSpecialId: number, chatTemplate: string, modelMaxLength: number): object {
  const addedTokensDecoder = Object.fromEntries(
    SPECIAL_TOKENS.map((content, i) => [
      String(firstSpecialId + i),
      { content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
    ]),
  );
  return {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedTokensDecoder,
    additional_special_tokens: ['<|im_start|>', '<|im_end|>'],
    bos_token: null,
    chat_template: chatTemplate,
    clean_up_tokenization_spaces: false,
    eos_token: '<|im_end|>',
    errors: 'replace',
    model_max_length: modelMaxLength,
    pad_token: '<|endoftext|>',
    split_special_tokens: false,
    tokenizer_class: 'Qwen2Tokenizer',
    unk_token: null,
  };
}

// --- training --------------------------------------------------------------------------

// Pre-tokenizes with the very normalizer and pre-tokenizer the finished file will use (via
// @huggingface/tokenizers), so merges are learned on the pieces encoding will see. Special
// tokens are cut out first, as encoding does, so no merges are spent on '<|im_start|>'.
function countWords(corpus: string, skeleton: object): Map<string, number> {
  const tok = new Tokenizer(skeleton, {});
  const counts = new Map<string, number>();
  for (const section of corpus.split(/<\|endoftext\|>|<\|im_start\|>|<\|im_end\|>/)) {
    const normalized = tok.normalizer ? tok.normalizer.normalize(section) : section;
    const pieces = tok.pre_tokenizer ? tok.pre_tokenizer.pre_tokenize(normalized) : [normalized];
    for (const piece of pieces) counts.set(piece, (counts.get(piece) ?? 0) + 1);
  }
  return counts;
}

const MAX_TOKENS = 1 << 20; // ids fit 20 bits, so a pair packs into one exact number key
const pairKey = (a: number, b: number) => a * MAX_TOKENS + b;

/**
 * Classic BPE training: repeatedly merge the most frequent adjacent pair. Pair counts are
 * updated only for the words that contain the merged pair (found through an index from
 * pair to words), and the best pair comes from a max-heap with lazy deletion, so each merge
 * costs about the length of the words it touches. Ties go to the pair of smaller ids.
 */
function learnMerges(
  wordCounts: Map<string, number>,
  alphabet: readonly string[],
  targetSize: number,
): { tokens: string[]; merges: [string, string][] } {
  const tokens = [...alphabet];
  const idOf = new Map(tokens.map((t, i) => [t, i]));
  const words: number[][] = [];
  const freq: number[] = [];
  for (const [word, count] of wordCounts) {
    words.push(Array.from(word, (ch) => idOf.get(ch)!));
    freq.push(count);
  }

  const counts = new Map<number, number>();
  const wordsWith = new Map<number, Set<number>>();
  const bump = (key: number, delta: number, w: number) => {
    const n = (counts.get(key) ?? 0) + delta;
    if (n === 0) counts.delete(key);
    else counts.set(key, n);
    if (delta > 0) {
      let set = wordsWith.get(key);
      if (!set) wordsWith.set(key, (set = new Set()));
      set.add(w);
    }
  };
  words.forEach((syms, w) => {
    for (let i = 0; i + 1 < syms.length; i++) bump(pairKey(syms[i], syms[i + 1]), freq[w], w);
  });
  const heap = new PairHeap();
  for (const [key, count] of counts) heap.push(count, key);

  const merges: [string, string][] = [];
  const mergedPairs = new Set<number>();
  while (tokens.length < targetSize) {
    const top = heap.pop();
    if (top === undefined) {
      throw new Error(
        `make-tokenizer: the corpus runs out of pairs to merge at ${tokens.length} tokens ` +
          `(${tokens.length + SPECIAL_TOKENS.length} with specials); ask for a smaller vocabSize or give a larger corpus`,
      );
    }
    const current = counts.get(top.key) ?? 0;
    if (current !== top.count) {
      // Stale entry. A higher current count already has its own entry; a lower one needs one.
      if (current > 0 && current < top.count) heap.push(current, top.key);
      continue;
    }
    const a = Math.floor(top.key / MAX_TOKENS);
    const b = top.key % MAX_TOKENS;
    const text = tokens[a] + tokens[b];
    // Two different merges can spell the same token ('ab'+'c', 'a'+'bc'): reuse its id.
    let merged = idOf.get(text);
    if (merged === undefined) {
      merged = tokens.length;
      tokens.push(text);
      idOf.set(text, merged);
    }
    if (!mergedPairs.has(top.key)) {
      mergedPairs.add(top.key);
      merges.push([tokens[a], tokens[b]]);
    }

    const countBefore = new Map<number, number>();
    const change = (key: number, delta: number, w: number) => {
      if (!countBefore.has(key)) countBefore.set(key, counts.get(key) ?? 0);
      bump(key, delta, w);
    };
    for (const w of wordsWith.get(top.key) ?? []) {
      const syms = words[w];
      const next = mergePair(syms, a, b, merged);
      if (next === syms) continue; // the index is lazy: this word lost the pair earlier
      for (let i = 0; i + 1 < syms.length; i++) change(pairKey(syms[i], syms[i + 1]), -freq[w], w);
      for (let i = 0; i + 1 < next.length; i++) change(pairKey(next[i], next[i + 1]), freq[w], w);
      words[w] = next;
    }
    wordsWith.delete(top.key);
    for (const [key, before] of countBefore) {
      const now = counts.get(key) ?? 0;
      if (now > before) heap.push(now, key);
    }
  }
  return { tokens, merges };
}

/** Replaces each non-overlapping (a, b), left to right; returns the same array if none. */
function mergePair(syms: number[], a: number, b: number, merged: number): number[] {
  let out: number[] | null = null;
  for (let i = 0; i < syms.length; i++) {
    if (syms[i] === a && i + 1 < syms.length && syms[i + 1] === b) {
      out ??= syms.slice(0, i);
      out.push(merged);
      i++;
    } else if (out) {
      out.push(syms[i]);
    }
  }
  return out ?? syms;
}

/** Max-heap of (count, pair key): higher count first, then smaller key, so ties are deterministic. */
class PairHeap {
  readonly #counts: number[] = [];
  readonly #keys: number[] = [];

  push(count: number, key: number): void {
    this.#counts.push(count);
    this.#keys.push(key);
    let i = this.#counts.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#above(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  pop(): { count: number; key: number } | undefined {
    const n = this.#counts.length;
    if (n === 0) return undefined;
    const top = { count: this.#counts[0], key: this.#keys[0] };
    this.#swap(0, n - 1);
    this.#counts.pop();
    this.#keys.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < n - 1 && this.#above(l, best)) best = l;
      if (r < n - 1 && this.#above(r, best)) best = r;
      if (best === i) break;
      this.#swap(i, best);
      i = best;
    }
    return top;
  }

  #above(i: number, j: number): boolean {
    const ci = this.#counts[i];
    const cj = this.#counts[j];
    return ci > cj || (ci === cj && this.#keys[i] < this.#keys[j]);
  }

  #swap(i: number, j: number): void {
    [this.#counts[i], this.#counts[j]] = [this.#counts[j], this.#counts[i]];
    [this.#keys[i], this.#keys[j]] = [this.#keys[j], this.#keys[i]];
  }
}
