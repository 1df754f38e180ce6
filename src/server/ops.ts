/** Operational routes: GET /health, GET /version, GET /metrics. None needs an API key. */
import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AppEnv } from './env.ts';
import type { App } from './routes.ts';
import type { ServerState } from './state.ts';
import { VERSION } from './version.ts';

const Health = z
  .object({
    status: z.enum(['ok', 'loading', 'failed', 'stopping']),
    model: z.string().optional(),
    backend: z.string().optional(),
    error: z.string().optional(),
  })
  .openapi('Health');

export function registerOps(app: App, state: ServerState, metrics: { contentType: string; metricsText(): Promise<string> } | null): void {
  const health = createRoute({
    method: 'get',
    path: '/health',
    summary: 'Readiness: 200 once the model is loaded, 503 while loading, after a failed load, or while shutting down',
    tags: ['Operations'],
    responses: {
      200: { description: 'Ready', content: { 'application/json': { schema: Health } } },
      503: { description: 'Not ready', content: { 'application/json': { schema: Health } } },
    },
  });
  // Handlers return plain Responses; the library's response typing cannot express 200-or-503.
  app.openapi(health, ((c: Context<AppEnv>) => {
    if (state.status === 'ready') return c.json({ status: 'ok', model: state.modelName, backend: state.backend }, 200);
    return c.json({ status: state.status, ...(state.error ? { error: state.error } : {}) }, 503);
  }) as never);

  const version = createRoute({
    method: 'get',
    path: '/version',
    summary: "Tandem's version",
    tags: ['Operations'],
    responses: { 200: { description: 'The version', content: { 'application/json': { schema: z.object({ version: z.string() }).openapi('Version') } } } },
  });
  app.openapi(version, (c) => c.json({ version: VERSION }, 200));

  const metricsRoute = createRoute({
    method: 'get',
    path: '/metrics',
    summary: 'Prometheus metrics (text exposition format)',
    tags: ['Operations'],
    responses: { 200: { description: 'Metrics', content: { 'text/plain': { schema: z.string() } } } },
  });
  app.openapi(metricsRoute, (async (c: Context<AppEnv>) => {
    const text = metrics ? await metrics.metricsText() : '';
    return c.text(text, 200, { 'content-type': metrics?.contentType ?? 'text/plain; version=0.0.4; charset=utf-8' });
  }) as never);
}
