/**
 * Who may use /admin/* (training jobs, adapters: things that spend the GPU and write files).
 *
 * - With an admin token (--admin-token, env TANDEM_ADMIN_TOKEN): every /admin request needs
 *   `Authorization: Bearer <admin token>`, from anywhere.
 * - Without one: only clients on this machine (a loopback address) get in; others get 403.
 *
 * The user API key (--api-key) is a different secret and opens nothing here; bearerAuth leaves
 * /admin paths to this check. Behind a reverse proxy on the same host every client looks local:
 * set an admin token there.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context, MiddlewareHandler } from 'hono';
import type { AppEnv } from './env.ts';
import { ApiError } from './errors.ts';

/** True for /admin and every path under it. */
export function isAdminPath(path: string): boolean {
  return path === '/admin' || path.startsWith('/admin/');
}

/** 127.0.0.0/8, ::1, and IPv4 loopback mapped into IPv6 (how a dual-stack socket reports it). */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : address;
  return v4.startsWith('127.') || address === '::1' || address === '0:0:0:0:0:0:0:1';
}

/** The client's address from the Node socket; undefined when there is none (not served by Node). */
export function remoteAddress(c: Context<AppEnv>): string | undefined {
  try {
    return getConnInfo(c).remote.address;
  } catch {
    return undefined;
  }
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

export function adminAuth(token: string | null): MiddlewareHandler<AppEnv> {
  const expected = token === null ? null : digest(token);
  return async (c, next) => {
    if (!isAdminPath(c.req.path)) return next();
    if (expected === null) {
      const address = remoteAddress(c);
      if (!isLoopback(address)) {
        throw new ApiError(
          403,
          `The admin API answers only clients on the server's own machine (loopback), and this request came from ${address ?? 'an unknown address'}; ` +
            'connect from the server host, or start the server with --admin-token and send Authorization: Bearer <admin token>.',
          null,
          'admin_forbidden',
        );
      }
      return next();
    }
    const match = c.req.header('authorization')?.match(/^Bearer\s+(.+)$/i);
    if (!match) {
      throw new ApiError(401, 'Missing admin token: send the header Authorization: Bearer <admin token> (the server\'s --admin-token).', null, 'invalid_admin_token');
    }
    // Fixed-length digests keep the comparison constant-time whatever the token's length.
    if (!timingSafeEqual(digest(match[1].trim()), expected)) {
      throw new ApiError(401, 'Incorrect admin token (the user API key does not open /admin).', null, 'invalid_admin_token');
    }
    return next();
  };
}
