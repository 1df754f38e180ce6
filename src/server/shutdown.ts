/**
 * Graceful shutdown (SIGTERM): stop admitting (routes answer 503, the engine refuses new
 * requests), let requests in flight finish for up to `graceMs`, abort whatever is left (a
 * stream then ends with finish_reason "abort" and [DONE]), and close the listener.
 *
 * Training jobs stop first (`stopJobs`): a job ends its current step and writes a checkpoint,
 * and that step's rollouts are engine requests, so the engine keeps admitting them until the
 * jobs have stopped; users already get 503 meanwhile. Their wait counts against the same grace.
 */
import type { Server } from 'node:http';
import type { ServerState } from './state.ts';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref());

/** Resolves once the server is closed; `log` hears what happens. */
export async function shutdown(
  state: ServerState,
  server: Server,
  graceMs: number,
  log: (line: string) => void,
  opts: { stopJobs?: (graceMs: number) => Promise<void> } = {},
): Promise<void> {
  state.status = 'stopping';
  const started = Date.now();
  if (opts.stopJobs) {
    const stopped = await Promise.race([opts.stopJobs(graceMs).then(() => true), sleep(graceMs).then(() => false)]);
    if (!stopped) log(`shutdown: training did not stop within ${graceMs / 1000} s; going on without its checkpoint`);
  }
  const engine = state.engine;
  const finished = Promise.all([engine?.drain() ?? Promise.resolve(), state.inFlight.idle()]).then(() => true);
  const inTime = await Promise.race([finished, sleep(Math.max(0, graceMs - (Date.now() - started))).then(() => false)]);
  if (!inTime) {
    log(`shutdown: ${state.inFlight.count} request(s) still running after ${graceMs / 1000} s; aborting them`);
    engine?.abortAll();
    // Aborted requests still send their last chunk; give the sockets a moment to take it.
    await Promise.race([state.inFlight.idle(), sleep(2000)]);
  }
  await closeServer(server);
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
    // A client that keeps a finished connection open must not hold the process.
    setTimeout(() => server.closeAllConnections(), 1000).unref();
  });
}
