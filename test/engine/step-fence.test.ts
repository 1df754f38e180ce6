import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { StepFence } from '../../src/engine/step-fence.ts';

function deferred(): { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => [resolve, reject] = [res, rej]);
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('StepFence', () => {
  it('runs work at once when no step is in flight', () => {
    const fence = new StepFence();
    let ran = false;
    fence.afterInFlight(() => (ran = true));
    assert.equal(ran, true);
  });

  it('holds work until every step launched before it settles, resolved or rejected', async () => {
    const fence = new StepFence();
    const [a, b] = [deferred(), deferred()];
    const ran: string[] = [];
    fence.track(a.promise);
    fence.afterInFlight(() => ran.push('after a'));
    fence.track(b.promise);
    fence.afterInFlight(() => ran.push('after b'));
    assert.equal(fence.inFlight, 2);
    await turn();
    assert.deepEqual([...ran], []);
    a.reject(new Error('step failed'));
    await turn();
    assert.deepEqual([...ran], ['after a'], 'a failed step has settled too');
    b.resolve();
    await turn();
    assert.deepEqual([...ran], ['after a', 'after b']);
    assert.equal(fence.inFlight, 0);
    fence.afterInFlight(() => ran.push('now'));
    assert.deepEqual([...ran], ['after a', 'after b', 'now']);
  });
});
