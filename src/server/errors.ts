/**
 * Every error leaves the server in OpenAI's shape:
 *   {"error": {"message": "...", "type": "...", "param": "messages[0].role" | null, "code": "..." | null}}
 * This file maps the three sources of errors onto it: zod issues (request validation),
 * EngineError (what the engine refuses), and Hono's HTTPException (malformed JSON, media type).
 */
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { z } from 'zod';
import { EngineError, type EngineErrorCode } from '../engine/types.ts';

export type ErrorType = 'invalid_request_error' | 'rate_limit_error' | 'server_error';

export interface ErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: string | null };
}

/** An error meant for the client: status, OpenAI type, the offending field and a code. */
export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly type: ErrorType = status >= 500 ? 'server_error' : status === 429 ? 'rate_limit_error' : 'invalid_request_error',
  ) {
    super(message);
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 naming the field, for checks zod cannot make (they need the model or the prompt). */
export function invalidParam(param: string, message: string, code: string | null = 'invalid_value'): ApiError {
  return new ApiError(400, message, param, code);
}

export function errorResponse(c: Context, err: ApiError): Response {
  return c.json(err.body(), err.status);
}

const ENGINE_STATUS: Record<EngineErrorCode, ContentfulStatusCode> = {
  context_length_exceeded: 400,
  invalid_request: 400,
  // The request can never fit the KV cache (not "busy": retrying won't help).
  out_of_capacity: 400,
  queue_full: 429,
  shutting_down: 503,
  // As OpenAI answers a request for a model it does not have.
  model_not_found: 404,
};

export function fromEngineError(err: EngineError, defaultParam: string | null = null): ApiError {
  return new ApiError(ENGINE_STATUS[err.code], err.message, err.param ?? defaultParam, err.code);
}

/** `['messages', 0, 'content']` -> `messages[0].content` (OpenAI's spelling). */
export function paramPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out;
}

/**
 * The first zod issue as a 400. A union that matched no option reports the option that got
 * furthest into the value, so `prompt: [[1, 2, "x"]]` names `prompt[0][2]`, not `prompt`.
 */
export function fromZodError(error: z.ZodError, input: unknown): ApiError {
  const issue = deepestIssue(error.issues[0]);
  const path = issue.path;
  const param = paramPath(path);
  const found = valueAt(input, path);
  const foundText = found === undefined ? '' : ` (got ${preview(found)})`;
  const where = param === '' ? 'request body' : `'${param}'`;
  return new ApiError(400, `Invalid ${where}: ${issue.message}${foundText}`, param === '' ? null : param, issue.code);
}

type Issue = { code: string; path: PropertyKey[]; message: string; expected?: string; errors?: Issue[][] };

/**
 * Descends into union issues: prefers the option that got deepest into the value, and among
 * equals one whose type matched but a check failed (`stop` of 100 strings is "too many items",
 * not "expected a string"). When no option's type matched, says which types would have.
 */
function deepestIssue(issue: z.ZodError['issues'][number]): Issue {
  let best = issue as Issue;
  while (best.code === 'invalid_union' && best.errors && best.errors.length > 0) {
    const score = (i: Issue): number => i.path.length * 2 + (i.code === 'invalid_type' ? 0 : 1);
    let pick: Issue | null = null;
    for (const branch of best.errors) {
      const first = branch[0];
      if (first && (pick === null || score(first) > score(pick))) pick = first;
    }
    if (pick === null) break;
    if (score(pick) === 0) {
      const expected = [...new Set(best.errors.map((b) => b[0]?.expected).filter((e): e is string => e !== undefined))];
      return { ...best, message: `Invalid input: expected ${expected.join(' or ')}` };
    }
    best = { ...pick, path: [...best.path, ...pick.path] };
  }
  return best;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let v: unknown = input;
  for (const key of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

function preview(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** The app's onError: known errors keep their status; anything else is a 500 that says so. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof EngineError) return fromEngineError(err);
  if (err instanceof HTTPException) {
    if (err.status === 400) {
      return new ApiError(400, `${err.message}: the body must be one JSON object`, null, 'invalid_json');
    }
    if (err.status === 415) {
      return new ApiError(415, 'Unsupported media type: send the body as JSON with Content-Type: application/json', null, 'unsupported_media_type');
    }
    return new ApiError(err.status, err.message || 'request failed', null, null);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ApiError(500, `Internal server error: ${message}`, null, 'internal_error');
}
