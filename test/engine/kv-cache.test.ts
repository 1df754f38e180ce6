import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BlockHashChain, KvBlockManager, ROOT_HASH, hashBlock, type HashedTokens } from '../../src/engine/kv-cache.ts';

/** Tokens with memoised chained block hashes, as a Sequence has them. */
function hashed(tokens: number[]): HashedTokens {
  const chain = new BlockHashChain();
  return { tokens, blockHash: (i, bs) => chain.at(tokens, i, bs) };
}

/** Allocate blocks for `tokens` and name every full block, as a finished prefill does. */
function computeInto(m: KvBlockManager, tokens: number[]): number[] {
  const seq = hashed(tokens);
  const table = m.allocate(m.blocksFor(tokens.length));
  const full = Math.floor(tokens.length / m.blockSize);
  for (let i = 0; i < full; i++) m.register(table[i], seq.blockHash(i, m.blockSize), tokens.slice(i * m.blockSize, (i + 1) * m.blockSize));
  return table;
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

describe('KvBlockManager', () => {
  it('allocates, counts references and frees', () => {
    const m = new KvBlockManager(4, 2);
    const a = m.allocate(3);
    assert.deepEqual(a, [0, 1, 2], 'low ids first');
    assert.equal(m.numUsed, 3);
    assert.equal(m.numFree, 1);
    assert.throws(() => m.allocate(2), /need 2 blocks, 1 of 4 free/);
    m.release([a[0]]);
    assert.equal(m.numUsed, 2);
    assert.equal(m.refCount(a[0]), 0);
    assert.throws(() => m.release([a[0]]), /release of free block 0/);
    m.release(a.slice(1));
    assert.equal(m.numUsed, 0);
    assert.equal(m.numFree, 4);
  });

  it('chains hashes: a block is named by its whole prefix, not its own ids alone', () => {
    const h0 = hashBlock(ROOT_HASH, [1, 2]);
    assert.notEqual(hashBlock(h0, [3, 4]), hashBlock(hashBlock(ROOT_HASH, [9, 9]), [3, 4]));
    assert.equal(hashBlock(h0, [3, 4]), hashBlock(hashBlock(ROOT_HASH, [1, 2]), [3, 4]));
    const chain = new BlockHashChain();
    assert.equal(chain.at([1, 2, 3, 4, 5], 1, 2), hashBlock(h0, [3, 4]));
    assert.throws(() => chain.at([1, 2, 3, 4, 5], 2, 2), /not full/);
  });

  it('finds the longest cached run of leading full blocks and shares them by reference', () => {
    const m = new KvBlockManager(16, 4);
    const tokens = range(100, 12);
    const table = computeInto(m, tokens);
    // Same first two blocks, different third.
    const other = hashed([...tokens.slice(0, 8), 1, 2, 3, 4]);
    const hit = m.findPrefix(other, other.tokens.length);
    assert.deepEqual(hit.blocks, table.slice(0, 2));
    assert.equal(hit.numFreeHits, 0, 'the blocks are in use, not free');
    m.acquire(hit.blocks);
    assert.equal(m.refCount(table[0]), 2);
    assert.equal(m.numUsed, 3, 'sharing takes no new block');
    // Same second block after a different first: the chain makes it a miss.
    const shifted = hashed([0, 0, 0, 0, ...tokens.slice(4, 8)]);
    assert.equal(m.findPrefix(shifted, 8).blocks.length, 0);
  });

  it('never shares a partial block, and stops at maxTokens', () => {
    const m = new KvBlockManager(16, 4);
    const tokens = range(0, 10); // 2 full blocks + 2 tokens
    computeInto(m, tokens);
    assert.equal(m.findPrefix(hashed(tokens), 10).blocks.length, 2);
    assert.equal(m.findPrefix(hashed(tokens), 7).blocks.length, 1, 'a block is only taken whole');
    const [b] = m.allocate(1);
    assert.throws(() => m.register(b, 'x', [1, 2]), /only full blocks/);
  });

  it('compares token ids on a hash hit (a forged hash does not match)', () => {
    const m = new KvBlockManager(8, 2);
    computeInto(m, [5, 6]);
    const real = hashBlock(ROOT_HASH, [5, 6]);
    const forged: HashedTokens = { tokens: [7, 8], blockHash: () => real };
    assert.equal(m.findPrefix(forged, 2).blocks.length, 0);
  });

  it('keeps freed full blocks findable until the pool needs them, evicting least recently released first', () => {
    const m = new KvBlockManager(6, 2);
    const a = range(10, 6); // 3 full blocks
    const b = range(50, 6);
    const ta = computeInto(m, a);
    const tb = computeInto(m, b);
    assert.equal(m.numFree, 0);
    m.release(ta);
    m.release(tb);
    assert.equal(m.numUsed, 0);
    assert.equal(m.numCachedFree, 6);
    const hitA = m.findPrefix(hashed(a), 6);
    assert.equal(hitA.blocks.length, 3);
    assert.equal(hitA.numFreeHits, 3, 'reusing a cached-free block uses up free capacity');
    // Released from the deep end back: a's last block is the oldest, so it goes first.
    const [fresh] = m.allocate(1);
    assert.equal(fresh, ta[2]);
    assert.equal(m.findPrefix(hashed(a), 6).blocks.length, 2);
    assert.equal(m.findPrefix(hashed(b), 6).blocks.length, 3, 'b is untouched');
    m.allocate(2);
    assert.equal(m.findPrefix(hashed(a), 6).blocks.length, 0);
    // Acquiring cached-free blocks takes them off the eviction list.
    m.acquire(m.findPrefix(hashed(b), 6).blocks);
    assert.equal(m.numCachedFree, 0);
    assert.equal(m.numFree, 0);
  });

  it('prefers never-named blocks over evicting cached ones', () => {
    const m = new KvBlockManager(4, 2);
    const t = computeInto(m, [1, 2]);
    m.release(t);
    const got = m.allocate(3);
    assert.ok(!got.includes(t[0]));
    assert.equal(m.findPrefix(hashed([1, 2]), 2).blocks.length, 1);
  });

  it('keeps the first block of a prefix computed twice and frees the duplicate plainly', () => {
    const m = new KvBlockManager(4, 2);
    const first = computeInto(m, [1, 2]);
    const second = computeInto(m, [1, 2]);
    assert.equal(m.hashOf(second[0]), null);
    m.release(second);
    assert.equal(m.numCachedFree, 0, 'the anonymous duplicate is not cached');
    assert.deepEqual(m.findPrefix(hashed([1, 2]), 2).blocks, first);
  });
});
