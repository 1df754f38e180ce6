/**
 * Packs a batch's SamplingParams into the one buffer the device sampler reads
 * (kernels/sampling.cu, struct RowParams), so a step uploads its sampling state in one copy.
 *
 * Layout, as 32-bit words: S rows of ROW_WORDS words, then the penalty entries (id, output count)
 * of every row, each row's ids ascending. A row is 6 doubles (temperature, topP, minP,
 * repetition, frequency, presence) then 10 ints (topK, topLogprobs, seed low / high word,
 * step low / high word, first penalty entry, penalty entry count, pending index, padding).
 * The pending index (-1: none) picks the row's pending token from the ids the kernel is given
 * (Backend.sample's `pending`); only rows with penalties carry one.
 *
 * The seed and step split into 32-bit words exactly as src/backend/rng.ts splits them (two's
 * complement for negative seeds), so the device's Philox draws the host's uniformAt(seed, step).
 * topK <= 0 and topK >= V (both "off") become 0. A row whose penalties are all neutral carries
 * no entries; with repetition off, prompt tokens are left out (they only matter to it).
 *
 * Usage:
 *   const packed = packSamplingParams(params, V);
 *   native.upload(buf.ptr, packed.words, DTYPE_CODE.i32);
 */
import type { SamplingParams } from '../backend.ts';
import { hasPenalties, penaltyCounts } from '../cpu/penalties.ts';

/** 32-bit words per row (88 bytes, sizeof(RowParams)). */
export const ROW_WORDS = 22;

export interface PackedSampling {
  /** Row params then penalty entries (see the file comment). */
  words: Int32Array;
  /** Whether any row carries penalty entries or a pending token (the kernel then needs its bitmap). */
  anyPenalties: boolean;
  /** The largest topLogprobs of the batch (capped at V): the stride of the top lists. */
  maxTop: number;
}

const TWO_POW_32 = 4294967296;

function lowWord(x: number): number {
  return x >>> 0;
}

function highWord(x: number): number {
  return Math.floor(x / TWO_POW_32) >>> 0;
}

/**
 * The batch's parameters as the device reads them; params must already be validated. With
 * `scratch`, the words are written into its buffer (grown when short) and valid until the next
 * pack into it: for callers that upload them at once (upload copies), so a step allocates nothing.
 */
export function packSamplingParams(params: readonly SamplingParams[], V: number, pendingRows?: Int32Array, scratch?: PackScratch): PackedSampling {
  const S = params.length;
  const entries = params.map(penaltyCounts);
  let totalEntries = 0;
  for (const e of entries) totalEntries += e.ids.length;
  const length = S * ROW_WORDS + 2 * totalEntries;
  const buffer = scratch === undefined ? new ArrayBuffer(4 * length) : scratch.room(length);
  const words = new Int32Array(buffer, 0, length);
  const doubles = new Float64Array(buffer, 0, (S * ROW_WORDS) / 2);
  let next = 0;
  let maxTop = 0;
  let anyPending = false;
  params.forEach((p, s) => {
    const d = s * (ROW_WORDS / 2);
    doubles[d] = p.temperature;
    doubles[d + 1] = p.topP;
    doubles[d + 2] = p.minP;
    doubles[d + 3] = p.repetitionPenalty ?? 1;
    doubles[d + 4] = p.frequencyPenalty ?? 0;
    doubles[d + 5] = p.presencePenalty ?? 0;
    const w = s * ROW_WORDS + 12;
    const top = Math.min(p.topLogprobs ?? 0, V);
    words[w] = p.topK > 0 && p.topK < V ? p.topK : 0;
    words[w + 1] = top;
    words[w + 2] = lowWord(p.seed) | 0;
    words[w + 3] = highWord(p.seed) | 0;
    words[w + 4] = lowWord(p.step) | 0;
    words[w + 5] = highWord(p.step) | 0;
    words[w + 6] = next;
    const { ids, counts } = entries[s];
    words[w + 7] = ids.length;
    const pending = pendingRows !== undefined && hasPenalties(p) ? pendingRows[s] : -1;
    words[w + 8] = pending;
    words[w + 9] = 0;
    if (pending >= 0) anyPending = true;
    for (let i = 0, o = S * ROW_WORDS + 2 * next; i < ids.length; i++, o += 2) {
      words[o] = ids[i];
      words[o + 1] = counts[i];
    }
    next += ids.length;
    maxTop = Math.max(maxTop, top);
  });
  return { words, anyPenalties: totalEntries > 0 || anyPending, maxTop };
}

/** A buffer packSamplingParams reuses from step to step (a sampler keeps one). */
export class PackScratch {
  #buffer = new ArrayBuffer(0);

  /** An ArrayBuffer of at least `words` 32-bit words (contents undefined). */
  room(words: number): ArrayBuffer {
    if (this.#buffer.byteLength < 4 * words) this.#buffer = new ArrayBuffer(Math.max(4 * words, 2 * this.#buffer.byteLength));
    return this.#buffer;
  }
}
