/**
 * The OpenAPI document, generated from the zod schemas the routes validate with. Keys are
 * sorted at every level so the committed openapi/openapi.json changes only when the API does.
 */
import type { App } from './routes.ts';
import { VERSION } from './version.ts';

export type OpenApiDocument = Record<string, unknown>;

/** `sorted: false` keeps the schemas' own field order (model, messages, ... reads better in /docs). */
export function openApiDocument(app: App, opts: { sorted?: boolean } = {}): OpenApiDocument {
  const doc = app.getOpenAPI31Document({
    openapi: '3.1.0',
    info: {
      title: 'Tandem',
      version: VERSION,
      description:
        'OpenAI-compatible serving (chat and text completions, models) with vLLM\'s extensions (tokenize, ' +
        'detokenize, sampling fields). Errors are always {"error": {"message", "type", "param", "code"}}.',
    },
  });
  return ((opts.sorted ?? true) ? sortKeys(doc) : doc) as OpenApiDocument;
}

export function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) out[key] = sortKeys((value as Record<string, unknown>)[key]);
  return out;
}

/** The text of openapi/openapi.json. */
export function openApiText(app: App): string {
  return JSON.stringify(openApiDocument(app), null, 2) + '\n';
}

/** Where `npm run gen:openapi` writes the document, relative to the repository root. */
export const OPENAPI_PATH = 'openapi/openapi.json';
