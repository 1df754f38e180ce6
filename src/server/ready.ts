/** Guards at the top of every model route: the engine is up, and `model` names it. */
import { ApiError, invalidParam } from './errors.ts';
import type { ServerState, ServingEngine } from './state.ts';

/** The engine, or a 503 that says why there is none (loading, failed, shutting down). */
export function readyEngine(state: ServerState): ServingEngine {
  if (state.status === 'ready' && state.engine !== null) return state.engine;
  if (state.status === 'stopping') return unavailable('The server is shutting down; send the request to another replica or retry later.', 'shutting_down');
  if (state.status === 'failed') return unavailable(`The model failed to load: ${state.error ?? 'unknown error'}`, 'model_load_failed');
  return unavailable(`The model ${state.modelName} is still loading; retry when GET /health answers 200.`, 'model_loading');
}

function unavailable(message: string, code: string): never {
  throw new ApiError(503, message, null, code);
}

/** A request's `model` must be the served name; absent or null means the served model (as vLLM). */
export function checkModelName(state: ServerState, model: string | null | undefined): void {
  if (model === null || model === undefined || model === state.modelName) return;
  throw new ApiError(404, `The model '${model}' does not exist; this server serves '${state.modelName}' (GET /v1/models).`, 'model', 'model_not_found');
}

/**
 * The guards every generation route starts with: a ready engine, the served model's name,
 * and stream_options only together with stream.
 */
export function startGeneration(
  state: ServerState,
  req: { model?: string | null; stream?: boolean | null; stream_options?: unknown },
): ServingEngine {
  const engine = readyEngine(state);
  checkModelName(state, req.model);
  if (req.stream_options != null && !req.stream) {
    throw invalidParam('stream_options', 'stream_options is only allowed when stream is true.');
  }
  return engine;
}
