/**
 * Writes openapi/openapi.json from the route schemas (`npm run gen:openapi`). No model is
 * loaded: the routes and their schemas exist before the model does. test/server/openapi.test.ts
 * fails when the committed file differs from what this writes.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createApp } from '../src/server/app.ts';
import { OPENAPI_PATH, openApiText } from '../src/server/openapi.ts';
import { createServerState } from '../src/server/state.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, OPENAPI_PATH);
const app = createApp(createServerState({ modelName: 'model', backend: 'cpu', fingerprint: 'tandem' }));
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, openApiText(app));
process.stdout.write(`wrote ${OPENAPI_PATH}\n`);
