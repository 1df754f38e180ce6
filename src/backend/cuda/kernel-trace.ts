/**
 * The kernel trace of a TANDEM_CUDA_TRACE=1 build (kernels/trace.h): while `run` queues work,
 * thread 0 of every block of the PDL kernels records when the block started and when its
 * grid-dependency wait returned. Used by bench/decode-replay.ts --trace to read a decode graph
 * as a timeline (bench/kernel-timeline.ts); an addon built without the trace throws.
 */
import { DTYPE_CODE, type NativeCuda } from './native.ts';

export interface TraceRecord {
  /** ns since the trace's first record (%globaltimer). */
  t: number;
  kind: 'start' | 'wait';
  sm: number;
  /** Blocks in the kernel's grid. */
  blocks: number;
  /** The block's linear index in its grid. */
  block: number;
}

/** Records of two u64 words each, read as four i32 (little-endian) words. */
export function decodeTraceRecords(words: Int32Array, count: number): TraceRecord[] {
  if (words.length < count * 4) throw new Error(`decodeTraceRecords: ${count} records need ${count * 4} words, got ${words.length}`);
  const u64 = (i: number): bigint => (BigInt(words[i + 1] >>> 0) << 32n) | BigInt(words[i] >>> 0);
  let t0: bigint | null = null;
  const raw: { t: bigint; info: bigint }[] = [];
  for (let r = 0; r < count; r++) {
    const t = u64(4 * r);
    raw.push({ t, info: u64(4 * r + 2) });
    if (t0 === null || t < t0) t0 = t;
  }
  return raw.map(({ t, info }) => ({
    t: Number(t - (t0 ?? 0n)),
    kind: info >> 62n === 0n ? 'start' : 'wait',
    sm: Number((info >> 48n) & 0x3fffn),
    blocks: Number((info >> 24n) & 0xffffffn),
    block: Number(info & 0xffffffn),
  }));
}

/**
 * Trace the kernels `run` queues (after the work queued before it), up to `capacity` records
 * (two per block); `dropped` counts the records past it.
 */
export async function traceKernels(native: NativeCuda, run: () => void, capacity = 1 << 21): Promise<{ records: TraceRecord[]; dropped: number }> {
  if (!Number.isInteger(capacity) || capacity < 1 || capacity > 2 ** 28) throw new Error(`traceKernels: capacity ${capacity} records is out of range`);
  const records = native.malloc(capacity * 16);
  const counter = native.malloc(16);
  try {
    native.zero(counter, 16);
    native.traceAttach(records, counter, capacity);
    try {
      run();
    } finally {
      native.traceAttach(0, 0, 0); // waits for what run() queued
    }
    const claimed = ((await native.download(counter, 1, DTYPE_CODE.i32)) as Int32Array)[0] >>> 0;
    const count = Math.min(claimed, capacity);
    const words = count === 0 ? new Int32Array(0) : ((await native.download(records, count * 4, DTYPE_CODE.i32)) as Int32Array);
    return { records: decodeTraceRecords(words, count), dropped: claimed - count };
  } finally {
    native.free(records);
    native.free(counter);
  }
}
