/** The admin API's request and response schemas (they document /admin/* in the OpenAPI document). */
import { z } from '@hono/zod-openapi';
import { jobConfigSchema } from '../../train/job-config.ts';
import { ErrorResponse } from '../openai/schemas/common.ts';

const errorContent = { content: { 'application/json': { schema: ErrorResponse } } };

export const ADMIN_ERRORS = {
  400: { description: 'Invalid request: `param` names the field', ...errorContent },
  401: { description: 'Missing or wrong admin token (servers started with --admin-token)', ...errorContent },
  403: { description: 'No admin token configured and the client is not on the server\'s machine', ...errorContent },
  404: { description: 'No such job or adapter', ...errorContent },
  409: { description: 'The request conflicts with the state of a job or adapter', ...errorContent },
  503: { description: 'The model is loading, or the server is shutting down', ...errorContent },
};

/** The POST /admin/jobs body, as documented; the handler validates it with parseJobConfig. */
export const JobConfigBody = jobConfigSchema.openapi('JobConfig');

const JobStatus = z
  .enum(['queued', 'running', 'paused', 'stopping', 'stopped', 'completed', 'failed', 'interrupted'])
  .describe("'interrupted': the server ended while the job was unfinished; POST .../resume continues it from its last checkpoint.");

export const StepRecord = z
  .record(z.string(), z.union([z.number(), z.string(), z.boolean(), z.null()]))
  .describe('One optimizer step: step, time, loss, learning_rate, grad_norm, skipped, rollout_seconds, train_seconds, adapter_version, and for GRPO reward, reward_std, rewards/<name>/mean, kl, clip_ratio/*, completion_length... (null where not a finite number).')
  .openapi('TrainStepRecord');

const Eta = z.object({ seconds_per_step: z.number(), seconds_left: z.number() }).nullable().describe('From the last 20 steps; null before the first.');

export const JobSummary = z
  .object({
    id: z.string(),
    name: z.string(),
    kind: z.enum(['grpo', 'sft']),
    adapter: z.string().describe('The adapter name the job publishes (chat with it as `model`).'),
    status: JobStatus,
    step: z.int(),
    max_steps: z.int(),
    skipped_steps: z.int(),
    created_at: z.string(),
    started_at: z.string().nullable(),
    finished_at: z.string().nullable(),
    updated_at: z.string(),
    error: z.string().nullable(),
    last_checkpoint: z.string().nullable(),
    resumed_from: z.string().nullable(),
    published_version: z.string().nullable().describe('The adapter version last published, `name@vN` (as in system_fingerprint).'),
    output_dir: z.string(),
    eta: Eta,
    queue_position: z.int().nullable().describe('1 = starts next; null when not queued.'),
  })
  .openapi('TrainingJobSummary');

export const JobDetail = JobSummary.extend({
  config: z.record(z.string(), z.unknown()).describe('The resolved config: every default filled in, paths made absolute.'),
  metrics: z.array(StepRecord).describe('The last N step records (query `metrics`), oldest first.'),
}).openapi('TrainingJob');

export const JobList = z.object({ object: z.literal('list'), data: z.array(JobSummary) }).openapi('TrainingJobList');

export const JobIdParams = z.object({ id: z.string().openapi({ param: { name: 'id', in: 'path' }, example: 'job-m1abc-0k2x' }) });

export const JobDetailQuery = z.object({
  metrics: z.coerce.number().int().min(0).max(1000).optional().describe('How many recent step records to return (default 20).'),
});

export const Adapter = z
  .object({
    name: z.string(),
    id: z.string().describe('`name@vN`'),
    version: z.int(),
    bytes: z.int().describe('Device memory of the parameters.'),
    source: z.string().nullable().describe('The PEFT folder it was loaded from; null when a training job published it.'),
    created: z.int().describe('Unix seconds.'),
    refs: z.int().describe('Requests generating with this version now.'),
    hidden: z.boolean().describe("A training job's private rollout copy (not in /v1/models)."),
    training_job: z.string().nullable().describe('The queued, running or paused job that publishes this name.'),
  })
  .openapi('Adapter');

export const AdapterList = z.object({ object: z.literal('list'), data: z.array(Adapter) }).openapi('AdapterList');

export const AdapterNameParams = z.object({ name: z.string().openapi({ param: { name: 'name', in: 'path' }, example: 'math' }) });

const serverPath = z.string().min(1).max(4096).describe('A directory on the server (relative paths start at its working directory).');

export const LoadAdapterBody = z
  .object({
    name: z.string().min(1).describe('Serve the adapter under this name.'),
    path: serverPath.describe('A PEFT adapter folder (adapter_config.json + adapter_model.safetensors) on the server.'),
  })
  .openapi('LoadAdapterRequest');

export const SaveAdapterBody = z
  .object({
    path: serverPath.describe('Write adapter_config.json and adapter_model.safetensors here (a new or empty directory).'),
    overwrite: z.boolean().optional().describe('Replace the adapter already in `path` (default false).'),
    dtype: z.enum(['F32', 'BF16']).optional().describe('Tensor dtype on disk (default F32, the exact weights).'),
  })
  .openapi('SaveAdapterRequest');

export const SavedAdapter = z
  .object({ name: z.string(), id: z.string(), version: z.int(), path: z.string(), files: z.array(z.string()), bytes: z.int().describe('Bytes written.') })
  .openapi('SavedAdapter');

export const UnloadedAdapter = z.object({ name: z.string(), id: z.string(), unloaded: z.literal(true) }).openapi('UnloadedAdapter');

export const RewardList = z
  .object({ object: z.literal('list'), data: z.array(z.object({ name: z.string(), description: z.string() })) })
  .openapi('RewardList');
