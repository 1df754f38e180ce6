/**
 * The HTTP application: OpenAI-compatible generation routes, vLLM's tokenizer routes, health,
 * version, metrics, and the API reference. Nothing here computes: routes read the ServerState
 * that `tandem serve` keeps up to date and hand generation to its engine.
 */
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { adminAuth } from './admin-auth.ts';
import { registerAdmin, type AdminOptions } from './admin/index.ts';
import { bearerAuth } from './auth.ts';
import { renderDocs } from './docs.ts';
import type { AppEnv } from './env.ts';
import { ApiError, errorResponse, fromZodError, toApiError } from './errors.ts';
import { registerChat } from './openai/chat.ts';
import { registerCompletions } from './openai/completions.ts';
import { registerModels } from './openai/models.ts';
import { registerTokenize } from './openai/tokenize.ts';
import { openApiDocument } from './openapi.ts';
import { registerOps } from './ops.ts';
import type { App } from './routes.ts';
import type { ServerState } from './state.ts';

export { createServerState, type ServerState, type ServerStatus, type ServingEngine } from './state.ts';
export type { AdminOptions, AdminServices } from './admin/index.ts';

export const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;

export interface AppOptions {
  /** Require `Authorization: Bearer <apiKey>` (open routes aside). */
  apiKey?: string | null;
  /** Larger request bodies get 413 (default 4 MiB). */
  maxBodyBytes?: number;
  /** The Prometheus registry behind GET /metrics (src/metrics.ts's Metrics). */
  metrics?: { contentType: string; metricsText(): Promise<string> } | null;
  /**
   * Serve the admin API (/admin/*: training jobs, adapters, rewards). Without it /admin/* is
   * only described in the OpenAPI document. Its `services` may be filled in after the model loads.
   */
  admin?: AdminOptions | null;
}

export function createApp(state: ServerState, opts: AppOptions = {}): App {
  const app: App = new OpenAPIHono<AppEnv>({
    // zod-openapi's own hook answers {success:false, error}; clients expect OpenAI's 400.
    // On failure the validator passes the raw input as `data`; the message quotes from it.
    defaultHook: (result, c) => {
      if (!result.success) return errorResponse(c, fromZodError(result.error, (result as { data?: unknown }).data));
    },
  });

  app.use('*', async (c, next) => {
    c.set('clientSignal', c.req.raw.signal);
    await next();
  });
  if (opts.apiKey) app.use('*', bearerAuth(opts.apiKey));
  // Always on, whether or not the admin routes are served: the user key never opens /admin.
  app.use('/admin/*', adminAuth(opts.admin?.token ?? null));
  const maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  app.use(
    '*',
    bodyLimit({
      maxSize: maxBodyBytes,
      onError: (c) => {
        // The rest of the body is never read: close the connection rather than let the client
        // reuse a socket that still carries it.
        c.header('Connection', 'close');
        throw new ApiError(413, `The request body is larger than this server's limit of ${maxBodyBytes} bytes (--max-body-bytes).`, null, 'request_too_large');
      },
    }),
  );

  registerOps(app, state, opts.metrics ?? null);
  registerChat(app, state);
  registerCompletions(app, state);
  registerModels(app, state);
  registerTokenize(app, state);
  registerAdmin(app, state, opts.admin ?? null);

  let docsHtml: string | null = null;
  app.get('/openapi.json', (c) => c.json(openApiDocument(app)));
  app.get('/docs', (c) => c.html((docsHtml ??= renderDocs(openApiDocument(app, { sorted: false })))));

  app.onError((err, c) => errorResponse(c, toApiError(err)));
  app.notFound((c) => errorResponse(c, notFound(app, c)));
  return app;
}

/** 405 (with Allow) when the path exists under other methods, else 404. */
function notFound(app: App, c: Context<AppEnv>): ApiError {
  const path = c.req.path;
  const allowed = new Set<string>();
  for (const r of app.routes) {
    if (r.method === 'ALL' || r.path === '/*' || r.path === '*') continue;
    const pattern = new RegExp(`^${r.path.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/:[^/]+/g, '[^/]+')}$`);
    if (pattern.test(path)) allowed.add(r.method);
  }
  if (allowed.size > 0) {
    c.header('Allow', [...allowed].sort().join(', '));
    return new ApiError(405, `Method ${c.req.method} is not allowed on ${path}; use ${[...allowed].sort().join(' or ')}.`, null, 'method_not_allowed');
  }
  return new ApiError(404, `No route for ${c.req.method} ${path}; see GET /docs for the API.`, null, 'not_found');
}
