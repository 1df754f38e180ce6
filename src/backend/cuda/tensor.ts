/**
 * CUDA tensors and the device scratch arena they are carved from.
 *
 * Storage dtypes: 'bf16' (weights, activations, KV cache), 'f32' (logits, small vectors, anything
 * uploaded as f32) and 'i32'. 'f16' is asked for by f16 checkpoints and stored as bf16.
 *
 * A tensor is a device address plus shape and dtype. Persistent tensors own an allocation until
 * `free`; scratch tensors are slices of the arena, stamped with its generation, and any use after
 * `resetScratch()` throws (as on the CPU backend) instead of reading memory that now belongs to
 * the next step. i32 tensors uploaded from the host keep a host copy (`host`) so ids, slots and
 * block tables can be range-checked without reading the GPU.
 */
import type { DType, Lifetime, Tensor } from '../backend.ts';
import type { NativeCuda } from './native.ts';

export type CudaDType = 'f32' | 'bf16' | 'i32';

export function cudaDtype(dtype: DType): CudaDType {
  switch (dtype) {
    case 'f32':
    case 'bf16':
    case 'i32':
      return dtype;
    case 'f16':
      return 'bf16';
    default:
      throw new Error(`unknown dtype '${String(dtype)}' (use f32, bf16, f16 or i32)`);
  }
}

export function elemBytes(dtype: CudaDType): number {
  return dtype === 'bf16' ? 2 : 4;
}

/** Bytes the native allocator really takes for a request (it rounds to 512). */
export function allocatedBytes(bytes: number): number {
  return Math.max(512, Math.ceil(bytes / 512) * 512);
}

export class CudaTensor implements Tensor {
  readonly backend = 'cuda';
  /** Set by `free` on the tensor that owns the storage; views read it through `root`. */
  freed = false;

  constructor(
    /** The CudaBackend instance that made it: tensors never cross instances. */
    readonly owner: object,
    readonly shape: readonly number[],
    readonly dtype: CudaDType,
    /** Device address of element 0. */
    readonly ptr: number,
    /** Element count. */
    readonly size: number,
    readonly lifetime: Lifetime,
    /** Arena generation a scratch tensor belongs to (-1 for persistent tensors). */
    readonly generation: number,
    /** The tensor whose storage this one views, or null when it owns its storage. */
    readonly root: CudaTensor | null,
    /** Host copy of an i32 tensor's contents when they are known (uploaded, or zero-filled). */
    readonly host: Int32Array | null,
    /** Bytes held by the allocation (persistent tensors that own their storage). */
    readonly allocBytes: number,
  ) {}

  get bytes(): number {
    return this.size * elemBytes(this.dtype);
  }
}

/** Arena alignment: cuBLASLt and 16-byte vector loads want at least this. */
const ALIGN = 256;
const MIN_CHUNK = 16 << 20;
const MAX_CHUNK = 1 << 30;

/**
 * Device scratch memory: a bump allocator over a list of chunks. A step makes the same requests
 * in the same order every time, so from the second step on it gets the same addresses and no new
 * memory (what CUDA graph capture will rely on). A request that does not fit the current chunk
 * moves to the next one that fits, or to a new chunk (sized to the arena so far, so the chunk
 * count stays logarithmic). Reuse after reset is safe without waiting: the GPU runs everything on
 * one stream, so new work on recycled memory is queued behind the old work.
 *
 * Under a memory budget the arena is one chunk of `limit` bytes, allocated by reserve(), and a
 * step that needs more gets a clear error instead of growing it (or running the GPU out of memory).
 */
/** An arena under a limit was asked for more than it holds. */
export class ArenaFullError extends Error {}

export class DeviceArena {
  private readonly chunks: { ptr: number; bytes: number }[] = [];
  private current = 0;
  private offset = 0;
  /** Bytes taken since the last reset (the size one chunk would need for this step). */
  private taken = 0;
  /** Bumped by every reset; scratch tensors of older generations are stale. */
  generation = 0;
  /** Chunks allocated so far (constant once steps repeat). */
  allocations = 0;
  /** Most bytes taken between two resets so far (see resetPeak). */
  peakBytes = 0;
  /** Bytes the arena may hold in all, or null: no limit. */
  private limit: number | null = null;

  constructor(private readonly native: NativeCuda) {}

  /** Device address of `bytes` bytes, 256-byte aligned, valid until the next reset. */
  take(bytes: number): number {
    const need = Math.max(ALIGN, Math.ceil(bytes / ALIGN) * ALIGN);
    this.taken += need;
    this.peakBytes = Math.max(this.peakBytes, this.taken);
    while (this.current < this.chunks.length) {
      const c = this.chunks[this.current];
      if (c.bytes - this.offset >= need) {
        const ptr = c.ptr + this.offset;
        this.offset += need;
        return ptr;
      }
      this.current++;
      this.offset = 0;
    }
    let size = Math.max(need, Math.min(MAX_CHUNK, Math.max(MIN_CHUNK, this.bytesHeld)));
    if (this.limit !== null) {
      size = this.limit - this.bytesHeld;
      if (size < need) {
        throw new ArenaFullError(
          `scratch arena full: this step needs more than the ${fmtMiB(this.limit)} of scratch the GPU memory budget gives it ` +
            `(${fmtMiB(this.taken)} asked for so far): lower --max-num-batched-tokens (or the training micro-batch), or raise --gpu-memory`,
        );
      }
    }
    const ptr = this.native.malloc(size);
    this.allocations++;
    this.chunks.push({ ptr, bytes: size });
    this.current = this.chunks.length - 1;
    this.offset = need;
    return ptr;
  }

  reset(): void {
    this.current = 0;
    this.offset = 0;
    this.taken = 0;
    this.generation++;
  }

  /**
   * Hold exactly one chunk of `bytes` from now on, allocated at once, and never grow past it
   * (scratch tensors die, as at a reset).
   */
  reserve(bytes: number): void {
    if (!Number.isSafeInteger(bytes) || bytes < ALIGN) throw new Error(`scratch reserve must be an integer of at least ${ALIGN} bytes, got ${bytes}`);
    this.release();
    this.limit = bytes;
    this.chunks.push({ ptr: this.native.malloc(bytes), bytes });
    this.allocations++;
  }

  /** Start measuring peakBytes afresh. */
  resetPeak(): void {
    this.peakBytes = this.taken;
  }

  /** Give every chunk back to the allocator (the arena stays usable and starts over). */
  release(): void {
    for (const c of this.chunks) this.native.free(c.ptr);
    this.chunks.length = 0;
    this.reset();
  }

  get bytesHeld(): number {
    let n = 0;
    for (const c of this.chunks) n += c.bytes;
    return n;
  }
}

function fmtMiB(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
