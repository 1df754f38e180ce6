/**
 * The KV block manager: a fixed pool of numBlocks blocks of blockSize token slots, shared by
 * reference count, with a prefix cache over full blocks.
 *
 * A full block is named by a chained hash: hash(parent block's hash, the block's token ids), so
 * equal names mean equal whole prefixes, and n completions of one prompt, repeated system
 * prompts and a preempted sequence's recompute find blocks that are already computed. Only full
 * blocks are ever named, so only immutable blocks are shared and no copy-on-write is needed; the
 * last, partial block of a sequence is always its own.
 *
 * A block whose count drops to zero is free. If it holds a named block it stays findable (the
 * "cached-free" blocks) until the pool needs it: fresh allocations take never-named blocks
 * first, then evict cached-free ones least recently released first.
 */
import { createHash } from 'node:crypto';

/** The parent hash of a base-model sequence's first block. */
export const ROOT_HASH = '';

/**
 * The parent hash of the first block of a sequence served by adapter version `adapterId`
 * (ROOT_HASH for the base model): the same tokens give other K/V under another adapter or
 * another version of it, so their chains must never meet. A hash, so it cannot be confused
 * with the root of a chain that starts from the empty string.
 */
export function chainRoot(adapterId: string | null): string {
  if (adapterId === null) return ROOT_HASH;
  return createHash('sha256').update(`lora-adapter:${adapterId}`).digest('hex').slice(0, 32);
}

/**
 * sha256 over the parent's hash and the block's ids, cut to 128 bits: collisions are out of
 * reach, and lookups also compare the token ids.
 */
export function hashBlock(parent: string, tokenIds: readonly number[]): string {
  const h = createHash('sha256');
  h.update(parent);
  h.update(new Uint8Array(Int32Array.from(tokenIds).buffer));
  return h.digest('hex').slice(0, 32);
}

/** Tokens that know their blocks' chained hashes (a Sequence; BlockHashChain in tests). */
export interface HashedTokens {
  readonly tokens: readonly number[];
  /** Chained hash of full block `index` (tokens [index * blockSize, (index + 1) * blockSize)). */
  blockHash(index: number, blockSize: number): string;
}

/**
 * Memoised chained hashes of a growing token list's full blocks: tokens only ever append, so a
 * block's hash never changes once its block is full.
 */
export class BlockHashChain {
  readonly #hashes: string[] = [];
  #blockSize = 0;

  /** `root`: the first block's parent (chainRoot of the sequence's adapter version). */
  constructor(readonly root: string = ROOT_HASH) {}

  at(tokens: readonly number[], index: number, blockSize: number): string {
    if (blockSize !== this.#blockSize) {
      this.#hashes.length = 0;
      this.#blockSize = blockSize;
    }
    if ((index + 1) * blockSize > tokens.length) {
      throw new Error(`block ${index} of ${blockSize} tokens is not full: the sequence has ${tokens.length} tokens`);
    }
    for (let i = this.#hashes.length; i <= index; i++) {
      const parent = i === 0 ? this.root : this.#hashes[i - 1];
      this.#hashes.push(hashBlock(parent, tokens.slice(i * blockSize, (i + 1) * blockSize)));
    }
    return this.#hashes[index];
  }

  /** Token `at` changed (a placeholder got its id): drop the hashes of its block and after. */
  forgetFrom(at: number): void {
    if (this.#blockSize > 0) this.#hashes.length = Math.min(this.#hashes.length, Math.floor(at / this.#blockSize));
  }
}

export interface PrefixHit {
  /** Cached blocks for the leading full blocks of the tokens, in order. */
  blocks: number[];
  /** How many of `blocks` are cached-free now (taking them uses up free capacity). */
  numFreeHits: number;
}

export class KvBlockManager {
  readonly #refCount: Int32Array;
  readonly #hashOf: (string | null)[];
  readonly #tokensOf: (readonly number[] | null)[];
  readonly #byHash = new Map<string, number>();
  /** Free blocks holding nothing findable; pop() hands out low ids first. */
  readonly #clean: number[];
  /** Free blocks still findable by hash, oldest release first (Map keeps insertion order). */
  readonly #cachedFree = new Map<number, true>();

