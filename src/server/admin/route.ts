/**
 * Registering an admin route. The OpenAPI document always describes /admin/* (the committed
 * openapi.json is generated from an app without a model); the route itself is served only by an
 * app given admin options. `validate: false` documents the body schema but leaves checking it to
 * the handler (POST /admin/jobs checks with parseJobConfig, whose errors name nested fields).
 */
import type { createRoute } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AppEnv } from '../env.ts';
import type { App } from '../routes.ts';
import { adminApiError } from './services.ts';

type Route = ReturnType<typeof createRoute>;
export type AdminHandler = (c: Context<AppEnv>) => Response | Promise<Response>;

export function adminRoute(app: App, route: Route, handler: AdminHandler | null, opts: { validate?: boolean } = {}): void {
  if (handler === null) {
    app.openAPIRegistry.registerPath(route);
    return;
  }
  const wrapped: AdminHandler = async (c) => {
    try {
      return await handler(c);
    } catch (err) {
      throw adminApiError(err);
    }
  };
  if (opts.validate === false) {
    app.openAPIRegistry.registerPath(route);
    app.on(route.method.toUpperCase(), route.path.replace(/\{([^}]+)\}/g, ':$1'), wrapped);
  } else {
    // The library types a handler's result from the declared responses; ours return plain Responses.
    app.openapi(route, wrapped as never);
  }
}
