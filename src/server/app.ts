/**
 * The HTTP application. For now: health and version; the OpenAI routes join it next.
 * Nothing here computes: it reads the server state that `tandem serve` keeps up to date.
 */
import { Hono } from 'hono';
import { readFileSync } from 'node:fs';
import { PACKAGE_JSON } from '../paths.ts';

export type ServerStatus = 'loading' | 'ready' | 'failed' | 'stopping';

export interface ServerState {
  status: ServerStatus;
  modelName: string;
  backend: string;
  error?: string;
}

const VERSION = (JSON.parse(readFileSync(PACKAGE_JSON, 'utf8')) as { version: string }).version;

export function createApp(state: ServerState): Hono {
  const app = new Hono();
  app.get('/health', (c) => {
    if (state.status === 'ready') return c.json({ status: 'ok', model: state.modelName, backend: state.backend });
    return c.json({ status: state.status, ...(state.error ? { error: state.error } : {}) }, 503);
  });
  app.get('/version', (c) => c.json({ version: VERSION }));
  app.notFound((c) =>
    c.json({ error: { message: `no route for ${c.req.method} ${c.req.path}`, type: 'invalid_request_error', param: null, code: 'not_found' } }, 404),
  );
  return app;
}
