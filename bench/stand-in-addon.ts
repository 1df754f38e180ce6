/**
 * A CUDA addon stand-in for host-side benchmarks without a GPU (bench/host-cost.ts,
 * bench/host-serve.ts): the CUDA backend drives it as it would the real addon, every op returns at
 * once (the fast paths' "taken"), downloads give zeros, and the planning queries are answered as
 * an H100 would. So an engine step's wall time is what the host spends on it.
 */
import type { NativeCuda } from '../src/backend/cuda/native.ts';

/** Calls of each addon function that queues GPU work, counted by the stand-in. */
export const calls = new Map<string, number>();
/** Addon functions that answer a question or manage memory: no GPU work, not counted. */
const QUERIES = new Set(['probe', 'init', 'malloc', 'free', 'emptyCache', 'memStats', 'attentionPlan', 'attentionHeadDimSupported', 'attentionPackedHeadDimSupported', 'greedySampleWorkspaceBytes', 'sampleLimits', 'sumSquaresPartials']);

/** The stand-in: distinct addresses from malloc, every op a no-op that reports it ran. */
export function standInAddon(): NativeCuda {
  let next = 1 << 20;
  let graphs = 0;
  const fixed: Partial<Record<keyof NativeCuda, unknown>> = {
    probe: () => ({ count: 1, error: null }),
    init: (device: number) => ({ name: 'stand-in (no GPU)', device, totalMemory: 80 * 2 ** 30, multiprocessors: 132, l2CacheBytes: 50 * 2 ** 20, major: 9, minor: 0 }),
    malloc: (bytes: number) => {
      const p = next;
      next += Math.ceil(bytes / 4096) * 4096 + 4096;
      return p;
    },
    memStats: () => ({ live: 0, cached: 0, workspace: 0, pinned: 0 }),
    download: (_src: number, n: number, dtype: number) => Promise.resolve(dtype === 2 ? new Int32Array(n) : new Float32Array(n)),
    synchronize: () => Promise.resolve(),
    graphEnd: () => ++graphs,
    attentionPlan: () => ({ splits: 1, workspaceBytes: 0 }),
    attentionHeadDimSupported: () => true,
    attentionPackedHeadDimSupported: () => true,
    greedySampleWorkspaceBytes: () => 0,
    sampleLimits: () => ({ maxTopLogprobs: 1024, maxPenaltyVocab: 1 << 20 }),
    sumSquaresPartials: () => 64,
  };
  const count = (name: string, fn: (...args: never[]) => unknown) => (...args: never[]) => {
    if (!QUERIES.has(name)) calls.set(name, (calls.get(name) ?? 0) + 1);
    return fn(...args);
  };
  return new Proxy(fixed, {
    get: (target, name: string) => count(name, (name in target ? target[name as keyof NativeCuda] : () => true) as (...args: never[]) => unknown),
  }) as NativeCuda;
}
