/** Guards at the top of every model route: the engine is up, and `model` names something it serves. */
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

/** What a request's `model` resolved to. */
export interface ServedModel {
  /** The name responses carry as `model` (the base model's, or the adapter's). */
  name: string;
  /** The adapter to generate with; null for the base model. */
  adapter: string | null;
  /** `system_fingerprint`: the base's, plus `+<name>@v<n>` for the adapter version in use. */
  fingerprint: string;
}

/**
 * A request's `model`: the served name (absent or null means it, as vLLM), or the name of a
 * loaded adapter (the base model's name wins over an adapter of the same name); else 404.
 * The adapter's version is read here: add the request to the engine without an `await` in
 * between, so that the version named in the fingerprint is the one the engine pins.
 */
export function resolveModel(state: ServerState, model: string | null | undefined): ServedModel {
  if (model === null || model === undefined || model === state.modelName) {
    return { name: state.modelName, adapter: null, fingerprint: state.fingerprint };
  }
  const adapters = state.engine?.adapters;
  const version = adapters?.get(model);
  if (version) return { name: model, adapter: model, fingerprint: `${state.fingerprint}+${version.id}` };
  const served = [state.modelName, ...(adapters?.list().map((a) => a.name) ?? [])].map((n) => `'${n}'`).join(', ');
  throw new ApiError(404, `The model '${model}' does not exist; this server serves ${served} (GET /v1/models).`, 'model', 'model_not_found');
}

/**
 * The guards every generation route starts with: a ready engine, a served model name, and
 * stream_options only together with stream.
 */
export function startGeneration(
  state: ServerState,
  req: { model?: string | null; stream?: boolean | null; stream_options?: unknown },
): { engine: ServingEngine; served: ServedModel } {
  const engine = readyEngine(state);
  const served = resolveModel(state, req.model);
  if (req.stream_options != null && !req.stream) {
    throw invalidParam('stream_options', 'stream_options is only allowed when stream is true.');
  }
  return { engine, served };
}
