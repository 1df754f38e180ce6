/** POST /v1/chat/completions: messages -> chat template -> n engine requests -> JSON or SSE. */
import { randomUUID } from 'node:crypto';
import type { Context } from 'hono';
import type { AppEnv } from '../env.ts';
import { ApiError, invalidParam } from '../errors.ts';
import { startGeneration } from '../ready.ts';
import { ERROR_RESPONSES, postJson, type App } from '../routes.ts';
import { sseResponse } from '../sse.ts';
import type { ServerState } from '../state.ts';
import { ChoiceSet } from './choices.ts';
import { beginRequest, type RequestLife } from './lifecycle.ts';
import { chatLogprobs, tokenIdName, tokenText, type TokenNamer } from './logprobs.ts';
import { chatPrompt } from './prompt.ts';
import { choiceRequest, planSampling } from './sampling.ts';
import {
  ChatCompletionChunk,
  ChatCompletionRequest,
  ChatCompletionResponse,
} from './schemas/chat.ts';
import { envelope, type Meta } from './envelope.ts';
import { UsageCounter } from './usage.ts';


interface LogprobsOptions {
  top: number;
  name: TokenNamer;
}

export function registerChat(app: App, state: ServerState): void {
  postJson(
    app,
    {
      path: '/v1/chat/completions',
      summary: 'Create a chat completion',
      description: 'OpenAI chat completions with vLLM\'s sampling extensions. With `stream: true` the response is `text/event-stream`.',
      tags: ['OpenAI'],
      responses: {
        200: {
          description: 'The completion, or with stream: true a stream of ChatCompletionChunk events ending with [DONE]',
          content: { 'application/json': { schema: ChatCompletionResponse }, 'text/event-stream': { schema: ChatCompletionChunk } },
        },
        ...ERROR_RESPONSES,
      },
    },
    ChatCompletionRequest,
    (c, body) => createChatCompletion(c, state, body),
  );
}

async function createChatCompletion(c: Context<AppEnv>, state: ServerState, req: ChatCompletionRequest): Promise<Response> {
  const { engine, served } = startGeneration(state, req);
  if ((req.top_logprobs ?? 0) > 0 && !req.logprobs) {
    throw invalidParam('top_logprobs', 'top_logprobs needs logprobs: true.');
  }
  const topLogprobs = req.top_logprobs ?? 0;
  const name = req.return_tokens_as_token_ids ? tokenIdName : tokenText;
  const prompt = chatPrompt(engine, req);
  const plan = planSampling(engine, req, req.max_completion_tokens ?? req.max_tokens ?? null, req.logprobs ? topLogprobs : null);
  const meta: Meta = {
    id: `chatcmpl-${randomUUID().replaceAll('-', '')}`,
    created: Math.floor(Date.now() / 1000),
    model: served.name,
    system_fingerprint: served.fingerprint,
  };
  const life = beginRequest(c, state);
  let set: ChoiceSet;
  try {
    const requests = Array.from({ length: plan.n }, (_, i) => choiceRequest(engine, plan, `${meta.id}-${i}`, prompt.ids, i, life.signal, served.adapter));
    const maxTokensParam = req.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
    set = new ChoiceSet(engine, requests, (param) => (param === 'prompt' ? 'messages' : param === 'max_tokens' ? maxTokensParam : param));
  } catch (err) {
    life.end();
    throw err;
  }
  const usage = new UsageCounter([prompt.ids.length], plan.n);
  if (req.stream) {
    const opts = { includeUsage: req.stream_options?.include_usage ?? false, continuous: req.stream_options?.continuous_usage_stats ?? false };
    return sseResponse(streamChunks(set, meta, usage, { top: topLogprobs, name }, opts), (cancelled) => {
      if (cancelled) life.abort();
      life.end();
    });
  }
  try {
    return c.json(await collect(set, meta, usage, plan.logprobs === null ? null : { top: topLogprobs, name }, life));
  } finally {
    life.end();
  }
}

async function collect(
  set: ChoiceSet,
  meta: Meta,
  usage: UsageCounter,
  logprobs: LogprobsOptions | null,
  life: RequestLife,
): Promise<ChatCompletionResponse> {
  const choices: ChatCompletionResponse['choices'] = Array.from({ length: set.size }, (_, index) => ({
    index,
    message: { role: 'assistant', content: '', refusal: null },
    logprobs: logprobs === null ? null : { content: [] },
    finish_reason: null,
    stop_reason: null,
  }));
  for await (const { index, event } of set.events()) {
    const choice = choices[index];
    choice.message.content += event.text;
    if (logprobs !== null && event.logprobs) choice.logprobs!.content!.push(...chatLogprobs(event.logprobs, logprobs.top, logprobs.name));
    usage.record(index, event);
    if (event.finishReason !== undefined) {
      choice.finish_reason = event.finishReason;
      choice.stop_reason = event.stopReason ?? null;
    }
  }
  // A client that left gets nothing anyway; anyone else is owed a whole answer or an error.
  if (!life.signal.aborted && choices.some((ch) => ch.finish_reason === 'abort' || ch.finish_reason === null)) {
    throw new ApiError(503, 'The request was aborted before it finished: the server is shutting down.', null, 'aborted');
  }
  return { ...envelope(meta, 'chat.completion'), choices, usage: usage.body() };
}

async function* streamChunks(
  set: ChoiceSet,
  meta: Meta,
  usage: UsageCounter,
  logprobOpts: LogprobsOptions,
  opts: { includeUsage: boolean; continuous: boolean },
): AsyncGenerator<ChatCompletionChunk> {
  const chunk = (choices: ChatCompletionChunk['choices']): ChatCompletionChunk => ({
    ...envelope(meta, 'chat.completion.chunk'),
    choices,
    ...(opts.includeUsage ? { usage: opts.continuous ? usage.body() : null } : {}),
  });
  for (let index = 0; index < set.size; index++) {
    yield chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
  }
  for await (const { index, event } of set.events()) {
    usage.record(index, event);
    const logprobs = event.logprobs && event.logprobs.length > 0 ? { content: chatLogprobs(event.logprobs, logprobOpts.top, logprobOpts.name) } : null;
    if (event.text !== '' || logprobs !== null) {
      yield chunk([{ index, delta: { content: event.text }, logprobs, finish_reason: null }]);
    }
    if (event.finishReason !== undefined) {
      yield chunk([{ index, delta: {}, logprobs: null, finish_reason: event.finishReason, stop_reason: event.stopReason ?? null }]);
    }
  }
  if (opts.includeUsage) yield { ...chunk([]), usage: usage.body() };
}
