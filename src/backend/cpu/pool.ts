/**
 * A small pool of worker threads that share big `linear` (forward and backward) and `attention`
 * calls with the main thread, through SharedArrayBuffers and Atomics (no messages per call).
 *
 * A call is cut into tasks (matmul.ts, matmul-backward.ts and attention.ts number them; a task
 * computes a fixed set of output elements with fixed code). The main thread writes the job into
 * the control block, bumps SEQ and wakes the workers, then claims tasks from a shared counter
 * like any worker, and waits (Atomics.wait) until every task is done and every worker has left
 * the job. Claiming is dynamic, so a worker that is descheduled, slow to start or never started
 * only means the other threads run more tasks; results are bit-for-bit the same whoever runs
 * which task.
 *
 * Buffers: workers see tensors through SharedArrayBuffers that the main thread posts to them
 * once (on a MessagePort they drain synchronously before each job), under a numeric id. When a
 * buffer is garbage-collected on the main thread, a FinalizationRegistry tells the workers to
 * drop their reference too.
 *
 * Lifetime: workers are unref'd, so they never keep the process alive; dispose() stops them.
 */
import { availableParallelism } from 'node:os';
import { MessageChannel, Worker } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import type { AttentionDims } from './attention.ts';
import type { LinearBackwardKind } from './matmul-backward.ts';
import { ACTIVE, ARGS, CTRL_F64, CTRL_INTS, DONE, ERROR, FAILED, JobRunner, NEXT, OP, OPEN, OP_ATTENTION, OP_LINEAR, OP_LINEAR_DW, OP_LINEAR_DX, QUIT, READY, SEQ, TOTAL, WORKER_TASKS, claimTasks } from './pool-jobs.ts';

/** Threads (main included) a CpuBackend uses by default: TANDEM_CPU_THREADS, else every core. */
export function cpuThreadsDefault(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.TANDEM_CPU_THREADS;
  if (raw !== undefined && raw.trim() !== '') {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new Error(`TANDEM_CPU_THREADS must be an integer >= 1, got '${raw}'`);
    return n;
  }
  return Math.max(1, availableParallelism());
}

/**
 * How long an idle worker polls for the next job before it sleeps in Atomics.wait, and how long
 * the main thread polls for the last tasks. Measured on 2 cores, batch-1 decode of the embedded
 * model: without the main thread's poll, decode gains nothing from a second thread (its own
 * wake-up eats the saving); a worker poll of 0.05 ms does as well as 0.3 ms on an idle machine
 * and costs less when another process wants the core (a polling worker competes for it).
 */
const WORKER_SPIN_MS = 0.05;
const MAIN_SPIN_MS = 0.05;
/**
 * A small job whose last tasks kept the main thread waiting this long was late: small jobs then
 * run on the main thread alone for a while, 10 ms after an isolated late job, twice as long as
 * last time (up to 1 s) when the last one was less than a second ago.
 */
const LATE_MS = 0.25;
const BACKOFF_MIN_MS = 10;
const BACKOFF_MAX_MS = 1000;
/**
 * Workers run at this nice value (Linux): on idle cores it changes nothing, and when another
 * process wants the cores, they yield to it rather than take CPU from it and from the main
 * thread. Measured once on 2 cores with one CPU-bound process beside: batch-1 decode with 2
 * threads went from 17% slower than 1 thread at nice 0 to 9% slower at nice 10; on an idle
 * machine, the same speed either way.
 */
const WORKER_NICE = 10;

/**
 * Code run as each worker's entry point (CommonJS, eval'd): it imports pool-worker.ts. When that
 * is TypeScript, it first registers tsx in the worker through tsx's API: on Node 20 a worker
 * inherits neither hooks registered through that API (bin/tandem.js) nor, in practice, those
 * of `--import tsx` (measured: the import fails with ERR_UNKNOWN_FILE_EXTENSION either way).
 * Workers get no execArgv of their own, so the loader is registered exactly once.
 */
const BOOT = `
const { workerData } = require('node:worker_threads');
(async () => {
  if (workerData.tsxApi !== null) (await import(workerData.tsxApi)).register();
  await import(workerData.entry);
})().catch((e) => {
  console.error('tandem cpu worker failed to start (the CPU backend goes on without it):', e);
  const ctrl = new Int32Array(workerData.control);
  Atomics.add(ctrl, workerData.failedSlot, 1);
  Atomics.notify(ctrl, workerData.failedSlot);
});
`;

type Shared = Float32Array | Int32Array;

export class CpuThreadPool {
  private readonly control = new SharedArrayBuffer(CTRL_INTS * 4 + CTRL_F64 * 8);
  private readonly ctrl = new Int32Array(this.control, 0, CTRL_INTS);
  private readonly f64 = new Float64Array(this.control, CTRL_INTS * 4, CTRL_F64);
  private readonly workers: Worker[] = [];
  private readonly ports: MessagePort[] = [];
  private readonly ids = new WeakMap<SharedArrayBuffer, number>();
  private nextId = 1;
  private readonly registry = new FinalizationRegistry<number>((id) => this.forget(id));
  /** The main thread's own task runner. */
  private readonly runner = new JobRunner();
  private disposed = false;
  /** performance.now() until which small jobs are not shared (0: not congested). */
  private congestedUntil = 0;
  private lastLate = -Infinity;
  private backoffMs = BACKOFF_MIN_MS;

