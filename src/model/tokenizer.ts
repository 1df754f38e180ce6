// A model's tokenizer as one object: text <-> ids (tokenizer.json, through
// @huggingface/tokenizers), the special ids the engine needs (eos, bos, pad), the chat
// template, and streaming detokenizers.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { z } from 'zod';
import { ChatTemplate } from './chat-template.ts';
import type { ChatMessage, RenderOptions } from './chat-template.ts';
import { IncrementalDetokenizer, byteLevelTokenBytes } from './detokenizer.ts';

// A special token in tokenizer_config.json is a string, or (older files) an AddedToken object.
const SpecialTokenField = z.union([z.string(), z.looseObject({ content: z.string() }), z.null()]).optional();

const TokenizerConfigSchema = z.looseObject({
  bos_token: SpecialTokenField,
  eos_token: SpecialTokenField,
  pad_token: SpecialTokenField,
  clean_up_tokenization_spaces: z.boolean().optional(),
  chat_template: z
    .union([z.string(), z.array(z.looseObject({ name: z.string(), template: z.string() }))])
    .nullable()
    .optional(),
});
type TokenizerConfig = z.infer<typeof TokenizerConfigSchema>;

// Only the parts read here; @huggingface/tokenizers checks the rest when it builds the tokenizer.
const TokenizerJsonSchema = z.looseObject({
  // vocab is checked by vocabSizeOf: a schema would copy all 151k entries.
  model: z.looseObject({
    vocab: z.custom<Record<string, unknown> | unknown[]>((v) => typeof v === 'object' && v !== null, 'expected an object or array'),
  }),
  added_tokens: z
    .array(z.looseObject({ id: z.number().int().nonnegative(), content: z.string(), special: z.boolean().optional() }))
    .nullable()
    .optional(),
  decoder: z.looseObject({ type: z.string() }).nullable().optional(),
});
type TokenizerJson = z.infer<typeof TokenizerJsonSchema>;

// config.json and generation_config.json: eos_token_id is an int or a list (Qwen2.5-Instruct's
// generation_config lists both <|im_end|> and <|endoftext|>).
const EosSchema = z.looseObject({
  eos_token_id: z.union([z.number().int(), z.array(z.number().int()), z.null()]).optional(),
});

const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();

interface Parts {
  json: unknown;
  config: unknown;
  template?: { source: string; name: string };
  extraEosIds: readonly number[];
  /** Where the tokenizer came from, for error messages: a folder, or 'tokenizer objects'. */
  origin: string;
}

export class TextTokenizer {
  /** Max id + 1 over the model vocab and the added tokens. */
  readonly vocabSize: number;
  /** The tokenizer's eos first, then the ones config.json / generation_config.json add. */
  readonly eosTokenIds: readonly number[];
  readonly bosTokenId: number | null;
  readonly padTokenId: number | null;
  readonly hasChatTemplate: boolean;

  readonly #hf: Tokenizer;
  readonly #origin: string;
  readonly #template: ChatTemplate | null;
  readonly #addedIds: ReadonlySet<number>;
  readonly #specialIds: ReadonlySet<number>;
  readonly #cleanUpSpaces: boolean;
  readonly #byteLevel: boolean;
  readonly #bytesCache: (Uint8Array | undefined)[];

  /**
   * Loads a Hugging Face model folder: tokenizer.json (required), tokenizer_config.json,
   * the chat template (chat_template.jinja, else tokenizer_config.json's chat_template), and
   * extra eos ids from generation_config.json and config.json.
   */
  static load(dir: string): TextTokenizer {
    const jsonPath = join(dir, 'tokenizer.json');
    if (!existsSync(jsonPath)) {
      throw new Error(`${dir}: no tokenizer.json; a model folder needs the tokenizer.json that Hugging Face tokenizers write`);
    }
    const json = readJson(jsonPath);
    const config = readJsonIfPresent(join(dir, 'tokenizer_config.json')) ?? {};
    const extraEosIds = [
      ...eosIdsIn(join(dir, 'generation_config.json')),
      ...eosIdsIn(join(dir, 'config.json')),
    ];
    const jinjaPath = join(dir, 'chat_template.jinja');
    const template = existsSync(jinjaPath)
      ? { source: readFileSync(jinjaPath, 'utf8'), name: jinjaPath }
      : undefined;
    return new TextTokenizer({ json, config, template, extraEosIds, origin: dir });
  }

