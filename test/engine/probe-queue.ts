import { DeviceQueue } from '../../src/backend/device-queue.ts';

/**
 * A device queue that logs when each step's work starts and can act then (`onStart`). With
 * `inFlightMs`, a step's result comes that long after its work, as a GPU's would: the host's
 * rendering then really happens while the step is in flight. With `startLateMs`, the work
 * starts that long after the slice does, as behind a trainer's slice: after the rendering.
 */
export class ProbeQueue extends DeviceQueue {
  starts = 0;
  onStart: (step: number) => void = () => {};
  constructor(
    backend: ConstructorParameters<typeof DeviceQueue>[0],
    readonly log: string[] = [],
    readonly inFlightMs = 0,
    readonly startLateMs = 0,
  ) {
    super(backend);
  }
  override run<R>(work: () => R | Promise<R>): Promise<R> {
    return super.run(async () => {
      if (this.startLateMs > 0) await new Promise((resolve) => setTimeout(resolve, this.startLateMs));
      const step = ++this.starts;
      this.log.push(`device ${step}`);
      this.onStart(step);
      const r = await work();
      if (this.inFlightMs > 0) {
        const late = <T>(v: T): Promise<T> => new Promise((resolve) => setTimeout(() => resolve(v), this.inFlightMs));
        // An engine step's slice only queues its work: its ids (`pending`) are what come late.
        if (r !== null && typeof r === 'object' && 'pending' in r) return { ...r, pending: (r.pending as Promise<unknown>).then(late) } as R;
        await late(undefined);
      }
      return r;
    });
  }
}

