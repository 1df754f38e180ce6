/** errors.ts: zod issues and engine errors -> OpenAI's error shape. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HTTPException } from 'hono/http-exception';
import { z } from 'zod';
import { EngineError } from '../../src/engine/types.ts';
import { ApiError, fromEngineError, fromZodError, paramPath, toApiError } from '../../src/server/errors.ts';

describe('errors', () => {
  it('paramPath writes OpenAI\'s spelling', () => {
    assert.equal(paramPath(['messages', 0, 'content']), 'messages[0].content');
    assert.equal(paramPath(['prompt', 0, 2]), 'prompt[0][2]');
    assert.equal(paramPath([]), '');
  });

  it('a union names the option that got furthest, and the types it wanted when none matched', () => {
    const schema = z.object({ prompt: z.union([z.string(), z.array(z.array(z.int()))]), stop: z.union([z.string(), z.array(z.string()).max(2)]) });
    const deep = fromZodError(schema.safeParse({ prompt: [[1, 'x']], stop: 'a' }).error!, { prompt: [[1, 'x']] });
    assert.equal(deep.param, 'prompt[0][1]');
    assert.match(deep.message, /got "x"/);
    const many = fromZodError(schema.safeParse({ prompt: 'a', stop: ['a', 'b', 'c'] }).error!, {});
    assert.equal(many.param, 'stop');
    assert.match(many.message, /<=2 items/);
    const wrongType = fromZodError(schema.safeParse({ prompt: 5, stop: 'a' }).error!, { prompt: 5 });
    assert.equal(wrongType.param, 'prompt');
    assert.match(wrongType.message, /expected string or array \(got 5\)/);
  });

  it('engine errors keep their numbers and map to 400, 429, 503', () => {
    const tooLong = fromEngineError(new EngineError('context_length_exceeded', 'prompt is 9,000 tokens; context 8,192', 'prompt'));
    assert.deepEqual(tooLong.body(), {
      error: { message: 'prompt is 9,000 tokens; context 8,192', type: 'invalid_request_error', param: 'prompt', code: 'context_length_exceeded' },
    });
    assert.equal(fromEngineError(new EngineError('queue_full', 'full')).status, 429);
    assert.equal(fromEngineError(new EngineError('queue_full', 'full')).type, 'rate_limit_error');
    assert.equal(fromEngineError(new EngineError('shutting_down', 'bye')).status, 503);
    assert.equal(fromEngineError(new EngineError('out_of_capacity', 'big')).status, 400);
  });

  it('anything else becomes an OpenAI-shaped error too', () => {
    assert.equal(toApiError(new HTTPException(400, { message: 'Malformed JSON in request body' })).code, 'invalid_json');
    assert.equal(toApiError(new HTTPException(415)).status, 415);
    const internal = toApiError(new Error('boom'));
    assert.equal(internal.status, 500);
    assert.equal(internal.type, 'server_error');
    const own = new ApiError(404, 'nope', 'model', 'model_not_found');
    assert.equal(toApiError(own), own);
  });
});
