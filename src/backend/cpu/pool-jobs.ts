/**
 * What the main thread and the pool's workers share: the layout of the control block and the
 * code that runs one task of a job. Both sides run tasks through `runTask`, so a task computes
 * the same thing whichever thread claims it.
 *
 * Control block: an Int32Array over a SharedArrayBuffer (CTRL_INTS ints), then a Float64Array
 * (CTRL_F64 doubles) for float arguments. A job's arrays are passed as (buffer id, byte offset,
 * length) triples; buffer ids name SharedArrayBuffers that the main thread has posted to every
 * worker beforehand (see pool.ts). Arguments from ARGS on:
 *   linear:    out, x, w, bias (id -1: none) triples, then T, K, N;
 *   attention: out, q, kPool, vPool (f32), cuSeqlensQ, contextLens, blockTables (i32) triples,
 *              then S, H, Hkv, D, blockSize, maxBlocks; the scale is f64[0].
 *   linear backward (input: dx = dy w; weight: dw += alpha dy^T x): out, dy, w or x triples,
 *              then T, K, N; alpha is f64[0].
 */
import { AttentionWorkspace, attentionPlan, attentionTasks } from './attention.ts';
import type { AttentionDims } from './attention.ts';
import { linearPlan, linearTasks } from './matmul.ts';
import type { LinearPlan } from './matmul.ts';
import { linearBackwardPlan, linearBackwardTasks } from './matmul-backward.ts';
import type { LinearBackwardKind } from './matmul-backward.ts';

// Control slots. Slots that change within a job sit 64 bytes apart from those that pollers read
// (SEQ, OPEN), so that claiming tasks does not keep pulling the line away from them.
/** Bumped by the main thread to announce a job (or news on the port); idle workers wait on it. */
export const SEQ = 0;
/** 1 while the job's arguments are valid and its tasks may be claimed. */
export const OPEN = 1;
/** Tasks in the job. */
export const TOTAL = 2;
export const OP = 3;
/** Set once by dispose(): workers leave their loop. */
export const QUIT = 4;
/** Workers serving (counted once each, after their modules have loaded). */
export const READY = 5;
/** Set when a task threw. */
export const ERROR = 6;
/** Workers that failed to start (their boot code counts them). */
export const FAILED = 7;
/** Next unclaimed task. */
export const NEXT = 16;
/** Tasks finished. */
export const DONE = 32;
/** Workers inside a job (entered, not yet left); the main thread waits for 0 before reusing. */
export const ACTIVE = 33;
/** Tasks run by workers so far (statistics, and proof in tests that they took part). */
export const WORKER_TASKS = 34;
/** Job arguments start here. */
export const ARGS = 48;
export const CTRL_INTS = 96;
export const CTRL_F64 = 4;

export const OP_LINEAR = 1;
export const OP_ATTENTION = 2;
export const OP_LINEAR_DX = 3;
export const OP_LINEAR_DW = 4;

/** The SharedArrayBuffer registered under an id. */
export type BufferOf = (id: number) => SharedArrayBuffer;

/** Per-thread state of a job in progress: its arrays and plan, set up once per job. */
export class JobRunner {
  private readonly attnWs = new AttentionWorkspace();
  private op = 0;
  // linear
  private out: Float32Array = new Float32Array(0);
  private x: Float32Array = new Float32Array(0);
  private w: Float32Array = new Float32Array(0);
  private bias: Float32Array | null = null;
  private T = 0;
  private K = 0;
  private N = 0;
  private plan: LinearPlan = { rowBlock: 4, colBlock: 4, rowBlocks: 0, tasks: 0 };
  // linear backward (out, x = dy, w = w or x, T, K, N and plan above)
  private backKind: LinearBackwardKind = 'input';
  private alpha = 1;
  // attention
  private q: Float32Array = new Float32Array(0);
  private kPool: Float32Array = new Float32Array(0);
  private vPool: Float32Array = new Float32Array(0);
  private cu: Int32Array = new Int32Array(0);
  private lens: Int32Array = new Int32Array(0);
  private tables: Int32Array = new Int32Array(0);
  private dims: AttentionDims = { S: 0, H: 0, Hkv: 0, D: 0, blockSize: 0, maxBlocks: 0 };
  private scale = 0;

