/**
 * Whether the CUDA backend can run in this process: the addon is built and loads, and the CUDA
 * runtime sees at least one device. Cheap after the first call (cached); never throws.
 */
import { tryLoadNative } from './native.ts';

let reason: string | null | undefined;

/** Why the CUDA backend cannot run here (one line), or null when it can. */
export function cudaUnavailableReason(): string | null {
  if (reason !== undefined) return reason;
  const r = tryLoadNative();
  if ('reason' in r) {
    reason = r.reason;
  } else {
    try {
      const p = r.native.probe();
      reason = p.count > 0 ? null : `no CUDA device visible (${p.error ?? 'cudaGetDeviceCount found none'})`;
    } catch (e) {
      reason = `CUDA device probe failed: ${e instanceof Error ? e.message : String(e)}`;
    }
  }
  return reason;
}

/** True when `new CudaBackend()` can be expected to work (for createBackend('auto')). */
export function cudaAvailable(): boolean {
  return cudaUnavailableReason() === null;
}
