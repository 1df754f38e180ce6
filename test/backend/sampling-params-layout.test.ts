/**
 * packSamplingParams (src/backend/cuda/sampling-params.ts) writes what the device sampler reads
 * (kernels/sampling.cu, struct RowParams), checked without a GPU: the struct's fields are read
 * from the kernel source as text, their offsets computed (double 8 bytes, int / unsigned 4), and
 * a packed row with a distinct value in every field is decoded at those offsets.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { SamplingParams } from '../../src/backend/backend.ts';
import { PackScratch, packSamplingParams, ROW_WORDS } from '../../src/backend/cuda/sampling-params.ts';

const root = join(import.meta.dirname, '..', '..');

/** RowParams' fields in order with their byte offsets, from kernels/sampling.cu. */
function rowParamsLayout(): { fields: Map<string, { offset: number; type: string }>; size: number; asserted: number } {
  const text = readFileSync(join(root, 'kernels', 'sampling.cu'), 'utf8');
  const body = /struct RowParams \{([\s\S]*?)\n\};/.exec(text);
  assert.ok(body, 'struct RowParams in kernels/sampling.cu');
  const fields = new Map<string, { offset: number; type: string }>();
  let offset = 0;
  for (const line of body[1].split('\n')) {
    const m = /^\s*(double|int|unsigned)\s+([^;]+);/.exec(line);
    if (!m) continue;
    const size = m[1] === 'double' ? 8 : 4;
    for (const name of m[2].split(',').map((n) => n.trim())) {
      offset = Math.ceil(offset / size) * size;
      fields.set(name, { offset, type: m[1] });
      offset += size;
    }
  }
  const asserted = /static_assert\(sizeof\(RowParams\) == (\d+)/.exec(text);
  assert.ok(asserted, 'the size is asserted in the kernel source');
  return { fields, size: Math.ceil(offset / 8) * 8, asserted: Number(asserted[1]) };
}

describe('sampling parameters: the packed layout is the kernel struct', () => {
  it('every RowParams field at its offset, the penalty entries after the rows, the pending index where asked', () => {
    const { fields, size, asserted } = rowParamsLayout();
    assert.equal(size, asserted, 'field sizes add up to the asserted sizeof');
    assert.equal(ROW_WORDS * 4, size, 'ROW_WORDS matches sizeof(RowParams)');
    const V = 1000;
    const rows: SamplingParams[] = [
      { temperature: 0.7, topK: 20, topP: 0.8, minP: 0.05, seed: 2 ** 33 + 5, step: 2 ** 32 + 7, repetitionPenalty: 1.05, frequencyPenalty: 0.25, presencePenalty: 0.5, topLogprobs: 3, penaltyCounts: { ids: Int32Array.of(4, 9), counts: Int32Array.of(0, 2) } },
      { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 1, step: 0 },
      { temperature: 1, topK: 5000, topP: 1, minP: 0, seed: -1, step: 3, presencePenalty: 1, outputTokens: [7, 7, 3] },
    ];
    const packed = packSamplingParams(rows, V, Int32Array.of(2, 0, -1));
    const view = new DataView(packed.words.buffer, packed.words.byteOffset, packed.words.byteLength);
    const read = (row: number, name: string): number => {
      const f = fields.get(name);
      assert.ok(f, `RowParams has no field ${name}`);
      const at = row * size + f.offset;
      return f.type === 'double' ? view.getFloat64(at, true) : f.type === 'int' ? view.getInt32(at, true) : view.getUint32(at, true);
    };
    assert.deepEqual(
      ['temperature', 'topP', 'minP', 'repetition', 'frequency', 'presence', 'topK', 'topLogprobs', 'seedLo', 'seedHi', 'stepLo', 'stepHi', 'penaltyOffset', 'penaltyCount', 'pending'].map((n) => read(0, n)),
      [0.7, 0.8, 0.05, 1.05, 0.25, 0.5, 20, 3, 5, 2, 7, 1, 0, 2, 2],
    );
    assert.equal(read(1, 'pending'), -1, 'a row without penalties carries no pending index');
    assert.equal(read(1, 'penaltyCount'), 0);
    // Row 2: top-k >= V is off (0); seed -1 is all ones in both words; its entries follow row 0's.
    assert.deepEqual(['topK', 'seedLo', 'seedHi', 'penaltyOffset', 'penaltyCount', 'pending'].map((n) => read(2, n)), [0, 0xffffffff, 0xffffffff, 2, 2, -1]);
    const entries = Array.from(packed.words.subarray(3 * ROW_WORDS));
    assert.deepEqual(entries, [4, 0, 9, 2, 3, 1, 7, 2], '(id, count) pairs, ids ascending per row');
    assert.equal(packed.anyPenalties, true);
    assert.equal(packed.maxTop, 3);
    // A pending index alone (a penalised row with no entries yet) still asks for the bitmap.
    const alone = packSamplingParams([{ temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, step: 0, presencePenalty: 1, outputTokens: [] }], V, Int32Array.of(0));
    assert.equal(alone.anyPenalties, true);
    assert.equal(packSamplingParams([rows[1]], V).anyPenalties, false);
  });

  it('packed into a reused scratch buffer, every step\'s words equal a fresh pack (a larger step, then a smaller one)', () => {
    const V = 5000;
    const row = (seed: number, n: number): SamplingParams => ({
      temperature: 0.7, topK: 20, topP: 0.8, minP: 0, seed, step: seed + 1, repetitionPenalty: 1.05,
      penaltyCounts: { ids: Int32Array.from({ length: n }, (_, i) => 3 * i + seed), counts: Int32Array.from({ length: n }, (_, i) => i % 3) },
    });
    const scratch = new PackScratch();
    for (const batch of [[row(1, 40), row(2, 300)], [row(3, 5)], [row(4, 700), row(5, 0), row(6, 9)], [row(7, 1)]]) {
      const fresh = packSamplingParams(batch, V);
      const reused = packSamplingParams(batch, V, undefined, scratch);
      assert.equal(reused.words.length, fresh.words.length, 'exactly the words of this step (the buffer may be longer)');
      assert.deepEqual(Array.from(reused.words), Array.from(fresh.words));
      assert.equal(reused.anyPenalties, fresh.anyPenalties);
    }
  });
});
