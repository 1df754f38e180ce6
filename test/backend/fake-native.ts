/**
 * A stand-in for the CUDA addon's allocator, for tests of host-side memory logic (arenas,
 * graphs' scratch) without a GPU: hands out distinct addresses and records what is live. `extra`
 * adds the addon methods a test needs beyond malloc and free.
 */
import assert from 'node:assert/strict';
import type { NativeCuda } from '../../src/backend/cuda/native.ts';

export function fakeNative(extra: Partial<Record<keyof NativeCuda, unknown>> = {}): { native: NativeCuda; live: Map<number, number> } {
  const live = new Map<number, number>();
  let next = 1 << 20;
  const native = {
    malloc(bytes: number): number {
      const p = next;
      next += Math.ceil(bytes / 4096) * 4096 + 4096;
      live.set(p, bytes);
      return p;
    },
    free(p: number): void {
      assert.ok(live.delete(p), `free of unknown pointer ${p}`);
    },
    ...extra,
  } as unknown as NativeCuda;
  return { native, live };
}
