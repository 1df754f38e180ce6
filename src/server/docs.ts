/**
 * GET /docs: the API reference as one self-contained HTML page rendered on the server from the
 * OpenAPI document (no scripts, no CDN: the machine may be offline). Routes first, then every
 * schema as a table of its fields; references between them are links.
 */
import type { OpenApiDocument } from './openapi.ts';

type Json = Record<string, unknown>;

const METHODS = ['get', 'post', 'put', 'patch', 'delete'] as const;

const escape = (s: string): string =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** `code` spans for backticks, nothing else: descriptions are plain text. */
const prose = (s: unknown): string => (typeof s === 'string' ? escape(s).replace(/`([^`]+)`/g, '<code>$1</code>') : '');

const refName = (ref: string): string => ref.slice(ref.lastIndexOf('/') + 1);
const schemaLink = (name: string): string => `<a href="#schema-${escape(name)}">${escape(name)}</a>`;

function typeOf(schema: Json | undefined): string {
  if (!schema) return 'any';
  if (typeof schema.$ref === 'string') return schemaLink(refName(schema.$ref));
  if ('const' in schema) return `<code>${escape(JSON.stringify(schema.const))}</code>`;
  if (Array.isArray(schema.enum)) return schema.enum.map((v) => `<code>${escape(JSON.stringify(v))}</code>`).join(' | ');
  const union = (schema.anyOf ?? schema.oneOf) as Json[] | undefined;
  if (Array.isArray(union)) return union.map((s) => typeOf(s)).join(' | ');
  const type = schema.type;
  if (Array.isArray(type)) return type.map((t) => typeOf({ ...schema, type: t })).join(' | ');
  if (type === 'array') return `${typeOf(schema.items as Json | undefined)}[]`;
  if (type === 'object' && schema.properties) return `object${fieldsTable(schema)}`;
  if (type === 'object' && schema.additionalProperties) return `map of ${typeOf(schema.additionalProperties as Json)}`;
  return escape(String(type ?? 'any'));
}

function constraints(schema: Json): string {
  const parts: string[] = [];
  const add = (label: string, key: string): void => {
    if (schema[key] !== undefined) parts.push(`${label} ${String(schema[key])}`);
  };
  add('≥', 'minimum');
  add('>', 'exclusiveMinimum');
  add('≤', 'maximum');
  add('<', 'exclusiveMaximum');
  add('min items', 'minItems');
  add('max items', 'maxItems');
  add('min length', 'minLength');
  return parts.length > 0 ? ` <span class="c">(${escape(parts.join(', '))})</span>` : '';
}

/** Range limits may sit on a branch of an anyOf (a nullable number): gather them from there. */
function allConstraints(schema: Json): string {
  const branches = (schema.anyOf ?? schema.oneOf) as Json[] | undefined;
  return constraints(schema) + (Array.isArray(branches) ? branches.map(constraints).join('') : '');
}

function fieldsTable(schema: Json): string {
  const props = (schema.properties ?? {}) as Record<string, Json>;
  const required = new Set((schema.required as string[] | undefined) ?? []);
  const rows = Object.entries(props).map(
    ([name, p]) =>
      `<tr><td><code>${escape(name)}</code>${required.has(name) ? ' <span class="req">required</span>' : ''}</td>` +
      `<td>${typeOf(p)}${allConstraints(p)}</td><td>${prose(p.description)}</td></tr>`,
  );
  return `<table><thead><tr><th>field</th><th>type</th><th>description</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function mediaSchemas(content: unknown): string {
  if (!content || typeof content !== 'object') return '';
  return Object.entries(content as Record<string, Json>)
    .map(([type, media]) => `<div><code>${escape(type)}</code>: ${typeOf(media.schema as Json | undefined)}</div>`)
    .join('');
}

function operation(path: string, method: string, op: Json): string {
  const body = (op.requestBody as Json | undefined)?.content;
  const responses = Object.entries((op.responses ?? {}) as Record<string, Json>)
    .map(([status, r]) => `<tr><td>${escape(status)}</td><td>${prose(r.description)}</td><td>${mediaSchemas(r.content)}</td></tr>`)
    .join('');
  const id = `${method}-${path}`.replace(/[^a-zA-Z0-9]+/g, '-');
  return (
    `<section class="op" id="${id}"><h3><span class="m ${method}">${method.toUpperCase()}</span> <code>${escape(path)}</code> — ${prose(op.summary)}</h3>` +
    (op.description ? `<p>${prose(op.description)}</p>` : '') +
    (body ? `<h4>Request body</h4>${mediaSchemas(body)}` : '') +
    `<h4>Responses</h4><table><thead><tr><th>status</th><th>meaning</th><th>body</th></tr></thead><tbody>${responses}</tbody></table></section>`
  );
}

const STYLE = `body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
code{font:13px ui-monospace,monospace;background:#f3f3f3;padding:0 3px;border-radius:3px}
table{border-collapse:collapse;margin:.4em 0;width:100%}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#fafafa}.m{font:bold 12px monospace;padding:2px 6px;border-radius:3px;color:#fff}.get{background:#2b7}.post{background:#27c}
.req{color:#c33;font-size:11px}.c{color:#777;font-size:12px}section.op{border-top:1px solid #ccc;padding-top:.5em}td table{font-size:13px}`;

export function renderDocs(doc: OpenApiDocument): string {
  const info = (doc.info ?? {}) as Json;
  const paths = (doc.paths ?? {}) as Record<string, Json>;
  const ops: string[] = [];
  const index: string[] = [];
  for (const [path, item] of Object.entries(paths)) {
    for (const method of METHODS) {
      const op = item[method] as Json | undefined;
      if (!op) continue;
      ops.push(operation(path, method, op));
      const id = `${method}-${path}`.replace(/[^a-zA-Z0-9]+/g, '-');
      index.push(`<li><a href="#${id}"><span class="m ${method}">${method.toUpperCase()}</span> <code>${escape(path)}</code></a> ${prose(op.summary)}</li>`);
    }
  }
  const schemas = ((doc.components as Json | undefined)?.schemas ?? {}) as Record<string, Json>;
  const schemaSections = Object.entries(schemas).map(
    ([name, s]) =>
      `<section id="schema-${escape(name)}"><h3>${escape(name)}</h3>${s.description ? `<p>${prose(s.description)}</p>` : ''}` +
      (s.properties ? fieldsTable(s) : `<p>${typeOf(s)}${allConstraints(s)}</p>`) +
      '</section>',
  );
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(String(info.title ?? 'API'))} API reference</title>` +
    `<style>${STYLE}</style></head><body><h1>${escape(String(info.title ?? 'API'))} ${escape(String(info.version ?? ''))} — API reference</h1>` +
    `<p>${prose(info.description)}</p><p>Machine-readable: <a href="/openapi.json">/openapi.json</a></p>` +
    `<h2>Routes</h2><ul>${index.join('')}</ul>${ops.join('')}<h2>Schemas</h2>${schemaSections.join('')}</body></html>`
  );
}
