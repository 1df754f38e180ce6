/**
 * Adapters and rewards: GET /admin/adapters, POST /admin/adapters/load, POST
 * /admin/adapters/{name}/unload, POST /admin/adapters/{name}/save, GET /admin/rewards.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createRoute } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { checkAdapterName } from '../../engine/adapters.ts';
import type { AdapterVersion } from '../../engine/adapters.ts';
import type { AppEnv } from '../env.ts';
import { ApiError } from '../errors.ts';
import type { App } from '../routes.ts';
import type { ServerState } from '../state.ts';
import { saveAdapterVersion } from './adapter-files.ts';
import { adminRoute } from './route.ts';
import {
  ADMIN_ERRORS,
  Adapter,
  AdapterList,
  AdapterNameParams,
  LoadAdapterBody,
  RewardList,
  SaveAdapterBody,
  SavedAdapter,
  UnloadedAdapter,
} from './schemas.ts';
import { readyAdmin } from './services.ts';
import type { AdminOptions, AdminServices } from './services.ts';

const TAGS = ['admin'];
const json = <T>(schema: T) => ({ content: { 'application/json': { schema } } });
const auth = { 401: ADMIN_ERRORS[401], 403: ADMIN_ERRORS[403] };

export function registerAdapterRoutes(app: App, state: ServerState, admin: AdminOptions | null): void {
  const services = (): AdminServices => readyAdmin(state, admin!);
  const on = <T>(handler: T): T | null => (admin ? handler : null);
  const card = (v: AdapterVersion) => ({
    name: v.name,
    id: v.id,
    version: v.version,
    bytes: v.bytes,
    source: v.source,
    created: v.created,
    refs: v.refs,
    hidden: v.hidden,
    training_job: services().jobs.activeJobFor(v.name),
  });
  /** The adapter's current version, or 404. */
  const current = (s: AdminServices, name: string): AdapterVersion => {
    const v = s.engine.adapters.get(name);
    if (!v) throw new ApiError(404, `No adapter named '${name}' is loaded; GET /admin/adapters lists them.`, 'name', 'adapter_not_found');
    return v;
  };
  /** A job publishing to `name` would put it back (or fight a load): stop the job first. */
  const notTraining = (s: AdminServices, name: string, action: string): void => {
    const job = s.jobs.activeJobFor(name);
    if (job) throw new ApiError(409, `Cannot ${action} '${name}': training job ${job} publishes it; stop that job first.`, 'name', 'adapter_in_training');
  };

  adminRoute(
    app,
    createRoute({
      method: 'get',
      path: '/admin/adapters',
      summary: 'List loaded adapters',
      description: 'Every adapter name with its current version, including training jobs\' hidden rollout copies.',
      tags: TAGS,
      responses: { 200: { description: 'The adapters', ...json(AdapterList) }, ...auth, 503: ADMIN_ERRORS[503] },
    }),
    on((c) => c.json({ object: 'list', data: services().engine.adapters.list({ hidden: true }).map(card) })),
  );

  adminRoute(
    app,
    createRoute({
      method: 'post',
      path: '/admin/adapters/load',
      summary: 'Load a PEFT adapter folder and serve it under a name',
      description: 'Loading over a loaded name publishes a new version of it; requests already running keep the old one.',
      tags: TAGS,
      request: { body: { content: { 'application/json': { schema: LoadAdapterBody } }, required: true } },
      responses: { 200: { description: 'The adapter as now served', ...json(Adapter) }, 400: ADMIN_ERRORS[400], ...auth, 409: ADMIN_ERRORS[409], 503: ADMIN_ERRORS[503] },
    }),
    on(async (c) => {
      const s = services();
      const { name, path: dirArg } = (c.req.valid as (t: 'json') => { name: string; path: string })('json');
      try {
        checkAdapterName(name);
      } catch (err) {
        throw new ApiError(400, (err as Error).message, 'name', 'invalid_value');
      }
      if (name === state.modelName) {
        throw new ApiError(409, `'${name}' is the base model's name (requests for it get the base model); load the adapter under another name.`, 'name', 'name_taken');
      }
      notTraining(s, name, 'load over');
      const dir = path.resolve(dirArg);
      if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
        throw new ApiError(400, `${dir} is not a directory on the server; give a PEFT adapter folder (adapter_config.json + adapter_model.safetensors).`, 'path', 'invalid_value');
      }
      let v: AdapterVersion;
      try {
        v = await s.engine.deviceQueue.run(() => s.engine.adapters.loadPeft(name, dir));
      } catch (err) {
        throw new ApiError(400, `Cannot load ${dir} as a LoRA adapter of this model: ${(err as Error).message}`, 'path', 'invalid_adapter');
      }
      return c.json(card(v));
    }),
  );

  adminRoute(
    app,
    createRoute({
      method: 'post',
      path: '/admin/adapters/{name}/unload',
      summary: 'Stop serving an adapter',
      description: 'New requests for the name get 404; requests already running on it finish.',
      tags: TAGS,
      request: { params: AdapterNameParams },
      responses: { 200: { description: 'Unloaded', ...json(UnloadedAdapter) }, ...auth, 404: ADMIN_ERRORS[404], 409: ADMIN_ERRORS[409], 503: ADMIN_ERRORS[503] },
    }),
    on(async (c) => {
      const s = services();
      const name = c.req.param('name')!;
      const v = current(s, name);
      notTraining(s, name, 'unload');
      await s.engine.deviceQueue.run(() => s.engine.adapters.unload(name));
      return c.json({ name, id: v.id, unloaded: true as const });
    }),
  );

  adminRoute(
    app,
    createRoute({
      method: 'post',
      path: '/admin/adapters/{name}/save',
      summary: 'Write the current version of an adapter to a PEFT folder',
      description: 'adapter_config.json + adapter_model.safetensors, loadable by peft, vLLM (--lora-modules) and POST /admin/adapters/load.',
      tags: TAGS,
      request: { params: AdapterNameParams, body: { content: { 'application/json': { schema: SaveAdapterBody } }, required: true } },
      responses: { 200: { description: 'Written', ...json(SavedAdapter) }, 400: ADMIN_ERRORS[400], ...auth, 404: ADMIN_ERRORS[404], 409: ADMIN_ERRORS[409], 503: ADMIN_ERRORS[503] },
    }),
    on(async (c: Context<AppEnv>) => {
      const s = services();
      const v = current(s, c.req.param('name')!);
      const body = (c.req.valid as (t: 'json') => { path: string; overwrite?: boolean; dtype?: 'F32' | 'BF16' })('json');
      const saved = await saveAdapterVersion(s.engine, v, body.path, { overwrite: body.overwrite, dtype: body.dtype });
      return c.json({ name: v.name, id: v.id, version: v.version, path: saved.dir, files: saved.files, bytes: saved.bytes });
    }),
  );

  adminRoute(
    app,
    createRoute({
      method: 'get',
      path: '/admin/rewards',
      summary: 'List reward functions',
      description: 'The names a GRPO job config may give in `reward_funcs`.',
      tags: TAGS,
      responses: { 200: { description: 'The rewards', ...json(RewardList) }, ...auth, 503: ADMIN_ERRORS[503] },
    }),
    on((c) => c.json({ object: 'list', data: services().rewards.list() })),
  );
}