  constructor(readonly workerCount: number) {
    const entry = new URL('./pool-worker.ts', import.meta.url).href;
    let tsxApi: string | null = null;
    if (entry.endsWith('.ts')) {
      try {
        tsxApi = import.meta.resolve('tsx/esm/api');
      } catch {
        tsxApi = null; // no tsx: the worker's import fails and the main thread works alone
      }
    }
    for (let i = 0; i < workerCount; i++) {
      const { port1, port2 } = new MessageChannel();
      const worker = new Worker(BOOT, {
        eval: true,
        execArgv: [],
        workerData: { control: this.control, port: port2, spinMs: WORKER_SPIN_MS, entry, tsxApi, failedSlot: FAILED, nice: WORKER_NICE },
        transferList: [port2],
        name: `tandem-cpu-${i + 1}`,
      });
      worker.on('error', (e) => console.error(`tandem cpu worker ${i + 1}:`, e));
      worker.unref();
      port1.unref();
      this.workers.push(worker);
      this.ports.push(port1);
    }
  }

  /** Threads that share a job: the workers and the main thread. */
  get threads(): number {
    return this.workerCount + 1;
  }

  get workspaceBytes(): number {
    return this.runner.workspaceBytes;
  }

  /** Tasks run by the workers so far. */
  get workerTasks(): number {
    return Atomics.load(this.ctrl, WORKER_TASKS);
  }

  /**
   * Resolves with the number of workers serving once each has either started serving or failed
   * to start (they start in the background), or when `timeoutMs` has passed.
   */
  async ready(timeoutMs = 30_000): Promise<number> {
    const start = Date.now();
    const settled = (): boolean => Atomics.load(this.ctrl, READY) + Atomics.load(this.ctrl, FAILED) >= this.workerCount;
    while (!settled() && !this.disposed && Date.now() - start < timeoutMs) await new Promise((r) => setTimeout(r, 5));
    return Atomics.load(this.ctrl, READY);
  }

  /** Whether no worker could start: jobs are then better run on the calling thread directly. */
  private dead(): boolean {
    return Atomics.load(this.ctrl, FAILED) === this.workerCount;
  }

  /**
   * out = x @ w^T + bias on all threads; false (nothing done) when an array is not on a
   * SharedArrayBuffer, so the caller runs it alone.
   */
  linear(out: Float32Array, x: Float32Array, w: Float32Array, bias: Float32Array | null, T: number, K: number, N: number, small: boolean): boolean {
    if (this.dead() || (small && this.congested()) || !shared(out) || !shared(x) || !shared(w) || (bias !== null && !shared(bias))) return false;
    const c = this.ctrl;
    this.put(ARGS, out);
    this.put(ARGS + 3, x);
    this.put(ARGS + 6, w);
    if (bias === null) c[ARGS + 9] = -1;
    else this.put(ARGS + 9, bias);
    c[ARGS + 12] = T;
    c[ARGS + 13] = K;
    c[ARGS + 14] = N;
    c[OP] = OP_LINEAR;
    this.run(this.runner.setLinear(out, x, w, bias, T, K, N), small);
    return true;
  }

  /**
   * dx = dy @ w ('input', b = w) or dw += alpha * dy^T @ x ('weight', b = x) on all threads
   * (see matmul-backward.ts); false (nothing done) when an array is not shared.
   */
  linearBackward(kind: LinearBackwardKind, out: Float32Array, dy: Float32Array, b: Float32Array, T: number, K: number, N: number, alpha: number, small: boolean): boolean {
    if (this.dead() || (small && this.congested()) || !shared(out) || !shared(dy) || !shared(b)) return false;
    const c = this.ctrl;
    this.put(ARGS, out);
    this.put(ARGS + 3, dy);
    this.put(ARGS + 6, b);
    c[ARGS + 9] = T;
    c[ARGS + 10] = K;
    c[ARGS + 11] = N;
    this.f64[0] = alpha;
    c[OP] = kind === 'input' ? OP_LINEAR_DX : OP_LINEAR_DW;
    this.run(this.runner.setLinearBackward(kind, out, dy, b, T, K, N, alpha), small);
    return true;
  }

  /** Attention (see attention.ts) on all threads; false when an array is not shared. */
  attention(
    out: Float32Array,
    q: Float32Array,
    kPool: Float32Array,
    vPool: Float32Array,
    cu: Int32Array,
    lens: Int32Array,
    tables: Int32Array,
    dims: AttentionDims,
    scale: number,
    small: boolean,
  ): boolean {
    if (this.dead() || (small && this.congested())) return false;
    const arrays = [out, q, kPool, vPool, cu, lens, tables];
    if (!arrays.every(shared)) return false;
    const c = this.ctrl;
    arrays.forEach((a, i) => this.put(ARGS + 3 * i, a));
    const d = ARGS + 21;
    c[d] = dims.S;
    c[d + 1] = dims.H;
    c[d + 2] = dims.Hkv;
    c[d + 3] = dims.D;
    c[d + 4] = dims.blockSize;
    c[d + 5] = dims.maxBlocks;
    this.f64[0] = scale;
    c[OP] = OP_ATTENTION;
    this.run(this.runner.setAttention(out, q, kPool, vPool, cu, lens, tables, dims, scale), small);
    return true;
  }

