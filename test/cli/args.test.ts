import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { switchOption, UsageError } from '../../src/cli/args.ts';

describe('switchOption', () => {
  const on = (set: boolean) => ({ name: 'cuda-graphs', set });
  const off = (set: boolean) => ({ name: 'enforce-eager', set });

  it('takes a flag over the environment, and leaves the default open when neither says', () => {
    assert.equal(switchOption(on(true), off(false), 'V', '0'), true);
    assert.equal(switchOption(on(false), off(true), 'V', '1'), false);
    assert.equal(switchOption(on(false), off(false), 'V', '1'), true);
    assert.equal(switchOption(on(false), off(false), 'V', '0'), false);
    assert.equal(switchOption(on(false), off(false), 'V', undefined), undefined);
    assert.equal(switchOption(on(false), off(false), 'V', ''), undefined);
  });

  it('rejects both flags, and a variable other than 0 or 1, naming them', () => {
    assert.throws(() => switchOption(on(true), off(true), 'V', undefined), (e: unknown) => e instanceof UsageError && /--cuda-graphs and --enforce-eager contradict/.test(e.message));
    for (const bad of ['yes', 'true', ' 1', '2']) {
      assert.throws(() => switchOption(on(false), off(false), 'TANDEM_CUDA_GRAPHS', bad), (e: unknown) => e instanceof UsageError && e.message.includes(`TANDEM_CUDA_GRAPHS must be 0 or 1, got ${JSON.stringify(bad)}`));
    }
  });
});
