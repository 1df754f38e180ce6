/**
 * A fixed pool of KV-cache blocks handed out by id. The serving engine's block manager
 * (prefix caching, ref counts) builds on this; `tandem generate` uses it directly.
 */
export class BlockPool {
  private readonly free: number[];

  constructor(readonly numBlocks: number, readonly blockSize: number) {
    if (!Number.isInteger(numBlocks) || numBlocks <= 0) throw new Error(`block pool needs a positive block count, got ${numBlocks}`);
    if (!Number.isInteger(blockSize) || blockSize <= 0) throw new Error(`block size must be a positive integer, got ${blockSize}`);
    // Hand out low ids first: pop() from the end of a descending list.
    this.free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  get numFree(): number {
    return this.free.length;
  }

  /** Blocks needed to hold `tokens` tokens. */
  blocksFor(tokens: number): number {
    return Math.ceil(tokens / this.blockSize);
  }

  allocate(count: number): number[] {
    if (count > this.free.length) {
      throw new Error(`KV cache full: need ${count} blocks, ${this.free.length} of ${this.numBlocks} free`);
    }
    const out: number[] = [];
    for (let i = 0; i < count; i++) out.push(this.free.pop()!);
    return out;
  }

  /** Grow `table` in place so it covers `tokens` tokens. */
  ensure(table: number[], tokens: number): void {
    const missing = this.blocksFor(tokens) - table.length;
    if (missing > 0) table.push(...this.allocate(missing));
  }

  release(blocks: readonly number[]): void {
    for (const b of blocks) {
      if (!Number.isInteger(b) || b < 0 || b >= this.numBlocks) throw new Error(`release of unknown block ${b}`);
      this.free.push(b);
    }
  }
}
