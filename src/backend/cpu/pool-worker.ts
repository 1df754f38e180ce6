/**
 * A CPU pool worker (see pool.ts): waits for a job on the control block, claims tasks until
 * none are left, and waits again. It never touches the event loop while serving: buffers to
 * use or to forget come in on a MessagePort that it drains synchronously (receiveMessageOnPort)
 * whenever it wakes.
 */
import { setPriority } from 'node:os';
import { receiveMessageOnPort, workerData } from 'node:worker_threads';
import type { MessagePort } from 'node:worker_threads';
import { ACTIVE, CTRL_F64, CTRL_INTS, JobRunner, OPEN, QUIT, READY, SEQ, TOTAL, WORKER_TASKS, claimTasks } from './pool-jobs.ts';

interface BufferMessage {
  /** Register `buffer` under `id`, or forget `id` when buffer is absent. */
  id: number;
  buffer?: SharedArrayBuffer;
}

const { control, port, spinMs, nice } = workerData as { control: SharedArrayBuffer; port: MessagePort; spinMs: number; nice: number };
const ctrl = new Int32Array(control, 0, CTRL_INTS);
const f64 = new Float64Array(control, CTRL_INTS * 4, CTRL_F64);
const buffers = new Map<number, SharedArrayBuffer>();
const runner = new JobRunner();

function drain(): void {
  for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) {
    const msg = m.message as BufferMessage;
    if (msg.buffer === undefined) buffers.delete(msg.id);
    else buffers.set(msg.id, msg.buffer);
  }
}

function bufferOf(id: number): SharedArrayBuffer {
  let b = buffers.get(id);
  if (b === undefined) {
    // Posted before the job was announced, so it is queued; drain once more to be sure.
    drain();
    b = buffers.get(id);
    if (b === undefined) throw new Error(`cpu thread pool: buffer ${id} was never posted to this worker`);
  }
  return b;
}

/** Spin on SEQ for up to spinMs (a job often follows the last one closely), then sleep on it. */
function waitForJob(seen: number): void {
  const until = performance.now() + spinMs;
  while (Atomics.load(ctrl, SEQ) === seen) {
    for (let i = 0; i < 200 && Atomics.load(ctrl, SEQ) === seen; i++);
    if (performance.now() > until) {
      Atomics.wait(ctrl, SEQ, seen);
      return;
    }
  }
}

// On Linux a thread has a nice value of its own (elsewhere this call would renice the whole
// process, so it is Linux only). See WORKER_NICE in pool.ts.
if (nice !== 0 && process.platform === 'linux') {
  try {
    setPriority(nice);
  } catch {
    // not allowed here: run at the default priority
  }
}

let seen = Atomics.load(ctrl, SEQ);
Atomics.add(ctrl, READY, 1);
Atomics.notify(ctrl, READY);
for (;;) {
  waitForJob(seen);
  if (Atomics.load(ctrl, QUIT) !== 0) break;
  Atomics.add(ctrl, ACTIVE, 1);
  seen = Atomics.load(ctrl, SEQ);
  drain(); // new buffers for this job, or buffers to forget (SEQ is also bumped for those alone)
  // The main thread writes a job's arguments while OPEN is 0, then sets OPEN; it clears OPEN
  // when all tasks are done and waits for ACTIVE to reach 0 before writing the next job. So
  // once we are counted in ACTIVE and see OPEN set, the arguments stay put until we leave.
  if (Atomics.load(ctrl, OPEN) === 1) {
    try {
      runner.setup(ctrl, f64, bufferOf);
      const { ran, error } = claimTasks(ctrl, ctrl[TOTAL], runner);
      Atomics.add(ctrl, WORKER_TASKS, ran);
      if (error !== null) console.error('tandem cpu worker: a task failed:', error);
    } catch (e) {
      // Set-up failed: claim nothing; the main thread runs the tasks itself.
      console.error('tandem cpu worker:', e);
    }
    runner.clear();
  }
  if (Atomics.sub(ctrl, ACTIVE, 1) === 1) Atomics.notify(ctrl, ACTIVE);
}
port.close();
