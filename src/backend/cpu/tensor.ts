/**
 * CPU tensors and the scratch arena they are carved from.
 *
 * Storage: every float tensor is a Float32Array and reports dtype 'f32', whatever dtype the
 * caller asked for ('bf16' / 'f16' weights are widened on load; the CPU backend computes in f32
 * throughout, see DESIGN.md). 'i32' tensors are Int32Arrays.
 *
 * Lifetimes: a persistent tensor owns its array until `free`. A scratch tensor is a view of
 * one of the arena's buffers and remembers the arena generation it was made in; after
 * `resetScratch()` the generation moves on and any use of the old tensor throws instead of
 * reading memory that now belongs to someone else.
 */
import type { DType, Lifetime, Tensor } from '../backend.ts';

export type CpuDType = 'f32' | 'i32';
export type CpuData = Float32Array | Int32Array;

export class CpuTensor implements Tensor {
  readonly backend = 'cpu';
  /** Set by `free` on the tensor that owns the storage; views read it through `root`. */
  freed = false;

  constructor(
    /** The CpuBackend instance that made it: tensors never cross instances. */
    readonly owner: object,
    readonly shape: readonly number[],
    readonly dtype: CpuDType,
    readonly data: CpuData,
    readonly lifetime: Lifetime,
    /** Arena generation a scratch tensor belongs to (-1 for persistent tensors). */
    readonly generation: number,
    /** The tensor whose storage this one views, or null when it owns its storage. */
    readonly root: CpuTensor | null,
  ) {}

  get size(): number {
    return this.data.length;
  }
}

/** A tensor already checked to be f32 / i32 (see CpuBackend's argument checks). */
export type F32Tensor = CpuTensor & { readonly data: Float32Array };
export type I32Tensor = CpuTensor & { readonly data: Int32Array };

/** Float dtypes are all stored as f32 on the CPU. */
export function cpuDtype(dtype: DType): CpuDType {
  return dtype === 'i32' ? 'i32' : 'f32';
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function checkShape(where: string, shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new Error(`${where}: bad shape ${fmtShape(shape)} (dims must be integers >= 0)`);
  }
}

/**
 * Scratch memory: a list of buffers handed out in allocation order. A step makes the same
 * allocations in the same order every time, so after the first (largest) step each request
 * lands on a buffer that is already big enough and nothing new is allocated. A buffer that is
 * too small is replaced by a bigger one; the old one only backed tensors of past generations.
 */
export class ScratchArena {
  private readonly buffers: (ArrayBuffer | SharedArrayBuffer)[] = [];
  private next = 0;
  /** Bumped by every reset; scratch tensors of older generations are stale. */
  generation = 0;
  /** ArrayBuffers created so far (for tests that check the steady state allocates nothing). */
  allocations = 0;

  /** With `shared`, buffers are SharedArrayBuffers (for worker threads to read and write). */
  constructor(private readonly shared = false) {}

  /** A buffer of at least `bytes` bytes, valid until the next reset. */
  take(bytes: number): ArrayBuffer | SharedArrayBuffer {
    const i = this.next++;
    const have = this.buffers[i];
    if (have !== undefined && have.byteLength >= bytes) return have;
    // Round up so that steps whose sizes wobble a little (one more token) reuse the buffer.
    const grain = bytes <= 4096 ? 256 : 4096;
    const size = Math.max(grain, Math.ceil(bytes / grain) * grain);
    const buf = this.shared ? new SharedArrayBuffer(size) : new ArrayBuffer(size);
    this.allocations++;
    this.buffers[i] = buf;
    return buf;
  }

  reset(): void {
    this.next = 0;
    this.generation++;
  }

  get bytesHeld(): number {
    let n = 0;
    for (const b of this.buffers) n += b.byteLength;
    return n;
  }
}
