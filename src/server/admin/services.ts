/**
 * What the admin routes work with: the job manager, the engine (its adapter registry and device
 * queue) and the reward registry. `tandem serve` listens before the model is loaded, so the app
 * gets a holder whose `services` appear once the engine exists; until then /admin/* answers 503.
 */
import type { Engine } from '../../engine/engine.ts';
import { JobConfigError } from '../../train/job-config.ts';
import { JobManagerError } from '../../train/job-manager.ts';
import type { JobManager } from '../../train/job-manager.ts';
import { ApiError } from '../errors.ts';
import { readyEngine } from '../ready.ts';
import type { ServerState } from '../state.ts';

export interface AdminServices {
  jobs: JobManager;
  engine: Engine;
  rewards: { list(): { name: string; description: string }[] };
}

export interface AdminOptions {
  /** Require `Authorization: Bearer <token>` on /admin/*; null: loopback clients only. */
  token?: string | null;
  /** Set once the model is loaded (the app may be created before). */
  services: AdminServices | null;
}

/** The services, or the 503 the OpenAI routes give while the model loads (or failed, or stops). */
export function readyAdmin(state: ServerState, admin: AdminOptions): AdminServices {
  if (admin.services === null || state.status !== 'ready') readyEngine(state);
  if (admin.services === null) throw new ApiError(503, 'The admin API is not ready yet; retry when GET /health answers 200.', null, 'admin_loading');
  return admin.services;
}

const MANAGER_STATUS = { not_found: 404, conflict: 409, unavailable: 503 } as const;

/** Job config and job manager errors as API errors (field in `param`); others pass through. */
export function adminApiError(err: unknown): unknown {
  if (err instanceof JobConfigError) return new ApiError(400, err.message, err.field === '' ? null : err.field, 'invalid_job_config');
  if (err instanceof JobManagerError) {
    const code = err.reason === 'not_found' ? 'job_not_found' : err.reason === 'conflict' ? 'job_conflict' : 'shutting_down';
    return new ApiError(MANAGER_STATUS[err.reason], err.message, null, code);
  }
  return err;
}