  /**
   * Builds a tokenizer from parsed tokenizer.json and tokenizer_config.json. Without
   * `chatTemplate`, tokenizer_config's chat_template (if any) is used.
   */
  static fromObjects(
    tokenizerJson: object,
    tokenizerConfig: object,
    chatTemplate?: string,
    extraEosIds: number[] = [],
  ): TextTokenizer {
    const template = chatTemplate === undefined ? undefined : { source: chatTemplate, name: 'chat template' };
    return new TextTokenizer({
      json: tokenizerJson,
      config: tokenizerConfig,
      template,
      extraEosIds,
      origin: 'tokenizer objects',
    });
  }

  private constructor(parts: Parts) {
    const origin = parts.origin;
    this.#origin = origin;
    const json = parse(TokenizerJsonSchema, parts.json, `${origin}: tokenizer.json`);
    const config = parse(TokenizerConfigSchema, parts.config, `${origin}: tokenizer_config.json`);
    const addedTokens = json.added_tokens ?? [];

    try {
      // The library wants every top-level section present, as Python writes them (null if unused).
      this.#hf = new Tokenizer(
        { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, ...json, added_tokens: addedTokens },
        config,
      );
    } catch (err) {
      throw new Error(`${origin}: tokenizer.json could not be built: ${messageOf(err)}`, { cause: err });
    }

    this.vocabSize = vocabSizeOf(json, origin);
    this.#addedIds = new Set(addedTokens.map((t) => t.id));
    this.#specialIds = new Set(addedTokens.filter((t) => t.special === true).map((t) => t.id));
    this.#cleanUpSpaces = config.clean_up_tokenization_spaces ?? false;
    this.#byteLevel = json.decoder?.type === 'ByteLevel';
    this.#bytesCache = new Array<Uint8Array | undefined>(this.vocabSize);

    const bosToken = tokenText(config.bos_token);
    const eosToken = tokenText(config.eos_token);
    this.bosTokenId = this.#specialId(bosToken, 'bos_token');
    this.padTokenId = this.#specialId(tokenText(config.pad_token), 'pad_token');
    const eosId = this.#specialId(eosToken, 'eos_token');
    this.eosTokenIds = [...new Set([...(eosId === null ? [] : [eosId]), ...parts.extraEosIds])];

