// The serving side of LoRA (src/model/lora-apply.ts): each segment's branch lands on its rows
// only, and the several-projections form (one linearMany of the shrinks per segment) gives the
// same sums as one projection at a time, whatever subset of the projections an adapter has.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor } from '../../src/backend/backend.ts';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { loraForwardSegments, loraForwardSegmentsMany, type LoraSegment } from '../../src/model/lora-apply.ts';
import { SeededRandom } from '../../src/util/random.ts';

const be = new CpuBackend({ threads: 1 });
const rng = new SeededRandom(9);
const upload = (shape: number[], std = 1): Tensor => be.upload(rng.normals(shape.reduce((a, b) => a * b, 1), std), shape, 'f32');

/** An adapter with matrices for some of three projections of widths Ns (rank R, input K). */
type Branch = { a: Tensor; b: Tensor; scale: number };
function adapter(K: number, Ns: number[], R: number, has: boolean[], scale: number): (Branch | undefined)[] {
  return Ns.map((N, i) => (has[i] ? { a: upload([R, K], 0.3), b: upload([N, R], 0.3), scale } : undefined));
}

describe('LoRA serving branches', () => {
  it('loraForwardSegmentsMany equals loraForwardSegments per projection, rows outside segments untouched', async () => {
    const [T, K] = [9, 24];
    const Ns = [16, 8, 8];
    const first = adapter(K, Ns, 4, [true, false, true], 2);
    const second = adapter(K, Ns, 6, [false, true, true], 0.5);
    const segments: LoraSegment<(Branch | undefined)[]>[] = [
      { start: 1, end: 4, lora: first },
      { start: 4, end: 4, lora: second }, // empty: nothing
      { start: 6, end: 9, lora: second },
    ];
    const x = upload([T, K]);
    const bases = Ns.map((N) => upload([T, N]));
    const copies = async (): Promise<Tensor[]> => Promise.all(bases.map(async (b) => be.upload((await be.download(b)) as Float32Array, b.shape, 'f32')));
    const one = await copies();
    one.forEach((y, i) => loraForwardSegments(be, y, x, segments, (lora) => lora[i]));
    const many = await copies();
    loraForwardSegmentsMany(be, many, x, segments, (lora, i) => lora[i]);
    for (let i = 0; i < Ns.length; i++) {
      const got = (await be.download(many[i])) as Float32Array;
      const want = (await be.download(one[i])) as Float32Array;
      assert.deepEqual(got, want, `projection ${i}`);
      const base = (await be.download(bases[i])) as Float32Array;
      const N = Ns[i];
      // Rows 0, 4 and 5 are in no segment: the base output, bit for bit.
      for (const r of [0, 4, 5]) assert.deepEqual(got.subarray(r * N, (r + 1) * N), base.subarray(r * N, (r + 1) * N), `projection ${i} row ${r}`);
      // A row of a segment whose adapter has this projection moved.
      const r = i === 0 ? 2 : 7;
      assert.notDeepEqual(got.subarray(r * N, (r + 1) * N), base.subarray(r * N, (r + 1) * N), `projection ${i} row ${r} has its branch`);
    }
  });

  it('rejects a segment outside the batch', () => {
    const x = upload([3, 8]);
    const ys = [upload([3, 4])];
    const lora = adapter(8, [4], 2, [true], 1);
    assert.throws(() => loraForwardSegmentsMany(be, ys, x, [{ start: 1, end: 5, lora }], (l, i) => l[i]), /outside the batch's 3 rows/);
  });
});
