/** The admin API: training jobs, adapters and rewards under /admin (tag "admin"). */
import type { App } from '../routes.ts';
import type { ServerState } from '../state.ts';
import { registerAdapterRoutes } from './adapters.ts';
import { registerJobRoutes } from './jobs.ts';
import type { AdminOptions } from './services.ts';

export type { AdminOptions, AdminServices } from './services.ts';

/** With `admin` null the routes are only documented (the OpenAPI document always shows them). */
export function registerAdmin(app: App, state: ServerState, admin: AdminOptions | null): void {
  registerJobRoutes(app, state, admin);
  registerAdapterRoutes(app, state, admin);
}
