import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RequestStream } from '../../src/engine/request-stream.ts';
import type { TokenEvent } from '../../src/engine/types.ts';

const ev = (text: string): TokenEvent => ({ tokenIds: [1], text });

describe('RequestStream', () => {
  it('delivers events pushed before and while the reader waits, then ends', async () => {
    const s = new RequestStream(() => assert.fail('not cancelled'));
    s.push(ev('a'));
    const got: string[] = [];
    const reading = (async () => {
      for await (const e of s) got.push(e.text);
    })();
    await new Promise((r) => setImmediate(r));
    s.push(ev('b'));
    s.end();
    s.push(ev('ignored after end'));
    await reading;
    assert.deepEqual(got, ['a', 'b']);
  });

  it('throws the failure after the queued events', async () => {
    const s = new RequestStream(() => {});
    s.push(ev('a'));
    s.fail(new Error('boom'));
    const got: string[] = [];
    await assert.rejects(async () => {
      for await (const e of s) got.push(e.text);
    }, /boom/);
    assert.deepEqual(got, ['a']);
  });

  it('cancels once when the reader leaves early, not after the end', async () => {
    let cancels = 0;
    const s = new RequestStream(() => cancels++);
    s.push(ev('a'));
    s.push(ev('b'));
    for await (const _ of s) break;
    assert.equal(cancels, 1);
    const done = new RequestStream(() => cancels++);
    done.push(ev('a'));
    done.end();
    for await (const _ of done) break;
    assert.equal(cancels, 1, 'an ended stream has nothing to abort');
  });

  it('can be iterated only once', () => {
    const s = new RequestStream(() => {});
    s[Symbol.asyncIterator]();
    assert.throws(() => s[Symbol.asyncIterator](), /only once/);
  });
});
