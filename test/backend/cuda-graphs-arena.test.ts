/**
 * Where CUDA graphs take their scratch (src/backend/cuda/graphs.ts), with a fake addon: no GPU
 * needed. Without a budget each graph holds an arena of its own, sized by an eager run; under a
 * budget (useSharedArena) every graph takes the front of one reserved arena, so the graphs of all
 * batch-size buckets cost the largest one's scratch, and a graph that does not fit says so.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Tensor } from '../../src/backend/backend.ts';
import { CudaGraphs } from '../../src/backend/cuda/graphs.ts';
import type { DeviceArena } from '../../src/backend/cuda/tensor.ts';
import { fakeNative } from './fake-native.ts';

/** Graphs over a fake addon; `work(bytes)` is captured work that takes `bytes` of scratch and returns where. */
function setup() {
  const events: string[] = [];
  let graphIds = 0;
  const { native, live } = fakeNative({
    graphBegin: () => void events.push('begin'),
    graphEnd: () => (events.push('end'), ++graphIds),
    graphLaunch: (id: number) => void events.push(`launch ${id}`),
    graphDestroy: (id: number) => void events.push(`destroy ${id}`),
  });
  let current: DeviceArena | null = null;
  const graphs = new CudaGraphs({
    native,
    deviceOnly: () => {
      throw new Error('not used');
    },
    withArena: (arena, fn) => {
      current = arena;
      try {
        return fn();
      } finally {
        current = null;
      }
    },
  });
  const work = (bytes: number) => (): Tensor => ({ ptr: current!.take(bytes) }) as unknown as Tensor;
  const heldBytes = (): number => [...live.values()].reduce((a, b) => a + b, 0);
  return { graphs, work, live, events, heldBytes };
}

const ptrOf = (t: Tensor): number => (t as unknown as { ptr: number }).ptr;

describe('CUDA graph scratch', () => {
  it('without a budget: an arena per graph, sized by the eager run, freed with it', () => {
    const { graphs, work, heldBytes, events } = setup();
    const a = graphs.capture(work(1000));
    const b = graphs.capture(work(3000));
    assert.equal(graphs.bytesHeld, 1024 + 3072, 'each arena holds its graph\'s 256-byte-aligned need');
    assert.equal(heldBytes(), 1024 + 3072);
    assert.notEqual(ptrOf(a.output), ptrOf(b.output), 'separate arenas');
    assert.deepEqual(events, ['begin', 'end', 'begin', 'end']);
    graphs.free(a);
    graphs.free(b);
    assert.equal(graphs.bytesHeld, 0);
    assert.equal(heldBytes(), 0);
  });

  it('under a budget: every graph at the front of one shared arena, which outlives them', () => {
    const { graphs, work, heldBytes, live } = setup();
    graphs.useSharedArena(8192);
    assert.equal(heldBytes(), 8192);
    const [base] = [...live.keys()];
    const small = graphs.capture(work(1000));
    const large = graphs.capture(work(6000));
    assert.equal(ptrOf(small.output), base);
    assert.equal(ptrOf(large.output), base, 'the same addresses: replays run in stream order');
    assert.equal(graphs.bytesHeld, 8192, 'the graphs cost the shared arena only');
    graphs.replay(small);
    graphs.free(small);
    graphs.free(large);
    assert.equal(heldBytes(), 8192, 'the shared arena stays reserved');
    assert.throws(() => graphs.replay(small), /was freed/);
  });

  it('under a budget, a graph needing more than the reserve fails clearly and leaves the graphs usable', () => {
    const { graphs, work, events } = setup();
    graphs.useSharedArena(4096);
    assert.throws(() => graphs.capture(work(5000)), /needs more scratch than the 4\.00 KiB the GPU memory budget reserves for CUDA graphs/);
    assert.ok(!events.includes('begin'), 'nothing was captured');
    assert.equal(graphs.liveTags.size, 0);
    const broken = (): Tensor => {
      throw new Error('an op failed');
    };
    assert.throws(() => graphs.capture(broken), /^Error: an op failed$/, 'other errors keep their own message');
    const g = graphs.capture(work(4096));
    graphs.replay(g);
    assert.equal(graphs.liveTags.size, 1);
  });

  it('changing the arena is refused while graphs are live, and 0 goes back to arenas of their own', () => {
    const { graphs, work, heldBytes } = setup();
    const own = graphs.capture(work(100));
    graphs.useSharedArena(0); // a budget without a graphs' part changes nothing: allowed with graphs live
    graphs.free(own);
    graphs.useSharedArena(4096);
    const g = graphs.capture(work(100));
    assert.throws(() => graphs.useSharedArena(8192), /1 graph\(s\) are live/);
    graphs.free(g);
    graphs.useSharedArena(0);
    assert.equal(heldBytes(), 0, 'the shared arena is released');
    graphs.capture(work(2000));
    assert.equal(graphs.bytesHeld, 2048);
  });
});
