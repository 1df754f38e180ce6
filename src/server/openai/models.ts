/**
 * GET /v1/models and GET /v1/models/{model}: the base model and every loaded LoRA adapter, as
 * vLLM lists them (an adapter's `parent` is the base model's name and its `root` the folder it
 * was loaded from).
 */
import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AppEnv } from '../env.ts';
import { readyEngine } from '../ready.ts';
import { ApiError } from '../errors.ts';
import { ERROR_RESPONSES, getJson, type App } from '../routes.ts';
import type { ServedAdapter, ServerState } from '../state.ts';
import { ModelCard, ModelList } from './schemas/models.ts';

export function registerModels(app: App, state: ServerState): void {
  const started = Math.floor(Date.now() / 1000);
  const card = (id: string, created: number, root: string, parent: string | null, maxModelLen: number): ModelCard => ({
    id,
    object: 'model',
    created,
    owned_by: 'tandem',
    root,
    parent,
    max_model_len: maxModelLen,
    permission: [
      {
        id: `modelperm-${id}`,
        object: 'model_permission',
        created,
        allow_create_engine: false,
        allow_sampling: true,
        allow_logprobs: true,
        allow_search_indices: false,
        allow_view: true,
        allow_fine_tuning: false,
        organization: '*',
        group: null,
        is_blocking: false,
      },
    ],
  });
  const cards = (): ModelCard[] => {
    const engine = readyEngine(state);
    // An adapter published in-process has no folder: its root is the version it serves now.
    const adapterCard = (a: ServedAdapter): ModelCard => card(a.name, a.created, a.source ?? a.id, state.modelName, engine.maxModelLen);
    // The base model's name wins over an adapter of the same name (as when resolving `model`).
    const adapters = engine.adapters.list().filter((a) => a.name !== state.modelName);
    return [card(state.modelName, started, engine.loaded.dir, null, engine.maxModelLen), ...adapters.map(adapterCard)];
  };

  getJson(
    app,
    {
      path: '/v1/models',
      summary: 'List the served models',
      description: 'The base model, then every loaded LoRA adapter (with `parent` = the base model).',
      tags: ['OpenAI'],
      responses: { 200: { description: 'The served models', content: { 'application/json': { schema: ModelList } } }, 401: ERROR_RESPONSES[401], 503: ERROR_RESPONSES[503] },
    },
    (c) => c.json({ object: 'list', data: cards() }),
  );

  const retrieve = createRoute({
    method: 'get',
    path: '/v1/models/{model}',
    summary: 'Describe one model',
    tags: ['OpenAI'],
    request: { params: z.object({ model: z.string() }) },
    responses: { 200: { description: 'The model', content: { 'application/json': { schema: ModelCard } } }, 401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404], 503: ERROR_RESPONSES[503] },
  });
  app.openapi(retrieve, ((c: Context<AppEnv>) => {
    const name = c.req.param('model');
    const all = cards();
    const model = all.find((m) => m.id === name);
    if (!model) {
      throw new ApiError(404, `The model '${name}' does not exist; this server serves ${all.map((m) => `'${m.id}'`).join(', ')}.`, 'model', 'model_not_found');
    }
    return c.json(model);
  }) as never);
}
