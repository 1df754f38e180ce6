/** GET /v1/models and GET /v1/models/{model}: the one served model, as vLLM lists it. */
import { createRoute, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AppEnv } from '../env.ts';
import { readyEngine } from '../ready.ts';
import { ApiError } from '../errors.ts';
import { ERROR_RESPONSES, getJson, type App } from '../routes.ts';
import type { ServerState } from '../state.ts';
import { ModelCard, ModelList } from './schemas/models.ts';

export function registerModels(app: App, state: ServerState): void {
  const started = Math.floor(Date.now() / 1000);
  const card = (): ModelCard => {
    const engine = readyEngine(state);
    return {
      id: state.modelName,
      object: 'model',
      created: started,
      owned_by: 'tandem',
      root: engine.loaded.dir,
      parent: null,
      max_model_len: engine.maxModelLen,
      permission: [
        {
          id: `modelperm-${state.modelName}`,
          object: 'model_permission',
          created: started,
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
    };
  };

  getJson(
    app,
    {
      path: '/v1/models',
      summary: 'List the served models',
      tags: ['OpenAI'],
      responses: { 200: { description: 'The served model', content: { 'application/json': { schema: ModelList } } }, 401: ERROR_RESPONSES[401], 503: ERROR_RESPONSES[503] },
    },
    (c) => c.json({ object: 'list', data: [card()] }),
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
    const model = card();
    if (name !== model.id) throw new ApiError(404, `The model '${name}' does not exist; this server serves '${model.id}'.`, 'model', 'model_not_found');
    return c.json(model);
  }) as never);
}
