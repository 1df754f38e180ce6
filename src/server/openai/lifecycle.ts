/**
 * The life of one generation request on the HTTP side: it counts as in flight (shutdown waits
 * for it) and owns an AbortSignal that fires when the client disconnects or the response is
 * cancelled, which the engine turns into an abort that frees the request's KV blocks.
 */
import type { Context } from 'hono';
import type { AppEnv } from '../env.ts';
import type { ServerState } from '../state.ts';

export interface RequestLife {
  signal: AbortSignal;
  abort(): void;
  /** The response is complete (or the client is gone): no longer in flight. Idempotent. */
  end(): void;
}

export function beginRequest(c: Context<AppEnv>, state: ServerState): RequestLife {
  const controller = new AbortController();
  const client = clientSignal(c);
  const onClientGone = (): void => controller.abort(new Error('client disconnected'));
  if (client.aborted) onClientGone();
  else client.addEventListener('abort', onClientGone, { once: true });
  const endInFlight = state.inFlight.begin();
  return {
    signal: controller.signal,
    abort: onClientGone,
    end: () => {
      client.removeEventListener('abort', onClientGone);
      endInFlight();
    },
  };
}

/**
 * The connection's signal, as captured by the first middleware: a body-limit check may swap
 * `c.req.raw` for a copy, and the copy's signal is not guaranteed to follow the socket.
 */
export function clientSignal(c: Context<AppEnv>): AbortSignal {
  return c.get('clientSignal') ?? c.req.raw.signal;
}
