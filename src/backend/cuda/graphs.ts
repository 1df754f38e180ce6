/**
 * CUDA graphs on the CudaBackend (Backend.graphs): capture a piece of device work once, replay
 * it with one launch. A decode step is hundreds of small launches whose CPU and driver cost
 * exceeds the GPU time at small batches; a replay costs one.
 *
 * What makes a capture replayable: every address it touches stays fixed. Weights and the KV
 * cache are persistent; per-replay inputs live in persistent tensors (input(), rewritten with
 * Backend.write before each replay); and the work's scratch comes from an arena the graph owns,
 * sized by one eager run of the same work (a step makes the same requests in the same order),
 * then held as one chunk that is never reset while the graph lives. Tensors from that arena
 * carry the graph's tag as their generation, so they stay readable across resetScratch() (the
 * output, e.g. logits) and die with free().
 *
 * Under a GPU memory budget (useSharedArena) every graph takes its scratch from the front of one
 * arena the budget reserves, instead of one arena each: replays run in stream order, so they can
 * share addresses, and the graphs of all batch-size buckets cost the largest one's scratch. A
 * graph's output is then valid until the next replay of any graph (a decode step samples its
 * logits before the next step's replay is queued).
 */
import type { CapturedGraph, DType, GraphOps, Tensor } from '../backend.ts';
import type { NativeCuda } from './native.ts';
import { formatBytes } from '../memory-plan.ts';
import { ArenaFullError, DeviceArena } from './tensor.ts';

/** What the graphs need from their CudaBackend. */
export interface GraphContext {
  native: NativeCuda;
  /** A zeroed persistent tensor with no host copy (its contents change behind the host's back). */
  deviceOnly(shape: readonly number[], dtype: DType): Tensor;
  /** Run `fn` with scratch taken from `arena` instead of the step's arena. */
  withArena<T>(arena: DeviceArena, fn: () => T): T;
}

interface Captured extends CapturedGraph {
  readonly arena: DeviceArena;
  readonly tag: number;
  freed: boolean;
}

export class CudaGraphs implements GraphOps {
  /** Generation tags of the live graphs' arenas: negative, so never equal to a step's generation. */
  readonly liveTags = new Set<number>();
  private nextTag = -2;
  private capturing = false;

  constructor(private readonly ctx: GraphContext) {}

  /** Device bytes the live graphs' arenas hold. */
  get bytesHeld(): number {
    let n = this.shared?.bytesHeld ?? 0;
    for (const g of this.graphs) if (g.arena !== this.shared) n += g.arena.bytesHeld;
    return n;
  }

  private readonly graphs = new Set<Captured>();
  /** The budget's arena that every capture shares, or null: each graph holds its own. */
  private shared: DeviceArena | null = null;

  /**
   * From now on, captures take their scratch from one arena of exactly `bytes` (0: each graph its
   * own arena again, as without a budget). Only while no graph is live: their addresses are fixed.
   */
  useSharedArena(bytes: number): void {
    if (bytes === 0 && this.shared === null) return; // no change (a budget without graphs' part)
    if (this.graphs.size > 0) throw new Error(`graphs: ${this.graphs.size} graph(s) are live; free them before changing where graphs take scratch`);
    this.shared?.release();
    this.shared = null;
    if (bytes === 0) return;
    const arena = new DeviceArena(this.ctx.native);
    arena.reserve(bytes);
    this.shared = arena;
  }


  input(shape: readonly number[], dtype: DType): Tensor {
    return this.ctx.deviceOnly(shape, dtype);
  }

  capture(work: () => Tensor): CapturedGraph {
    if (this.capturing) throw new Error('graphs.capture: a capture is already under way (captures do not nest)');
    this.capturing = true;
    const shared = this.shared;
    const arena = shared ?? new DeviceArena(this.ctx.native);
    const tag = this.nextTag--;
    this.liveTags.add(tag);
    try {
      // Eager run: sizes the arena and warms whatever the ops set up lazily on first use.
      arena.reset();
      arena.generation = tag;
      if (shared) {
        try {
          this.ctx.withArena(arena, work);
        } catch (err) {
          if (!(err instanceof ArenaFullError)) throw err;
          throw new Error(
            `graphs.capture: this graph needs more scratch than the ${formatBytes(shared.bytesHeld)} the GPU memory budget reserves for ` +
              `CUDA graphs (sized at start by the largest decode graph)`,
          );
        }
        arena.reset();
      } else {
        this.ctx.withArena(arena, work);
        arena.reserve(Math.max(256, arena.peakBytes));
      }
      arena.generation = tag;
      this.ctx.native.graphBegin();
      let output: Tensor;
      try {
        output = this.ctx.withArena(arena, work);
      } catch (err) {
        // End the broken capture so the stream works again; its own error is secondary.
        try {
          this.ctx.native.graphDestroy(this.ctx.native.graphEnd());
        } catch {
          /* the capture was already invalid */
        }
        throw err;
      }
      const id = this.ctx.native.graphEnd();
      const g: Captured = { id, output, arena, tag, freed: false };
      this.graphs.add(g);
      return g;
    } catch (err) {
      if (arena !== shared) arena.release();
      this.liveTags.delete(tag);
      throw err;
    } finally {
      this.capturing = false;
    }
  }

  replay(graph: CapturedGraph): void {
    this.ctx.native.graphLaunch(this.own('replay', graph).id);
  }

  free(graph: CapturedGraph): void {
    const g = this.own('free', graph);
    this.ctx.native.graphDestroy(g.id);
    if (g.arena !== this.shared) g.arena.release();
    g.freed = true;
    this.liveTags.delete(g.tag);
    this.graphs.delete(g);
  }

  private own(op: string, graph: CapturedGraph): Captured {
    const g = graph as Captured;
    if (!this.graphs.has(g)) throw new Error(`graphs.${op}: graph ${graph?.id} was freed or belongs to another CudaBackend`);
    return g;
  }
}
