/**
 * One ordering for the device: serving steps and slices of training work take turns.
 *
 * The engine runs each step, and the trainer each slice of its forward/backward, through
 * run(); slices run one at a time in arrival order and each ends with resetScratch(), so a
 * training slice never sees the engine's scratch tensors die under it (or the reverse). Since
 * each side submits its next slice only after the last one finished, a busy engine and a busy
 * trainer alternate: a chat request waits at most one training slice (one layer's work).
 */
import type { Backend } from './backend.ts';

export class DeviceQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private running = 0;

  constructor(private readonly backend: Backend) {}

  /** Run `work` when every earlier slice has finished; its scratch is reset when it ends. */
  run<R>(work: () => R | Promise<R>): Promise<R> {
    const result = this.tail.then(async () => {
      this.running++;
      try {
        return await work();
      } finally {
        this.running--;
        this.backend.resetScratch();
      }
    });
    this.tail = result.catch(() => undefined);
    return result;
  }

  /** True while a slice is running (for tests). */
  get busy(): boolean {
    return this.running > 0;
  }
}