  /** Read the job's arguments from the control block (on a worker). */
  setup(ctrl: Int32Array, f64: Float64Array, bufferOf: BufferOf): void {
    const a = ARGS;
    const f32 = (slot: number): Float32Array => new Float32Array(bufferOf(ctrl[slot]), ctrl[slot + 1], ctrl[slot + 2]);
    const i32 = (slot: number): Int32Array => new Int32Array(bufferOf(ctrl[slot]), ctrl[slot + 1], ctrl[slot + 2]);
    const op = ctrl[OP];
    if (op === OP_LINEAR) {
      this.setLinear(f32(a), f32(a + 3), f32(a + 6), ctrl[a + 9] < 0 ? null : f32(a + 9), ctrl[a + 12], ctrl[a + 13], ctrl[a + 14]);
    } else if (op === OP_LINEAR_DX || op === OP_LINEAR_DW) {
      const kind = op === OP_LINEAR_DX ? 'input' : 'weight';
      this.setLinearBackward(kind, f32(a), f32(a + 3), f32(a + 6), ctrl[a + 9], ctrl[a + 10], ctrl[a + 11], f64[0]);
    } else if (op === OP_ATTENTION) {
      const d = a + 21;
      const dims = { S: ctrl[d], H: ctrl[d + 1], Hkv: ctrl[d + 2], D: ctrl[d + 3], blockSize: ctrl[d + 4], maxBlocks: ctrl[d + 5] };
      this.setAttention(f32(a), f32(a + 3), f32(a + 6), f32(a + 9), i32(a + 12), i32(a + 15), i32(a + 18), dims, f64[0]);
    } else {
      throw new Error(`cpu thread pool: unknown op ${op}`);
    }
  }

  setLinear(out: Float32Array, x: Float32Array, w: Float32Array, bias: Float32Array | null, T: number, K: number, N: number): number {
    this.op = OP_LINEAR;
    this.out = out;
    this.x = x;
    this.w = w;
    this.bias = bias;
    this.T = T;
    this.K = K;
    this.N = N;
    this.plan = linearPlan(T, K, N);
    return this.plan.tasks;
  }

  /** dx = dy @ w ('input', b = w) or dw += alpha * dy^T @ x ('weight', b = x). */
  setLinearBackward(kind: LinearBackwardKind, out: Float32Array, dy: Float32Array, b: Float32Array, T: number, K: number, N: number, alpha: number): number {
    this.op = kind === 'input' ? OP_LINEAR_DX : OP_LINEAR_DW;
    this.backKind = kind;
    this.out = out;
    this.x = dy;
    this.w = b;
    this.T = T;
    this.K = K;
    this.N = N;
    this.alpha = alpha;
    this.plan = linearBackwardPlan(kind, T, K, N);
    return this.plan.tasks;
  }

  setAttention(
    out: Float32Array,
    q: Float32Array,
    kPool: Float32Array,
    vPool: Float32Array,
    cu: Int32Array,
    lens: Int32Array,
    tables: Int32Array,
    dims: AttentionDims,
    scale: number,
  ): number {
    this.op = OP_ATTENTION;
    this.out = out;
    this.q = q;
    this.kPool = kPool;
    this.vPool = vPool;
    this.cu = cu;
    this.lens = lens;
    this.tables = tables;
    this.dims = dims;
    this.scale = scale;
    return attentionPlan(cu, lens, dims, this.attnWs);
  }

  get workspaceBytes(): number {
    return this.attnWs.bytes;
  }

  runTask(t: number): void {
    if (this.op === OP_LINEAR) {
      linearTasks(this.out, this.x, this.w, this.bias, this.T, this.K, this.N, this.plan, t, t + 1);
    } else if (this.op === OP_LINEAR_DX || this.op === OP_LINEAR_DW) {
      linearBackwardTasks(this.backKind, this.out, this.x, this.w, this.T, this.K, this.N, this.alpha, this.plan, t, t + 1);
    } else {
      attentionTasks(this.out, this.q, this.kPool, this.vPool, this.cu, this.lens, this.tables, this.dims, this.scale, this.attnWs, t, t + 1);
    }
  }

  /** Drop references to the job's arrays (so buffers can be collected between jobs). */
  clear(): void {
    this.out = this.x = this.w = this.q = this.kPool = this.vPool = new Float32Array(0);
    this.cu = this.lens = this.tables = new Int32Array(0);
    this.bias = null;
  }
}

/**
 * Claim and run tasks until none are left, counting each in DONE as it finishes (the last one
 * wakes the main thread). A task that throws still counts as done, with ERROR set; the first
 * error is returned (null if none) with the number of tasks run.
 */
export function claimTasks(ctrl: Int32Array, total: number, runner: JobRunner): { ran: number; error: unknown } {
  let error: unknown = null;
  let ran = 0;
  for (;; ran++) {
    const t = Atomics.add(ctrl, NEXT, 1);
    if (t >= total) return { ran, error };
    try {
      runner.runTask(t);
    } catch (e) {
      Atomics.store(ctrl, ERROR, 1);
      error ??= e;
    }
    if (Atomics.add(ctrl, DONE, 1) === total - 1) Atomics.notify(ctrl, DONE);
  }
}
