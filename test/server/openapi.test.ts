/** The committed OpenAPI document is the one the route schemas generate. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { createApp } from '../../src/server/app.ts';
import { OPENAPI_PATH, openApiText } from '../../src/server/openapi.ts';
import { createServerState } from '../../src/server/state.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('openapi/openapi.json', () => {
  const generated = openApiText(createApp(createServerState({ modelName: 'model', backend: 'cpu', fingerprint: 'tandem' })));

  it('matches the document generated from the route schemas', () => {
    const path = join(ROOT, OPENAPI_PATH);
    const stale = 'openapi/openapi.json is out of date with the route schemas: run `npm run gen:openapi` and commit the result';
    assert.ok(existsSync(path), stale);
    assert.equal(readFileSync(path, 'utf8'), generated, stale);
  });

  it('documents every route with OpenAI\'s error shape and is stable', () => {
    const doc = JSON.parse(generated);
    for (const path of ['/v1/chat/completions', '/v1/completions', '/v1/models', '/v1/models/{model}', '/tokenize', '/detokenize', '/health', '/version', '/metrics']) {
      assert.ok(doc.paths[path], `${path} is documented`);
    }
    const chat = doc.paths['/v1/chat/completions'].post;
    assert.equal(chat.responses['400'].content['application/json'].schema.$ref, '#/components/schemas/ErrorResponse');
    assert.ok(chat.responses['200'].content['text/event-stream']);
    assert.equal(openApiText(createApp(createServerState({ modelName: 'x', backend: 'cuda', fingerprint: 'y' }))), generated);
  });
});
