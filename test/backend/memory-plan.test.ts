/**
 * The --gpu-memory partition (src/backend/memory-plan.ts) and the CUDA scratch arena's budget
 * (DeviceArena with a fake allocator: no GPU needed). Expected values are worked out here from
 * the rules (sizes in bytes, blocks that fit), not read from the implementation.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes, GiB, MiB, parseMemorySize, planCategories, planMemory, type MemoryPlanInput } from '../../src/backend/memory-plan.ts';
import { DeviceArena } from '../../src/backend/cuda/tensor.ts';
import { fakeNative } from './fake-native.ts';

describe('parseMemorySize', () => {
  const card = 80 * GiB;
  it('reads binary and decimal units and fractions of the whole', () => {
    assert.equal(parseMemorySize('gpu-memory', '24GiB', card), 24 * 1024 ** 3);
    assert.equal(parseMemorySize('gpu-memory', '24gib', card), 24 * 1024 ** 3);
    assert.equal(parseMemorySize('gpu-memory', '20GB', card), 20e9);
    assert.equal(parseMemorySize('gpu-memory', '512MiB', card), 512 * 1024 ** 2);
    assert.equal(parseMemorySize('gpu-memory', '1.5 GiB', card), 1.5 * 1024 ** 3);
    assert.equal(parseMemorySize('gpu-memory', '4096B', card), 4096);
    assert.equal(parseMemorySize('gpu-memory', '0.9', card), Math.floor(0.9 * 80 * 1024 ** 3));
    assert.equal(parseMemorySize('gpu-memory', '1', card), card);
  });

  it('refuses what is not a size, naming the option', () => {
    for (const raw of ['24', '0', '1.01', '-1GiB', 'lots', '24 GiBs', '', '0GiB']) {
      assert.throws(() => parseMemorySize('adapter-memory', raw, card), /--adapter-memory must be a size/, raw);
    }
  });

  it('formats sizes for messages', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.50 KiB');
    assert.equal(formatBytes(24 * 1024 ** 3), '24.00 GiB');
  });
});

describe('planMemory', () => {
  // A 3B-like case: 36 layers, 2 KV heads of 128, bf16, blocks of 16 tokens.
  const perBlock = 2 * 36 * 16 * 2 * 128 * 2;
  const base: MemoryPlanInput = {
    total: 24 * GiB,
    weights: 6.17e9,
    workspace: 2 * GiB,
    adapters: 512 * MiB,
    kvBytesPerBlock: perBlock,
    kvFixedBytes: 2 * 36 * 256,
    blockSize: 16,
    maxModelLen: 32768,
    maxUsefulBlocks: 10 ** 9,
  };

  it('gives the KV pool every whole block that is left', () => {
    const p = planMemory(base);
    const left = base.total - base.weights - base.workspace - base.adapters - base.kvFixedBytes;
    assert.equal(p.numBlocks, Math.floor(left / perBlock));
    assert.ok(p.weights + p.workspace + p.adapters + p.kvCache <= base.total);
    assert.ok(p.weights + p.workspace + p.adapters + p.kvCache + perBlock > base.total, 'one more block would not fit');
    assert.equal(p.kvCache, p.numBlocks * perBlock + base.kvFixedBytes);
    const parts = planCategories(p);
    assert.equal(Object.values(parts).reduce((a, b) => a + b, 0), base.total);
    assert.deepEqual(Object.keys(parts).sort(), ['adapters', 'kv_cache', 'unassigned', 'weights', 'workspace']);
  });

  it('stops at the blocks that can ever be used, leaving the rest unassigned', () => {
    const p = planMemory({ ...base, maxUsefulBlocks: 5000 });
    assert.equal(p.numBlocks, 5000);
    assert.equal(p.unassigned, base.total - base.weights - base.workspace - base.adapters - 5000 * perBlock - base.kvFixedBytes);
  });

  it('takes an explicit KV size that fits and explains one that does not', () => {
    assert.equal(planMemory({ ...base, requestedBlocks: 4096 }).numBlocks, 4096);
    const fits = Math.floor((base.total - base.weights - base.workspace - base.adapters - base.kvFixedBytes) / perBlock);
    assert.throws(() => planMemory({ ...base, requestedBlocks: fits + 1 }), new RegExp(`at most ${fits * 16} tokens fit`));
  });

  it('refuses a budget that cannot hold the weights and one full-length request', () => {
    // 32768 tokens need 2048 blocks: 1.125 GiB of KV on top of 8.7 GB fixed.
    const need = base.weights + base.workspace + base.adapters + 2048 * perBlock + base.kvFixedBytes;
    assert.doesNotThrow(() => planMemory({ ...base, total: Math.ceil(need) }));
    assert.throws(() => planMemory({ ...base, total: Math.ceil(need) - 1 }), /cannot hold weights .* the KV cache of one 32768-token request/);
    assert.throws(() => planMemory({ ...base, total: 4 * GiB }), /raise --gpu-memory/);
  });
});

describe('DeviceArena under a budget', () => {
  it('holds one reserved chunk, fills it, and refuses more with a clear error', () => {
    const { native, live } = fakeNative();
    const arena = new DeviceArena(native);
    arena.reserve(1 * MiB);
    assert.equal(live.size, 1);
    const [chunk, size] = [...live.entries()][0];
    assert.equal(size, MiB);
    const a = arena.take(300 * 1024);
    const b = arena.take(700 * 1024);
    assert.ok(a >= chunk && b >= a + 300 * 1024 && b + 700 * 1024 <= chunk + MiB, 'both inside the chunk, not overlapping');
    assert.throws(() => arena.take(24 * 1024 + 1), /scratch arena full: .*1\.0 MiB of scratch/);
    assert.equal(live.size, 1, 'no second chunk');
    arena.reset();
    assert.equal(arena.take(MiB), chunk, 'after a reset the whole chunk is free again');
    assert.equal(arena.bytesHeld, MiB);
  });

  it('measures the most bytes one step took (256-byte aligned)', () => {
    const { native } = fakeNative();
    const arena = new DeviceArena(native);
    arena.take(1000); // 1024
    arena.take(10); // 256
    arena.reset();
    arena.take(512);
    assert.equal(arena.peakBytes, 1280);
    arena.resetPeak();
    assert.equal(arena.peakBytes, 512);
  });

  it('after release, a budgeted arena takes its one chunk again', () => {
    const { native, live } = fakeNative();
    const arena = new DeviceArena(native);
    arena.reserve(2 * MiB);
    arena.release();
    assert.equal(live.size, 0);
    arena.take(100);
    assert.deepEqual([...live.values()], [2 * MiB]);
    assert.throws(() => arena.take(2 * MiB), /scratch arena full/);
  });
});
