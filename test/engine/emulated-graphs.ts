/** CUDA graphs emulated on the CPU backend, for the engine tests that use graphs without a GPU. */
import type { CapturedGraph, DType, GraphOps, KvCache, Tensor } from '../../src/backend/backend.ts';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';

/**
 * Graphs emulated on the CPU backend, to check the bucket logic (input layout, padding, engine
 * wiring) everywhere: capture runs the work once, replay runs it again and copies the result into
 * a fixed output tensor. writeKv skips negative slots, as the CUDA scatter does for padding rows.
 */
export class EmulatedGraphs implements GraphOps {
  constructor(private readonly be: CpuBackend) {}
  private next = 1;
  /** Output shapes of every capture so far (which buckets were used). */
  readonly capturedRows: number[] = [];
  private readonly works = new Map<number, () => Tensor>();
  /** Graphs captured and not yet freed. */
  get live(): number {
    return this.works.size;
  }
  input(shape: readonly number[], dtype: DType): Tensor {
    return this.be.alloc(shape, dtype, 'persistent');
  }
  /** Output row counts whose capture fails (after the eager run, as an arena past its reserve would). */
  readonly failRows = new Set<number>();
  /** Capture attempts that failed. */
  failures = 0;
  capture(work: () => Tensor): CapturedGraph {
    const first = work();
    if (this.failRows.has(first.shape[0])) {
      this.failures++;
      throw new Error(`emulated capture failure at ${first.shape[0]} rows`);
    }
    const g = { id: this.next++, output: this.be.alloc(first.shape, 'f32', 'persistent') };
    this.works.set(g.id, work);
    this.capturedRows.push(first.shape[0]);
    return g;
  }
  replay(g: CapturedGraph): void {
    this.be.copy(g.output, this.works.get(g.id)!());
  }
  free(g: CapturedGraph): void {
    this.works.delete(g.id);
    this.be.free(g.output);
  }
}

export class GraphCpuBackend extends CpuBackend {
  readonly graphs = new EmulatedGraphs(this);
  override writeKv(cache: KvCache, layer: number, k: Tensor, v: Tensor, slots: Tensor): void {
    const all = (slots as unknown as { data: Int32Array }).data;
    const keep = [...all.keys()].filter((i) => all[i] >= 0);
    if (keep.length === all.length) return super.writeKv(cache, layer, k, v, slots);
    if (keep.length === 0) return;
    const [T, Hkv, D] = k.shape;
    const idx = this.upload(Int32Array.from(keep), [keep.length], 'i32', 'scratch');
    const pick = (x: Tensor): Tensor => this.view(this.gatherRows(this.view(x, [T, Hkv * D]), idx), [keep.length, Hkv, D]);
    super.writeKv(cache, layer, pick(k), pick(v), this.upload(Int32Array.from(keep, (i) => all[i]), [keep.length], 'i32', 'scratch'));
  }
}
