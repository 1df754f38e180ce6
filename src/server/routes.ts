/**
 * Registering a route: its zod schemas go into the OpenAPI document (via @hono/zod-openapi)
 * and validate the request; the handler gets the parsed body and returns any Response
 * (JSON or an SSE stream). Every route documents the OpenAI error shape for its 4xx/5xx.
 */
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { z } from 'zod';
import type { AppEnv } from './env.ts';
import { ErrorResponse } from './openai/schemas/common.ts';

export type App = OpenAPIHono<AppEnv>;

type Responses = Parameters<typeof createRoute>[0]['responses'];

const errorContent = { content: { 'application/json': { schema: ErrorResponse } } };

export const ERROR_RESPONSES = {
  400: { description: 'Invalid request: `param` names the field', ...errorContent },
  401: { description: 'Missing or wrong API key (servers started with --api-key)', ...errorContent },
  404: { description: 'Unknown model', ...errorContent },
  413: { description: 'Body larger than --max-body-bytes', ...errorContent },
  429: { description: 'The waiting queue is full (--max-waiting); retry later', ...errorContent },
  503: { description: 'The model is loading, failed to load, or the server is shutting down', ...errorContent },
};

export interface RouteDoc {
  path: string;
  summary: string;
  description?: string;
  tags: string[];
  responses: Responses;
}

export function postJson<S extends z.ZodType>(
  app: App,
  doc: RouteDoc,
  schema: S,
  handler: (c: Context<AppEnv>, body: z.output<S>) => Response | Promise<Response>,
): void {
  const route = createRoute({
    method: 'post',
    path: doc.path,
    summary: doc.summary,
    description: doc.description,
    tags: doc.tags,
    request: { body: { content: { 'application/json': { schema } }, required: true } },
    responses: doc.responses,
  });
  // The library types a handler's result from the declared responses; ours may also be an
  // SSE Response, which those types cannot express.
  app.openapi(route, ((c: Context<AppEnv>) => handler(c, (c.req.valid as (target: 'json') => z.output<S>)('json'))) as never);
}

export function getJson(app: App, doc: RouteDoc, handler: (c: Context<AppEnv>) => Response | Promise<Response>): void {
  const route = createRoute({ method: 'get', path: doc.path, summary: doc.summary, description: doc.description, tags: doc.tags, responses: doc.responses });
  app.openapi(route, handler as never);
}
