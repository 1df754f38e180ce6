/**
 * `--api-key`: every route except the open ones needs `Authorization: Bearer <key>`. As in
 * vLLM, health, metrics and version stay open (load balancers and Prometheus have no key);
 * so do the API reference pages, which describe the API but reveal nothing served. /admin/*
 * has its own rule (admin-auth.ts): the user key neither opens nor is needed there.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { isAdminPath } from './admin-auth.ts';
import type { AppEnv } from './env.ts';
import { ApiError } from './errors.ts';

export const OPEN_PATHS: ReadonlySet<string> = new Set(['/health', '/metrics', '/version', '/openapi.json', '/docs']);

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

export function bearerAuth(apiKey: string): MiddlewareHandler<AppEnv> {
  // Comparing fixed-length digests keeps the check constant-time whatever the key's length.
  const expected = digest(apiKey);
  return async (c, next) => {
    if (OPEN_PATHS.has(c.req.path) || isAdminPath(c.req.path)) return next();
    const header = c.req.header('authorization');
    const match = header?.match(/^Bearer\s+(.+)$/i);
    if (!match) {
      throw new ApiError(401, 'Missing API key: send the header Authorization: Bearer <key>.', null, 'invalid_api_key');
    }
    if (!timingSafeEqual(digest(match[1].trim()), expected)) {
      throw new ApiError(401, 'Incorrect API key provided.', null, 'invalid_api_key');
    }
    return next();
  };
}