  constructor(readonly numBlocks: number, readonly blockSize: number) {
    if (!Number.isInteger(numBlocks) || numBlocks <= 0) throw new Error(`KV cache needs a positive block count, got ${numBlocks}`);
    if (!Number.isInteger(blockSize) || blockSize <= 0) throw new Error(`KV block size must be a positive integer, got ${blockSize}`);
    this.#refCount = new Int32Array(numBlocks);
    this.#hashOf = new Array<string | null>(numBlocks).fill(null);
    this.#tokensOf = new Array<readonly number[] | null>(numBlocks).fill(null);
    this.#clean = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  /** Blocks an allocation can take now (never-named plus cached-free). */
  get numFree(): number {
    return this.#clean.length + this.#cachedFree.size;
  }

  /** Blocks held by at least one sequence. */
  get numUsed(): number {
    return this.numBlocks - this.numFree;
  }

  /** Free blocks that still hold a findable prefix. */
  get numCachedFree(): number {
    return this.#cachedFree.size;
  }

  refCount(block: number): number {
    return this.#refCount[block];
  }

  /** Blocks needed to hold `tokens` tokens. */
  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  /**
   * The cached blocks for the longest run of leading full blocks of `seq.tokens` that covers at
   * most `maxTokens` tokens. Takes nothing: acquire() the blocks to use them.
   */
  findPrefix(seq: HashedTokens, maxTokens: number): PrefixHit {
    const hit: PrefixHit = { blocks: [], numFreeHits: 0 };
    const bs = this.blockSize;
    const limit = Math.floor(Math.min(maxTokens, seq.tokens.length) / bs);
    for (let i = 0; i < limit; i++) {
      const h = seq.blockHash(i, bs);
      const block = this.#byHash.get(h);
      if (block === undefined || !sameIds(this.#tokensOf[block]!, seq.tokens, i * bs)) break;
      hit.blocks.push(block);
      if (this.#refCount[block] === 0) hit.numFreeHits++;
    }
    return hit;
  }

  /** Take a reference to blocks found by findPrefix (before any allocate() can evict them). */
  acquire(blocks: readonly number[]): void {
    for (const b of blocks) {
      if (this.#hashOf[b] === null) throw new Error(`acquire of block ${b}, which holds no cached prefix`);
      if (this.#refCount[b] === 0) this.#cachedFree.delete(b);
      this.#refCount[b]++;
    }
  }

  /** `count` fresh blocks with one reference each; throws when fewer are free. */
  allocate(count: number): number[] {
    if (count > this.numFree) {
      throw new Error(`KV cache full: need ${count} blocks, ${this.numFree} of ${this.numBlocks} free`);
    }
    const out: number[] = [];
    for (let i = 0; i < count; i++) {
      let b = this.#clean.pop();
      if (b === undefined) {
        b = this.#cachedFree.keys().next().value as number;
        this.#cachedFree.delete(b);
        this.#forget(b);
      }
      this.#refCount[b] = 1;
      out.push(b);
    }
    return out;
  }

  /**
   * Drop one reference to each block. Pass a sequence's table as is: it is released from its
   * last block back, so the deep end of a chain is evicted before the shared root blocks.
   */
  release(blocks: readonly number[]): void {
    for (let i = blocks.length - 1; i >= 0; i--) {
      const b = blocks[i];
      if (!Number.isInteger(b) || b < 0 || b >= this.numBlocks) throw new Error(`release of unknown block ${b}`);
      if (this.#refCount[b] <= 0) throw new Error(`release of free block ${b}`);
      if (--this.#refCount[b] > 0) continue;
      if (this.#hashOf[b] !== null) this.#cachedFree.set(b, true);
      else this.#clean.push(b);
    }
  }

  /**
   * Name a block that now holds the full, computed block `tokenIds` with chained hash `hash`.
   * If another block already holds that prefix (two sequences computed it at once), the first
   * keeps the name and this one stays anonymous: it is freed plainly when released.
   */
  register(block: number, hash: string, tokenIds: readonly number[]): void {
    if (tokenIds.length !== this.blockSize) throw new Error(`register of a block with ${tokenIds.length} tokens; only full blocks of ${this.blockSize} are cached`);
    if (this.#refCount[block] <= 0) throw new Error(`register of free block ${block}`);
    if (this.#hashOf[block] !== null) return;
    if (this.#byHash.has(hash)) return;
    this.#byHash.set(hash, block);
    this.#hashOf[block] = hash;
    this.#tokensOf[block] = [...tokenIds];
  }

  /** The hash a block is findable by, or null. */
  hashOf(block: number): string | null {
    return this.#hashOf[block];
  }

  #forget(block: number): void {
    const h = this.#hashOf[block];
    if (h !== null && this.#byHash.get(h) === block) this.#byHash.delete(h);
    this.#hashOf[block] = null;
    this.#tokensOf[block] = null;
  }
}

/** block[j] === tokens[start + j] for the whole block. */
function sameIds(block: readonly number[], tokens: readonly number[], start: number): boolean {
  for (let j = 0; j < block.length; j++) if (block[j] !== tokens[start + j]) return false;
  return true;
}
