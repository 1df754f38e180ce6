// Token ids -> text, one id at a time, for streaming responses.
//
// Byte-level BPE tokens are byte strings, not text: a CJK character or an emoji can be
// split over two or three tokens (Qwen encodes the zero-width joiner E2 80 8D as 'âĢ' + 'į').
// So the detokenizer keeps bytes, not strings: each push appends the token's bytes to a
// streaming UTF-8 decoder, which returns every character that is now complete and holds
// back the bytes of one that is not. That is O(bytes of the new token) per push, and the
// concatenated output equals decoding all ids at once.

/** The exact bytes one token id stands for; an empty array for an id that decodes to nothing. */
export type TokenBytes = (id: number) => Uint8Array;

export class IncrementalDetokenizer {
  readonly #bytesOf: TokenBytes;
  // fatal: false turns invalid sequences into U+FFFD, as a full decode does;
  // ignoreBOM keeps a leading EF BB BF as U+FEFF instead of silently dropping it.
  readonly #utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  constructor(bytesOf: TokenBytes) {
    this.#bytesOf = bytesOf;
  }

  /** The text completed by this token (possibly ''), never half a character. */
  push(id: number): string {
    return this.#utf8.decode(this.#bytesOf(id), { stream: true });
  }

  /** What is left at the end: bytes of an unfinished character become U+FFFD. Resets the stream. */
  flush(): string {
    return this.#utf8.decode();
  }
}

// GPT-2's byte-level alphabet, which Qwen, Llama 3 and most BPE tokenizers share: each byte
// maps to one printable character so that vocab and merges can be stored as text. Printable
// Latin-1 bytes map to themselves; the other 68 (controls, space, 0x7F-0xA0, 0xAD) map in
// byte order to U+0100 and up, so a space is 'Ġ' (U+0120) and a newline 'Ċ' (U+010A).
function buildByteAlphabet(): string[] {
  const isPrintable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const chars = new Array<string>(256);
  let next = 0x100;
  for (let b = 0; b < 256; b++) {
    chars[b] = String.fromCharCode(isPrintable(b) ? b : next++);
  }
  return chars;
}

/** BYTE_TO_CHAR[b] is the character that stands for byte b in byte-level BPE vocabularies. */
export const BYTE_TO_CHAR: readonly string[] = buildByteAlphabet();

const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/**
 * The 256 alphabet characters in the order GPT-2-style vocabularies give them ids 0..255:
 * printable bytes first, in byte order, then the remapped ones (i.e. by code point).
 */
export const BYTE_ALPHABET_IN_VOCAB_ORDER: readonly string[] = [...BYTE_TO_CHAR].sort(
  (a, b) => a.charCodeAt(0) - b.charCodeAt(0),
);

const utf8 = new TextEncoder();

/**
 * The bytes a byte-level BPE token stands for. A token with a character outside the alphabet
 * (an added token such as '<think>' never is, but one could be) stands for its own UTF-8,
 * which is what the Rust tokenizers' ByteLevel decoder does too.
 */
export function byteLevelTokenBytes(token: string): Uint8Array {
  const bytes = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const b = CHAR_TO_BYTE.get(token[i]);
    if (b === undefined) return utf8.encode(token);
    bytes[i] = b;
  }
  return bytes;
}