  /**
   * The main thread is done with `buffer` (a freed tensor or KV cache): workers drop their
   * reference now, so its memory goes when the main thread's does (not at some later GC).
   */
  release(buffer: ArrayBufferLike): void {
    if (this.disposed || !(buffer instanceof SharedArrayBuffer)) return;
    const id = this.ids.get(buffer);
    if (id === undefined) return;
    this.ids.delete(buffer);
    this.registry.unregister(buffer);
    this.forget(id);
    // Wake the workers so that they read the news: they drain their port on every wake-up.
    Atomics.add(this.ctrl, SEQ, 1);
    Atomics.notify(this.ctrl, SEQ);
  }

  /** Stop the workers. The pool must not be used afterwards. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    Atomics.store(this.ctrl, QUIT, 1);
    Atomics.add(this.ctrl, SEQ, 1);
    Atomics.notify(this.ctrl, SEQ);
    for (const w of this.workers) void w.terminate();
    for (const p of this.ports) p.close();
  }

  /**
   * Whether small jobs should run on the calling thread alone for now: a recent small job
   * waited too long for a worker (see run).
   */
  private congested(): boolean {
    return this.congestedUntil !== 0 && performance.now() < this.congestedUntil;
  }

  private late(): void {
    const now = performance.now();
    this.backoffMs = now - this.lastLate < BACKOFF_MAX_MS ? Math.min(BACKOFF_MAX_MS, this.backoffMs * 2) : BACKOFF_MIN_MS;
    this.lastLate = now;
    this.congestedUntil = now + this.backoffMs;
  }

  /**
   * Announce the job (arguments already written), take a share of it, wait for the rest.
   *
   * A small job (a decode step's projection: tens of microseconds) is only worth sharing while
   * the workers run promptly. When a worker is descheduled holding one of its tasks (another
   * process wants the cores), the main thread waits far longer than the whole job would take
   * alone; then small jobs stay on the main thread for a while (and the workers, idle, stop
   * competing for the cores), and the next small job after that probes again. An isolated
   * late job (a passing burst of other work) costs little sharing; steady contention soon
   * keeps small jobs on the main thread for a second at a time.
   */
  private run(total: number, small: boolean): void {
    if (this.disposed) throw new Error('cpu thread pool: used after dispose()');
    const c = this.ctrl;
    Atomics.store(c, NEXT, 0);
    Atomics.store(c, DONE, 0);
    Atomics.store(c, TOTAL, total);
    Atomics.store(c, ERROR, 0);
    Atomics.store(c, OPEN, 1);
    Atomics.add(c, SEQ, 1);
    Atomics.notify(c, SEQ, Math.min(this.workerCount, total - 1)); // wake no more than can get a task
    const { error } = claimTasks(c, total, this.runner);
    const t0 = small ? performance.now() : 0;
    waitUntil(c, DONE, (v) => v >= total);
    if (small && performance.now() - t0 > LATE_MS) this.late();
    Atomics.store(c, OPEN, 0);
    waitUntil(c, ACTIVE, (v) => v === 0);
    this.runner.clear();
    if (error !== null) throw error;
    if (Atomics.load(c, ERROR) !== 0) throw new Error('cpu thread pool: a task failed on a worker thread (see stderr)');
  }

  /** Write the (buffer id, byte offset, length) triple of `a` at `slot`. */
  private put(slot: number, a: Shared): void {
    const buffer = a.buffer as SharedArrayBuffer;
    let id = this.ids.get(buffer);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(buffer, id);
      this.registry.register(buffer, id, buffer);
      for (const p of this.ports) p.postMessage({ id, buffer });
    }
    this.ctrl[slot] = id;
    this.ctrl[slot + 1] = a.byteOffset;
    this.ctrl[slot + 2] = a.length;
  }

  private forget(id: number): void {
    if (this.disposed) return;
    for (const p of this.ports) p.postMessage({ id });
  }
}

function shared(a: Shared): boolean {
  return a.buffer instanceof SharedArrayBuffer;
}

/** Poll ctrl[slot] for a short while, then sleep on it, until `ok` holds. */
function waitUntil(c: Int32Array, slot: number, ok: (v: number) => boolean): void {
  let v = Atomics.load(c, slot);
  if (ok(v)) return;
  const until = performance.now() + MAIN_SPIN_MS;
  for (;;) {
    for (let i = 0; i < 100; i++) {
      v = Atomics.load(c, slot);
      if (ok(v)) return;
    }
    if (performance.now() > until) break;
  }
  for (;;) {
    Atomics.wait(c, slot, v);
    v = Atomics.load(c, slot);
    if (ok(v)) return;
  }
}

