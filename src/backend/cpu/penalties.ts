/**
 * penalties: the row's logits with repetition, frequency and presence penalties applied
 *   x is one row (V) of logits, out is (V); outputTokens / promptTokens are token ids.
 *
 * vLLM's order and semantics: repetition penalty first (CTRL / HF: a logit of a token seen in
 * the prompt or the output is divided by the penalty when positive, multiplied when not), then
 * logit -= frequency * count + presence * (count > 0) over the output tokens only.
 */
import type { PenaltyCounts, SamplingParams } from '../backend.ts';
import { badRow } from './sampling.ts';

export function hasPenalties(p: Pick<SamplingParams, 'presencePenalty' | 'frequencyPenalty' | 'repetitionPenalty'>): boolean {
  return (p.presencePenalty ?? 0) !== 0 || (p.frequencyPenalty ?? 0) !== 0 || (p.repetitionPenalty ?? 1) !== 1;
}

const NONE: PenaltyCounts = { ids: new Int32Array(0), counts: new Int32Array(0) };

/**
 * The row's penalty inputs counted (see PenaltyCounts): p.penaltyCounts as given, else counted
 * from its outputTokens / promptTokens (empty: no penalties).
 */
export function penaltyCounts(p: SamplingParams): PenaltyCounts {
  if (!hasPenalties(p)) return NONE;
  if (p.penaltyCounts) return p.penaltyCounts;
  const counts = new Map<number, number>();
  if ((p.repetitionPenalty ?? 1) !== 1) for (const id of p.promptTokens ?? []) counts.set(id, 0);
  for (const id of p.outputTokens ?? []) counts.set(id, (counts.get(id) ?? 0) + 1);
  const ids = Int32Array.from(counts.keys()).sort();
  return { ids, counts: Int32Array.from(ids, (id) => counts.get(id)!) };
}

/** The first index of ids[0 .. n) (ascending) whose id is not below `id`: where id is, or would go. */
export function lowerBound(ids: Int32Array, n: number, id: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ids[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** pc with one more output token `id` (a copy; pc is left as it is). */
export function withOutputToken(pc: PenaltyCounts, id: number): PenaltyCounts {
  const lo = lowerBound(pc.ids, pc.ids.length, id);
  if (lo < pc.ids.length && pc.ids[lo] === id) {
    const counts = pc.counts.slice();
    counts[lo]++;
    return { ids: pc.ids, counts };
  }
  const ids = new Int32Array(pc.ids.length + 1);
  const counts = new Int32Array(pc.ids.length + 1);
  ids.set(pc.ids.subarray(0, lo));
  counts.set(pc.counts.subarray(0, lo));
  ids[lo] = id;
  counts[lo] = 1;
  ids.set(pc.ids.subarray(lo), lo + 1);
  counts.set(pc.counts.subarray(lo), lo + 1);
  return { ids, counts };
}

/**
 * The pending rows' checks (Backend.sample's `pending`): one index per row, each -1 or an index
 * into ids (of `available` elements).
 */
export function checkPendingRows(rows: Int32Array, S: number, available: number): void {
  if (rows.length !== S) throw new Error(`sample: pending.rows has ${rows.length} entries for ${S} rows`);
  for (let r = 0; r < S; r++) {
    if (rows[r] !== -1 && !(rows[r] >= 0 && rows[r] < available)) {
      throw new Error(`sample: pending.rows[${r}] = ${rows[r]} is neither -1 nor an index into the ${available} pending ids`);
    }
  }
}

export function checkPenalties(p: SamplingParams, row: number, V: number): void {
  const rep = p.repetitionPenalty ?? 1;
  if (!(rep > 0) || !Number.isFinite(rep)) badRow(row, `repetitionPenalty must be a finite number > 0, got ${rep}`);
  if (!Number.isFinite(p.presencePenalty ?? 0)) badRow(row, `presencePenalty must be finite, got ${p.presencePenalty}`);
  if (!Number.isFinite(p.frequencyPenalty ?? 0)) badRow(row, `frequencyPenalty must be finite, got ${p.frequencyPenalty}`);
  if (p.penaltyCounts) {
    const { ids, counts } = p.penaltyCounts;
    if (ids.length !== counts.length) badRow(row, `penaltyCounts: ${ids.length} ids but ${counts.length} counts`);
    for (let i = 0; i < ids.length; i++) {
      if (!(ids[i] >= 0 && ids[i] < V)) badRow(row, `penalty token ${ids[i]} is outside the vocabulary [0, ${V})`);
      if (i > 0 && ids[i] <= ids[i - 1]) badRow(row, 'penaltyCounts: ids must be distinct and ascending');
      if (counts[i] < 0) badRow(row, `penaltyCounts: count ${counts[i]} of token ${ids[i]} is negative`);
    }
    return;
  }
  for (const list of [p.outputTokens, p.promptTokens]) {
    for (const id of list ?? []) {
      if (!Number.isInteger(id) || id < 0 || id >= V) badRow(row, `penalty token ${id} is outside the vocabulary [0, ${V})`);
    }
  }
}

/**
 * out = penalised copy of x[o .. o+V), from the row's counted inputs (penaltyCounts: given, or
 * counted from its token lists). One pass over the distinct ids: repetition on every one, then
 * frequency and presence on those the output holds.
 */
export function applyPenalties(out: Float32Array, x: Float32Array, o: number, V: number, p: SamplingParams, pc: PenaltyCounts = penaltyCounts(p)): void {
  for (let i = 0; i < V; i++) out[i] = x[o + i];
  const rep = p.repetitionPenalty ?? 1;
  const freq = p.frequencyPenalty ?? 0;
  const pres = p.presencePenalty ?? 0;
  for (let i = 0; i < pc.ids.length; i++) {
    const id = pc.ids[i];
    if (rep !== 1) out[id] = out[id] > 0 ? out[id] / rep : out[id] * rep;
    const c = pc.counts[i];
    if (c > 0 && (freq !== 0 || pres !== 0)) out[id] -= freq * c + pres;
  }
}
