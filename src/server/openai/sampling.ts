/**
 * OpenAI request fields -> the engine's GenerationRequest. Fields the request leaves out take
 * the model's generation_config.json values, as vLLM does (`--generation-config auto`):
 * temperature, top_p, top_k, min_p, repetition_penalty, and max_new_tokens as a cap on the
 * default max_tokens.
 */
import type { EngineSampling, GenerationRequest } from '../../engine/types.ts';
import { invalidParam } from '../errors.ts';
import type { ServingEngine } from '../state.ts';
import { checkTokenIds } from './prompt.ts';

/** The sampling fields both request schemas share (see schemas/common.ts). */
interface Fields {
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  min_p?: number | null;
  n?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  stop_token_ids?: number[] | null;
  ignore_eos?: boolean | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  repetition_penalty?: number | null;
  skip_special_tokens?: boolean | null;
  logit_bias?: Record<string, number> | null;
}

/** What every choice of a request shares; `choiceRequest` adds the prompt and the seed. */
export interface SamplingPlan {
  n: number;
  sampling: EngineSampling;
  stop: GenerationRequest['stop'];
  /** null: the rest of the context (capped by generation_config's max_new_tokens). */
  maxTokens: number | null;
  logprobs: number | null;
  skipSpecialTokens: boolean;
}

export function planSampling(engine: ServingEngine, req: Fields, maxTokens: number | null, logprobs: number | null): SamplingPlan {
  if (req.logit_bias && Object.keys(req.logit_bias).length > 0) {
    throw invalidParam('logit_bias', 'logit_bias is not supported by this server; leave it out.', 'unsupported_parameter');
  }
  const stopIds = req.stop_token_ids ?? [];
  checkTokenIds(engine, stopIds, 'stop_token_ids');
  const g = engine.loaded.generation;
  const topK = req.top_k ?? g.topK;
  return {
    n: req.n ?? 1,
    sampling: {
      temperature: req.temperature ?? g.temperature,
      topK: topK <= 0 ? 0 : topK,
      topP: req.top_p ?? g.topP,
      minP: req.min_p ?? g.minP,
      seed: req.seed ?? null,
      presencePenalty: req.presence_penalty ?? 0,
      frequencyPenalty: req.frequency_penalty ?? 0,
      repetitionPenalty: req.repetition_penalty ?? g.repetitionPenalty,
    },
    stop: {
      strings: req.stop == null ? [] : typeof req.stop === 'string' ? [req.stop] : req.stop,
      tokenIds: stopIds,
      ignoreEos: req.ignore_eos ?? false,
    },
    maxTokens,
    logprobs,
    skipSpecialTokens: req.skip_special_tokens ?? true,
  };
}

/**
 * The engine request of choice `index` (0-based among the n choices of one prompt). With a
 * seed, choice i samples with seed + i so the n choices differ yet repeat exactly (vLLM does
 * the same for its child requests).
 */
export function choiceRequest(
  engine: ServingEngine,
  plan: SamplingPlan,
  requestId: string,
  promptIds: number[],
  index: number,
  signal: AbortSignal,
  adapter: string | null = null,
): GenerationRequest {
  const seed = plan.sampling.seed;
  return {
    requestId,
    promptIds,
    maxTokens: plan.maxTokens ?? defaultMaxTokens(engine, promptIds.length),
    sampling: { ...plan.sampling, seed: seed === null ? null : seed + index },
    stop: plan.stop,
    logprobs: plan.logprobs,
    priority: 0,
    skipSpecialTokens: plan.skipSpecialTokens,
    signal,
    adapter,
  };
}

/**
 * The rest of the context, at least 1 so that a prompt that fills the context reaches the
 * engine, whose error states the numbers.
 */
function defaultMaxTokens(engine: ServingEngine, promptLength: number): number {
  const rest = Math.max(1, engine.maxModelLen - promptLength);
  const cap = engine.loaded.generation.maxNewTokens;
  return cap === null ? rest : Math.min(rest, cap);
}
