/** POST /v1/completions: prompt(s) -> n engine requests per prompt -> JSON or SSE. */
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
import { CompletionLogprobsBuilder, tokenIdName, tokenText, type TokenNamer } from './logprobs.ts';
import { completionPrompts, type PromptInput } from './prompt.ts';
import { choiceRequest, planSampling } from './sampling.ts';
import { CompletionChunk, CompletionRequest, CompletionResponse } from './schemas/completions.ts';
import { envelope, type Meta } from './envelope.ts';
import { UsageCounter } from './usage.ts';


export function registerCompletions(app: App, state: ServerState): void {
  postJson(
    app,
    {
      path: '/v1/completions',
      summary: 'Create a text completion',
      description:
        'OpenAI (legacy) completions with vLLM\'s sampling extensions. A list of prompts gives n choices per prompt, ' +
        'choice index = prompt index * n + i. With `stream: true` the response is `text/event-stream`.',
      tags: ['OpenAI'],
      responses: {
        200: {
          description: 'The completion, or with stream: true a stream of CompletionChunk events ending with [DONE]',
          content: { 'application/json': { schema: CompletionResponse }, 'text/event-stream': { schema: CompletionChunk } },
        },
        ...ERROR_RESPONSES,
      },
    },
    CompletionRequest,
    (c, body) => createCompletion(c, state, body),
  );
}

async function createCompletion(c: Context<AppEnv>, state: ServerState, req: CompletionRequest): Promise<Response> {
  const { engine, served } = startGeneration(state, req);
  if (req.suffix != null) throw invalidParam('suffix', 'suffix is not supported by this server; leave it out.', 'unsupported_parameter');
  if (req.best_of != null && req.best_of !== (req.n ?? 1)) {
    throw invalidParam('best_of', 'best_of is not supported beyond n; leave it out or set it equal to n.', 'unsupported_parameter');
  }
  const echo = req.echo ?? false;
  if (echo && req.logprobs != null) {
    throw invalidParam('echo', 'echo with logprobs would need prompt logprobs, which this server does not compute; drop one of them.', 'unsupported_parameter');
  }
  const prompts = completionPrompts(engine, req.prompt);
  const plan = planSampling(engine, req, req.max_tokens ?? null, req.logprobs ?? null);
  const meta: Meta = {
    id: `cmpl-${randomUUID().replaceAll('-', '')}`,
    created: Math.floor(Date.now() / 1000),
    model: served.name,
    system_fingerprint: served.fingerprint,
  };
  const life = beginRequest(c, state);
  let set: ChoiceSet;
  try {
    const requests = prompts.flatMap((p, pi) =>
      Array.from({ length: plan.n }, (_, i) => choiceRequest(engine, plan, `${meta.id}-${pi * plan.n + i}`, p.ids, i, life.signal, served.adapter)),
    );
    // A list of prompts: name the one the engine refused.
    const manyPrompts = typeof req.prompt !== 'string' && typeof req.prompt[0] !== 'number';
    set = new ChoiceSet(engine, requests, (param, i) =>
      param === 'prompt' && manyPrompts ? `prompt[${Math.floor(i / plan.n)}]` : param,
    );
  } catch (err) {
    life.end();
    throw err;
  }
  const usage = new UsageCounter(prompts.map((p) => p.ids.length), plan.n);
  const name = req.return_tokens_as_token_ids ? tokenIdName : tokenText;
  const shape: Shape = { prompts, n: plan.n, echo, logprobs: plan.logprobs, name };
  if (req.stream) {
    const opts = { includeUsage: req.stream_options?.include_usage ?? false, continuous: req.stream_options?.continuous_usage_stats ?? false };
    return sseResponse(streamChunks(set, meta, usage, shape, opts), (cancelled) => {
      if (cancelled) life.abort();
      life.end();
    });
  }
  try {
    return c.json(await collect(set, meta, usage, shape, life));
  } finally {
    life.end();
  }
}

interface Shape {
  prompts: PromptInput[];
  n: number;
  echo: boolean;
  logprobs: number | null;
  name: TokenNamer;
}

/** The text a choice starts with: the prompt when echoing, else nothing. */
const prefix = (shape: Shape, index: number): string => (shape.echo ? shape.prompts[Math.floor(index / shape.n)].text : '');

async function collect(set: ChoiceSet, meta: Meta, usage: UsageCounter, shape: Shape, life: RequestLife): Promise<CompletionResponse> {
  const logprobs = Array.from({ length: set.size }, (_, i) =>
    shape.logprobs === null ? null : new CompletionLogprobsBuilder(prefix(shape, i).length, shape.logprobs, shape.name),
  );
  const choices: CompletionResponse['choices'] = Array.from({ length: set.size }, (_, index) => ({
    index,
    text: prefix(shape, index),
    logprobs: null,
    finish_reason: null,
    stop_reason: null,
  }));
  for await (const { index, event } of set.events()) {
    const choice = choices[index];
    choice.text += event.text;
    if (event.logprobs) logprobs[index]?.add(event.logprobs);
    usage.record(index, event);
    if (event.finishReason !== undefined) {
      choice.finish_reason = event.finishReason;
      choice.stop_reason = event.stopReason ?? null;
    }
  }
  if (!life.signal.aborted && choices.some((ch) => ch.finish_reason === 'abort' || ch.finish_reason === null)) {
    throw new ApiError(503, 'The request was aborted before it finished: the server is shutting down.', null, 'aborted');
  }
  choices.forEach((ch, i) => (ch.logprobs = logprobs[i]?.result() ?? null));
  return { ...envelope(meta, 'text_completion'), choices, usage: usage.body() };
}

async function* streamChunks(
  set: ChoiceSet,
  meta: Meta,
  usage: UsageCounter,
  shape: Shape,
  opts: { includeUsage: boolean; continuous: boolean },
): AsyncGenerator<CompletionChunk> {
  const chunk = (choices: CompletionChunk['choices']): CompletionChunk => ({
    ...envelope(meta, 'text_completion'),
    choices,
    ...(opts.includeUsage ? { usage: opts.continuous ? usage.body() : null } : {}),
  });
  const logprobs = Array.from({ length: set.size }, (_, i) =>
    shape.logprobs === null ? null : new CompletionLogprobsBuilder(prefix(shape, i).length, shape.logprobs, shape.name),
  );
  const echoed = new Array<boolean>(set.size).fill(!shape.echo);
  for await (const { index, event } of set.events()) {
    usage.record(index, event);
    // The prompt goes out with the choice's first text, as vLLM streams an echo.
    const text = (echoed[index] ? '' : prefix(shape, index)) + event.text;
    echoed[index] = true;
    const lp = event.logprobs && logprobs[index] ? logprobs[index].add(event.logprobs) : null;
    const finish = event.finishReason ?? null;
    if (text !== '' || lp !== null || finish !== null) {
      yield chunk([{ index, text, logprobs: lp, finish_reason: finish, stop_reason: finish === null ? null : (event.stopReason ?? null) }]);
    }
  }
  if (opts.includeUsage) yield { ...chunk([]), usage: usage.body() };
}
