/**
 * Training jobs: POST /admin/jobs (body = a job config, as `tandem train --config` reads it),
 * GET /admin/jobs, GET /admin/jobs/{id}, POST /admin/jobs/{id}/pause|resume|stop.
 */
import { createRoute } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { JobView } from '../../train/job-manager.ts';
import type { AppEnv } from '../env.ts';
import { ApiError } from '../errors.ts';
import type { App } from '../routes.ts';
import type { ServerState } from '../state.ts';
import { adminRoute } from './route.ts';
import { ADMIN_ERRORS, JobConfigBody, JobDetail, JobDetailQuery, JobIdParams, JobList } from './schemas.ts';
import { readyAdmin } from './services.ts';
import type { AdminOptions } from './services.ts';

const TAGS = ['admin'];
const DEFAULT_METRICS = 20;
const json = <T>(schema: T) => ({ content: { 'application/json': { schema } } });
const auth = { 401: ADMIN_ERRORS[401], 403: ADMIN_ERRORS[403] };

export function registerJobRoutes(app: App, state: ServerState, admin: AdminOptions | null): void {
  const jobs = () => readyAdmin(state, admin!).jobs;
  const on = <T>(handler: T): T | null => (admin ? handler : null);

  adminRoute(
    app,
    createRoute({
      method: 'post',
      path: '/admin/jobs',
      summary: 'Start a training job (GRPO or SFT)',
      description:
        'Validates the config (an error names the field in `param`), then starts the job, or queues it behind the job that is ' +
        'training now (one trains at a time). The job publishes its adapter under `publish.adapter` (default: `name`), which ' +
        'clients can use as `model` while it trains.',
      tags: TAGS,
      request: { body: { content: { 'application/json': { schema: JobConfigBody } }, required: true } },
      responses: { 201: { description: 'The job, queued or running', ...json(JobDetail) }, 400: ADMIN_ERRORS[400], ...auth, 409: ADMIN_ERRORS[409], 503: ADMIN_ERRORS[503] },
    }),
    on(async (c) => {
      const manager = jobs();
      const job = manager.create(await readJsonBody(c));
      return c.json(detail(job, DEFAULT_METRICS), 201);
    }),
    { validate: false },
  );

  adminRoute(
    app,
    createRoute({
      method: 'get',
      path: '/admin/jobs',
      summary: 'List training jobs',
      description: 'Every job of this server and of earlier runs over the same --jobs-dir, oldest first.',
      tags: TAGS,
      responses: { 200: { description: 'The jobs', ...json(JobList) }, ...auth, 503: ADMIN_ERRORS[503] },
    }),
    on((c) => c.json({ object: 'list', data: jobs().list().map(summary) })),
  );

  adminRoute(
    app,
    createRoute({
      method: 'get',
      path: '/admin/jobs/{id}',
      summary: 'Describe a training job',
      description: 'Status, progress, time left, the last step records, the published adapter version, the last checkpoint and any error.',
      tags: TAGS,
      request: { params: JobIdParams, query: JobDetailQuery },
      responses: { 200: { description: 'The job', ...json(JobDetail) }, 400: ADMIN_ERRORS[400], ...auth, 404: ADMIN_ERRORS[404], 503: ADMIN_ERRORS[503] },
    }),
    on((c) => {
      const id = c.req.param('id')!;
      const job = jobs().get(id);
      if (!job) throw notFound(id);
      const { metrics } = (c.req.valid as (t: 'query') => { metrics?: number })('query');
      return c.json(detail(job, metrics ?? DEFAULT_METRICS));
    }),
  );

  const actions = [
    ['pause', 'Pause a running job after its current step (it keeps its device memory)'],
    ['resume', 'Resume a paused job; or continue an interrupted, stopped or failed one from its last checkpoint'],
    ['stop', 'Stop a job: a queued one at once, a running one after its current step, with a checkpoint'],
  ] as const;
  for (const [action, summaryText] of actions) {
    adminRoute(
      app,
      createRoute({
        method: 'post',
        path: `/admin/jobs/{id}/${action}`,
        summary: summaryText,
        tags: TAGS,
        request: { params: JobIdParams },
        responses: { 200: { description: 'The job', ...json(JobDetail) }, ...auth, 404: ADMIN_ERRORS[404], 409: ADMIN_ERRORS[409], 503: ADMIN_ERRORS[503] },
      }),
      on((c) => c.json(detail(jobs()[action](c.req.param('id')!), DEFAULT_METRICS))),
    );
  }
}

function notFound(id: string): ApiError {
  return new ApiError(404, `No training job with id '${id}'; GET /admin/jobs lists them.`, 'id', 'job_not_found');
}

function summary(job: JobView): Omit<JobView, 'config' | 'metrics'> {
  const { config: _config, metrics: _metrics, ...rest } = job;
  return rest;
}

function detail(job: JobView, metrics: number): JobView {
  return { ...job, metrics: metrics === 0 ? [] : job.metrics.slice(-metrics) };
}

/** The body as JSON, or a 400 like the OpenAI routes give for malformed JSON. */
async function readJsonBody(c: Context<AppEnv>): Promise<unknown> {
  const text = await c.req.text();
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, `Malformed JSON in request body (${(err as Error).message}): the body must be one JSON object, a job config`, null, 'invalid_json');
  }
}