    const template = parts.template ?? templateInConfig(config, origin);
    this.#template = template ? new ChatTemplate(template.source, { bosToken, eosToken }, template.name) : null;
    this.hasChatTemplate = this.#template !== null;
  }

  /** True for added tokens marked special (<|im_start|>, <|endoftext|>, ...). */
  isSpecial(id: number): boolean {
    return this.#specialIds.has(id);
  }

  tokenToId(token: string): number | undefined {
    return this.#hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.#hf.id_to_token(id);
  }

  /** Special tokens written in the text (e.g. '<|im_start|>') become their single ids. */
  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.#hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  /**
   * Ids with no token (models pad their embedding past the tokenizer's vocab: Qwen2.5 has
   * 151,936 rows for 151,665 tokens) decode to nothing, as in Hugging Face tokenizers.
   */
  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    const skip = opts.skipSpecialTokens ?? false;
    const kept = ids.filter((id) => this.idToToken(id) !== undefined && !(skip && this.#specialIds.has(id)));
    if (kept.length === 0) return '';
    return this.#hf.decode(kept, { skip_special_tokens: false, clean_up_tokenization_spaces: this.#cleanUpSpaces });
  }

  applyChatTemplate(messages: readonly ChatMessage[], opts: RenderOptions = {}): string {
    if (this.#template === null) {
      throw new Error(
        `${this.#origin} has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json); ` +
          'send a plain completion prompt instead, or add a template to the model folder',
      );
    }
    return this.#template.render(messages, opts);
  }

  /**
   * A streaming decoder whose chunks concatenate to decode(ids) (the legacy
   * clean_up_tokenization_spaces rewrite aside, which Qwen turns off). Byte-level BPE only,
   * which is what Qwen and Llama 3 use.
   */
  createDetokenizer(opts: { skipSpecialTokens?: boolean } = {}): IncrementalDetokenizer {
    if (!this.#byteLevel) {
      throw new Error(
        `${this.#origin}: streaming detokenization needs a byte-level BPE tokenizer (tokenizer.json decoder type ByteLevel)`,
      );
    }
    const skip = opts.skipSpecialTokens ?? false;
    return new IncrementalDetokenizer((id) => (skip && this.#specialIds.has(id) ? EMPTY : this.#tokenBytes(id)));
  }

  #tokenBytes(id: number): Uint8Array {
    const cached = this.#bytesCache[id];
    if (cached !== undefined) return cached;
    const token = this.idToToken(id);
    if (token === undefined) return EMPTY;
    // Added tokens are stored as plain text, model tokens in the byte alphabet.
    const bytes = this.#addedIds.has(id) ? utf8.encode(token) : byteLevelTokenBytes(token);
    this.#bytesCache[id] = bytes;
    return bytes;
  }

  #specialId(token: string | undefined, field: string): number | null {
    if (token === undefined) return null;
    const id = this.tokenToId(token);
    if (id === undefined) {
      throw new Error(`${this.#origin}: tokenizer_config.json ${field} '${token}' is not in the vocabulary`);
    }
    return id;
  }
}

function templateInConfig(config: TokenizerConfig, origin: string): { source: string; name: string } | undefined {
  const name = `${origin}: tokenizer_config.json chat_template`;
  const value = config.chat_template;
  if (typeof value === 'string') return { source: value, name };
  // Some models ship several named templates (e.g. 'default', 'tool_use'); chat uses 'default'.
  const named = value?.find((t) => t.name === 'default');
  return named ? { source: named.template, name: `${name} 'default'` } : undefined;
}

function vocabSizeOf(json: TokenizerJson, origin: string): number {
  let maxId = -1;
  const vocab = json.model.vocab;
  if (Array.isArray(vocab)) {
    maxId = vocab.length - 1; // Unigram: [piece, score] pairs, ids are positions
  } else {
    for (const [token, id] of Object.entries(vocab)) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
        throw new Error(`${origin}: tokenizer.json model.vocab gives token ${JSON.stringify(token)} the id ${JSON.stringify(id)}`);
      }
      if (id > maxId) maxId = id;
    }
  }
  for (const t of json.added_tokens ?? []) if (t.id > maxId) maxId = t.id;
  return maxId + 1;
}

function tokenText(field: string | { content: string } | null | undefined): string | undefined {
  if (field === null || field === undefined) return undefined;
  return typeof field === 'string' ? field : field.content;
}

function eosIdsIn(path: string): number[] {
  const value = readJsonIfPresent(path);
  if (value === undefined) return [];
  const eos = parse(EosSchema, value, path).eos_token_id;
  return eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos : [eos];
}

function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`${path}: cannot read: ${messageOf(err)}`, { cause: err });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${messageOf(err)})`, { cause: err });
  }
}

function readJsonIfPresent(path: string): unknown {
  return existsSync(path) ? readJson(path) : undefined;
}

function parse<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const result = schema.safeParse(value);
  if (!result.success) throw new Error(`${what} is malformed:\n${z.prettifyError(result.error)}`);
  return result.data;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
