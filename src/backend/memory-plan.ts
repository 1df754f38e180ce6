/**
 * The device memory budget (`tandem serve --gpu-memory`): one partition of a byte budget into
 * the base weights, the KV block pool, the workspace (scratch arena + GEMM workspace) and a
 * reserve for LoRA adapter versions, decided once at start so that nothing allocates outside
 * its part at run time (DESIGN.md, "GPU sharing").
 *
 * Pure arithmetic: the caller measures the weights and the workspace and says what one KV
 * block costs; planMemory picks the block count (or checks the one asked for) and explains,
 * in bytes, why a budget that cannot hold the model and one full-length request fails.
 *
 *   const plan = planMemory({ total: 24 * GiB, weights, workspace, adapters: 512 * MiB,
 *     kvBytesPerBlock, kvFixedBytes: 0, blockSize: 16, maxModelLen: 32768, maxUsefulBlocks });
 *   plan.numBlocks; // KV blocks that fit what is left
 */

export const MiB = 2 ** 20;
export const GiB = 2 ** 30;

export interface MemoryPlanInput {
  /** The whole budget in bytes. */
  total: number;
  /** Bytes the loaded weights hold. */
  weights: number;
  /** Scratch arena plus the GEMM library's workspace. */
  workspace: number;
  /** Reserve for LoRA adapter versions (and training state) made after loading. */
  adapters: number;
  /** Bytes of one KV block over all layers, K and V. */
  kvBytesPerBlock: number;
  /** Bytes the KV pool takes beyond numBlocks * kvBytesPerBlock (allocation rounding). */
  kvFixedBytes: number;
  blockSize: number;
  /** The longest request: the pool must hold at least one of these. */
  maxModelLen: number;
  /** Blocks asked for explicitly (--kv-cache-tokens / --kv-blocks); absent: fill what is left. */
  requestedBlocks?: number;
  /** Never plan more blocks than this (every running sequence at full length). */
  maxUsefulBlocks: number;
}

export interface MemoryPlan {
  total: number;
  weights: number;
  kvCache: number;
  workspace: number;
  adapters: number;
  /** What no part claims (a KV pool capped by maxUsefulBlocks or by an explicit size). */
  unassigned: number;
  numBlocks: number;
}

/** The categories of a plan, for the tandem_gpu_memory_budget_bytes gauge. */
export function planCategories(p: MemoryPlan): Record<string, number> {
  return { weights: p.weights, kv_cache: p.kvCache, workspace: p.workspace, adapters: p.adapters, unassigned: p.unassigned };
}

export function planMemory(i: MemoryPlanInput): MemoryPlan {
  for (const [name, v] of Object.entries(i)) {
    if (v !== undefined && !(Number.isFinite(v) && v >= 0)) throw new Error(`planMemory: ${name} must be a number >= 0, got ${v}`);
  }
  if (!(i.kvBytesPerBlock > 0)) throw new Error(`planMemory: kvBytesPerBlock must be positive, got ${i.kvBytesPerBlock}`);
  const fixed = i.weights + i.workspace + i.adapters;
  const kvRoom = i.total - fixed - i.kvFixedBytes;
  const minBlocks = Math.ceil(i.maxModelLen / i.blockSize);
  const kvBytes = (blocks: number): number => blocks * i.kvBytesPerBlock + i.kvFixedBytes;
  const parts =
    `weights ${formatBytes(i.weights)} + workspace ${formatBytes(i.workspace)} + adapter reserve ${formatBytes(i.adapters)}`;
  if (kvRoom < minBlocks * i.kvBytesPerBlock) {
    throw new Error(
      `--gpu-memory ${formatBytes(i.total)} cannot hold ${parts} + the KV cache of one ${i.maxModelLen}-token request ` +
        `(${formatBytes(kvBytes(minBlocks))}) = ${formatBytes(fixed + kvBytes(minBlocks))}: raise --gpu-memory, or lower ` +
        `--max-model-len, --max-num-batched-tokens or --adapter-memory`,
    );
  }
  let numBlocks: number;
  if (i.requestedBlocks !== undefined) {
    numBlocks = i.requestedBlocks;
    if (numBlocks * i.kvBytesPerBlock > kvRoom) {
      throw new Error(
        `a KV cache of ${numBlocks * i.blockSize} tokens (${formatBytes(kvBytes(numBlocks))}) does not fit --gpu-memory ` +
          `${formatBytes(i.total)} next to ${parts}; at most ${Math.floor(kvRoom / i.kvBytesPerBlock) * i.blockSize} tokens fit: ` +
          `lower --kv-cache-tokens (or leave it out to use what is left), or raise --gpu-memory`,
      );
    }
  } else {
    numBlocks = Math.max(minBlocks, Math.min(Math.floor(kvRoom / i.kvBytesPerBlock), i.maxUsefulBlocks));
  }
  const kvCache = kvBytes(numBlocks);
  return { total: i.total, weights: i.weights, kvCache, workspace: i.workspace, adapters: i.adapters, unassigned: i.total - fixed - kvCache, numBlocks };
}

/** 1536 -> "1.5 KiB", 25769803776 -> "24.00 GiB": sizes in messages and logs. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(2)} ${units[u]}`;
}

/**
 * A size option: "24GiB", "512MiB", "20GB" (powers of 1000), "1073741824B", or a fraction in
 * (0, 1] of `whole` ("0.9" = 90 % of the card). Bare numbers above 1 are refused: "24" is more
 * likely a forgotten unit than 24 bytes.
 */
export function parseMemorySize(option: string, raw: string, whole: number): number {
  const m = /^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?b|b)?\s*$/i.exec(raw);
  const bad = (why: string): never => {
    throw new Error(`--${option} must be a size such as 24GiB, 512MiB or 20GB, or a fraction in (0, 1] such as 0.9; got '${raw}' (${why})`);
  };
  if (m === null) return bad('not a number with an optional unit');
  const value = Number(m[1]);
  const unit = m[2]?.toLowerCase();
  if (unit === undefined) {
    if (!(value > 0 && value <= 1)) return bad('a bare number is a fraction and must be in (0, 1]');
    return Math.floor(value * whole);
  }
  const scale: Record<string, number> = {
    b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
  };
  const bytes = Math.floor(value * scale[unit]);
  if (!(bytes > 0)) return bad('it must be more than 0 bytes');
  return bytes;
}
