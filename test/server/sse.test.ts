/** sse.ts: framing, [DONE], errors as events, and cancellation reaching the producer. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError } from '../../src/server/errors.ts';
import { sseResponse } from '../../src/server/sse.ts';

describe('sseResponse', () => {
  it('frames each chunk as data: {json}, ends with [DONE], then reports a normal close', async () => {
    const closes: boolean[] = [];
    async function* chunks() {
      yield { a: 1 };
      yield { b: 'x\ny' };
    }
    const res = sseResponse(chunks(), (cancelled) => closes.push(cancelled));
    assert.equal(res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    assert.equal(await res.text(), 'data: {"a":1}\n\ndata: {"b":"x\\ny"}\n\ndata: [DONE]\n\n');
    assert.deepEqual(closes, [false]);
  });

  it('an error after the headers travels as an error event before [DONE]', async () => {
    async function* chunks() {
      yield { a: 1 };
      throw new ApiError(503, 'going away', null, 'shutting_down');
    }
    const text = await sseResponse(chunks(), () => {}).text();
    const events = text.split('\n\n').filter((e) => e !== '');
    assert.equal(events.length, 3);
    assert.deepEqual(JSON.parse(events[1].slice(6)), { error: { message: 'going away', type: 'server_error', param: null, code: 'shutting_down' } });
    assert.equal(events[2], 'data: [DONE]');
  });

  it('a cancelled stream (client gone) reports cancelled and closes the producer', async () => {
    const closes: boolean[] = [];
    let finalized = false;
    async function* chunks() {
      try {
        for (let i = 0; ; i++) yield { i };
      } finally {
        finalized = true;
      }
    }
    const res = sseResponse(chunks(), (cancelled) => closes.push(cancelled));
    const reader = res.body!.getReader();
    await reader.read();
    await reader.cancel();
    assert.deepEqual(closes, [true]);
    assert.ok(finalized);
  });
});
