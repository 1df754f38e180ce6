/**
 * Which bytes of the weights named in Backend.prefetch() go into the L2 prefetch (kernels/prefetch.cu).
 *
 * The cache holds only so much, and bytes prefetched too early are evicted before their product
 * reads them, so the prefetch has a budget: tensors in the order given, each whole while it fits;
 * the budget left when one no longer fits is shared equally by it and the ones after it, each
 * taking its leading bytes. For [o, gate, up] that is all of o and the same first rows of gate and
 * up, which the fused gate/up kernel reads together.
 */

export interface PrefetchRange {
  ptr: number;
  bytes: number;
}

/** The share of the L2 cache a prefetch takes under TANDEM_L2_PREFETCH=1. */
export const DEFAULT_L2_SHARE = 1 / 3;

/**
 * Bytes a prefetch may take: 0 (off) unless asked for. TANDEM_L2_PREFETCH=1 gives a third of the L2,
 * TANDEM_L2_PREFETCH_MB a size of its own. Off by default: on an H100 (2026-12-07, decode-replay at
 * batch 1) it made a decode step 1.25 ms slower (4.17 vs 2.91 ms), so it stays for experiments.
 */
export function prefetchBudget(l2CacheBytes: number, env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.TANDEM_L2_PREFETCH_MB;
  if (raw !== undefined && raw !== '') {
    const mb = Number(raw);
    if (!Number.isFinite(mb) || mb < 0) throw new Error(`TANDEM_L2_PREFETCH_MB must be a number of MiB >= 0, got ${JSON.stringify(raw)}`);
    return Math.floor(mb * 2 ** 20);
  }
  if (env.TANDEM_L2_PREFETCH !== '1') return 0;
  return Math.floor(Math.max(0, l2CacheBytes) * DEFAULT_L2_SHARE);
}

/** The ranges to prefetch from `tensors` (device address and size) within `budget` bytes; 16-byte units. */
export function planPrefetch(given: readonly PrefetchRange[], budget: number): PrefetchRange[] {
  // The bulk prefetch starts on a 16-byte boundary: a view that doesn't skips its first bytes.
  const tensors = given.map((t) => {
    const skip = (16 - (t.ptr % 16)) % 16;
    return { ptr: t.ptr + skip, bytes: Math.max(0, t.bytes - skip) };
  });
  const out: PrefetchRange[] = [];
  let left = Math.max(0, Math.floor(budget));
  for (let i = 0; i < tensors.length && left >= 16; i++) {
    const t = tensors[i];
    if (t.bytes <= left) {
      out.push({ ptr: t.ptr, bytes: t.bytes });
      left -= t.bytes;
      continue;
    }
    // Share what is left by this tensor and the ones after it.
    const rest = tensors.slice(i);
    const share = Math.floor(left / rest.length / 16) * 16;
    if (share > 0) for (const r of rest) out.push({ ptr: r.ptr, bytes: Math.min(r.bytes, share) });
    break;
  }
  return out.filter((r) => r.bytes >= 16);
}
