/**
 * A stand-in for the CUDA addon's allocator, for tests of host-side memory logic (arenas,
 * graphs' scratch) without a GPU: hands out distinct addresses and records what is live. `extra`
 * adds the addon methods a test needs beyond malloc and free.
 */
import assert from 'node:assert/strict';
import { CudaBackend } from '../../src/backend/cuda/cuda-backend.ts';
import type { CudaBackendOptions } from '../../src/backend/cuda/cuda-backend.ts';
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

export type Call = { name: string; args: unknown[] };

/**
 * A CudaBackend over a stand-in addon that records every call: the allocator above, an H100-like
 * device, and every other function "runs" and is taken (returns true). For tests of which addon
 * calls the host side makes, and with what.
 */
export function recordingBackend(opts: Omit<CudaBackendOptions, 'native'> = {}): { be: CudaBackend; calls: Call[] } {
  const calls: Call[] = [];
  const { native } = fakeNative({
    init: (device: number) => ({ name: 'stand-in', device, totalMemory: 80 * 2 ** 30, multiprocessors: 132, l2CacheBytes: 50 * 2 ** 20, major: 9, minor: 0 }),
  });
  const proxy = new Proxy(native as unknown as Record<string, unknown>, {
    get: (target, name: string) => (...args: unknown[]) => {
      calls.push({ name, args });
      const fn = target[name];
      return typeof fn === 'function' ? (fn as (...a: unknown[]) => unknown)(...args) : true;
    },
  }) as unknown as NativeCuda;
  return { be: new CudaBackend({ ...opts, native: proxy }), calls };
}
