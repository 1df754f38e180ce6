/**
 * bench/kernel-timeline.ts on hand-made traces: launches found from the start records' order,
 * waits matched to the right launch (also for two launches of one grid size back to back), and
 * the per-grid summary's lead, spread and critical-path figures.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { kernelLaunches, summarizeByGrid } from '../../bench/kernel-timeline.ts';
import { decodeTraceRecords, type TraceRecord } from '../../src/backend/cuda/kernel-trace.ts';

const rec = (t: number, kind: 'start' | 'wait', blocks: number, block: number): TraceRecord => ({ t, kind, sm: block % 4, blocks, block });

/** A launch of `blocks` blocks starting at s (1 ns apart) whose waits return at w (2 ns apart). */
function launch(s: number, w: number, blocks: number): TraceRecord[] {
  const out: TraceRecord[] = [];
  for (let b = 0; b < blocks; b++) out.push(rec(s + b, 'start', blocks, b), rec(w + 2 * b, 'wait', blocks, b));
  return out;
}

describe('kernel timeline', () => {
  it('splits launches by grid size and by a repeated block index, and matches every wait', () => {
    // A (3 blocks), B (2), C (2): B and C share a grid size and follow each other.
    const records = [...launch(0, 100, 3), ...launch(50, 200, 2), ...launch(150, 300, 2)].reverse(); // order must not matter
    const { launches, unmatchedWaits } = kernelLaunches(records);
    assert.equal(unmatchedWaits, 0);
    assert.deepEqual(
      launches.map((k) => [k.blocks, k.starts, k.waits, k.firstStart, k.firstWait, k.lastWait]),
      [
        [3, 3, 3, 0, 100, 104],
        [2, 2, 2, 50, 200, 202],
        [2, 2, 2, 150, 300, 302],
      ],
    );
  });

  it('summarizes lead, wait spread and critical path per grid size', () => {
    const { launches } = kernelLaunches([...launch(0, 100, 3), ...launch(50, 200, 2), ...launch(150, 300, 2), ...launch(250, 450, 3)]);
    const rows = summarizeByGrid(launches);
    assert.deepEqual(rows.map((r) => r.blocks), [3, 2]);
    const [a, b] = rows;
    assert.equal(a.launches, 2);
    assert.equal(a.lead, (100 + 200) / 2); // 100 - 0, 450 - 250
    assert.equal(a.waitSpread, 4);
    assert.equal(a.critical, 100); // only the first has a successor: 200 - 100
    assert.equal(b.critical, (100 + 150) / 2); // 300 - 200, 450 - 300
    assert.equal(b.criticalTotal, 250);
  });

  it('counts a wait without a start as unmatched', () => {
    const { launches, unmatchedWaits } = kernelLaunches([rec(5, 'start', 1, 0), rec(9, 'wait', 1, 0), rec(12, 'wait', 4, 2)]);
    assert.equal(launches.length, 1);
    assert.equal(unmatchedWaits, 1);
  });

  it('decodes the device layout: globaltimer, then kind / smid / grid / block bits', () => {
    const words = new Int32Array(8);
    const put = (at: number, v: bigint) => {
      words[at] = Number(v & 0xffffffffn) | 0;
      words[at + 1] = Number(v >> 32n) | 0;
    };
    const base = 1_764_000_000_000_000_000n; // past 2^53: only the differences survive as numbers
    put(0, base + 1500n);
    put(2, (0n << 62n) | (131n << 48n) | (640n << 24n) | 639n);
    put(4, base);
    put(6, (1n << 62n) | (7n << 48n) | (2n << 24n) | 1n);
    assert.deepEqual(decodeTraceRecords(words, 2), [
      { t: 1500, kind: 'start', sm: 131, blocks: 640, block: 639 },
      { t: 0, kind: 'wait', sm: 7, blocks: 2, block: 1 },
    ]);
    assert.throws(() => decodeTraceRecords(words, 3), /3 records need 12 words/);
  });
});

describe('traceKernels (stand-in addon)', () => {
  it('attaches, runs, detaches, reads the claimed records and frees its buffers, also when run throws', async () => {
    const { traceKernels } = await import('../../src/backend/cuda/kernel-trace.ts');
    const { fakeNative } = await import('../backend/fake-native.ts');
    const attached: number[][] = [];
    // Three records claimed, capacity 2: two come back, one is counted as dropped.
    const words = new Int32Array([10, 0, 5, 0, 30, 0, 0, 1 << 30]);
    const { native, live } = fakeNative({
      zero: () => {},
      traceAttach: (r: number, c: number, cap: number) => attached.push([r, c, cap]),
      download: async (_p: number, n: number) => (n === 1 ? Int32Array.from([3]) : words.slice(0, n)),
    });
    let ran = 0;
    const { records, dropped } = await traceKernels(native, () => ran++, 2);
    assert.equal(ran, 1);
    assert.equal(dropped, 1);
    assert.deepEqual(records.map((r) => [r.t, r.kind, r.block]), [[0, 'start', 5], [20, 'wait', 0]]);
    assert.equal(attached.length, 2);
    assert.equal(attached[0][2], 2);
    assert.deepEqual(attached[1], [0, 0, 0]);
    assert.equal(live.size, 0, 'both buffers freed');
    await assert.rejects(traceKernels(native, () => { throw new Error('boom'); }, 2), /boom/);
    assert.deepEqual(attached[attached.length - 1], [0, 0, 0], 'detached after a throw');
    assert.equal(live.size, 0);
    await assert.rejects(traceKernels(native, () => {}, 0), /capacity 0/);
  });
});
