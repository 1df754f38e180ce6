/** `tandem serve`: listen at once (health says 503 while loading), then load the model. */
import { serve } from '@hono/node-server';
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { createBackend } from '../backend/index.ts';
import { loadModel } from '../model/load.ts';
import { DEFAULT_MODEL_DIR } from '../paths.ts';
import { createApp, type ServerState } from '../server/app.ts';
import { choiceOption, intOption } from './args.ts';

export const SERVE_USAGE = `tandem serve [--model DIR] [--host 127.0.0.1] [--port 8000] [--backend cpu|cuda|auto]
  env: TANDEM_HOST, TANDEM_PORT, TANDEM_MODEL`;

export async function runServe(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: { model: { type: 'string' }, host: { type: 'string' }, port: { type: 'string' }, backend: { type: 'string' } },
  });
  const modelDir = values.model ?? process.env.TANDEM_MODEL ?? DEFAULT_MODEL_DIR;
  const host = values.host ?? process.env.TANDEM_HOST ?? '127.0.0.1';
  const port = intOption('port', values.port ?? process.env.TANDEM_PORT, 8000, 0, 65535);
  const backendChoice = choiceOption('backend', values.backend, ['cpu', 'cuda', 'auto'] as const, 'auto');

  const state: ServerState = { status: 'loading', modelName: basename(modelDir), backend: backendChoice };
  const server = serve({ fetch: createApp(state).fetch, hostname: host, port }, (info) => {
    process.stdout.write(`tandem listening on http://${host}:${info.port} (loading ${modelDir})\n`);
  });
  const stop = (signal: string): void => {
    state.status = 'stopping';
    process.stdout.write(`${signal}: shutting down\n`);
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));

  try {
    const backend = createBackend(backendChoice);
    const started = performance.now();
    const loaded = loadModel(modelDir, backend);
    state.backend = backend.name;
    state.status = 'ready';
    const c = loaded.config;
    process.stdout.write(
      `model ready in ${((performance.now() - started) / 1000).toFixed(2)} s: ${c.architecture}, ${c.numLayers} layers, ` +
        `hidden ${c.hiddenSize}, vocab ${c.vocabSize}, backend ${backend.name}\n`,
    );
  } catch (err) {
    state.status = 'failed';
    state.error = err instanceof Error ? err.message : String(err);
    process.stderr.write(`failed to load ${modelDir}: ${state.error}\n`);
    process.exitCode = 1;
    server.close();
  }
}
