import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_L2_SHARE, planPrefetch, prefetchBudget } from '../../src/backend/cuda/prefetch-plan.ts';

const MiB = 2 ** 20;
// A 3B model's o, gate and up projections in bf16.
const o = { ptr: 0x1000_0000, bytes: 2048 * 2048 * 2 };
const gate = { ptr: 0x2000_0000, bytes: 11008 * 2048 * 2 };
const up = { ptr: 0x4000_0000, bytes: 11008 * 2048 * 2 };

test('planPrefetch: whole tensors while they fit, then equal leading parts of the rest', () => {
  const budget = 16 * MiB;
  const plan = planPrefetch([o, gate, up], budget);
  assert.equal(plan.length, 3);
  assert.deepEqual(plan[0], o);
  const share = Math.floor((budget - o.bytes) / 2 / 16) * 16;
  assert.deepEqual(plan[1], { ptr: gate.ptr, bytes: share });
  assert.deepEqual(plan[2], { ptr: up.ptr, bytes: share });
  const total = plan.reduce((s, r) => s + r.bytes, 0);
  assert.ok(total <= budget && total > budget - 64, `plan takes ${total} of ${budget}`);
});

test('planPrefetch: everything when the budget holds it; nothing for a zero budget', () => {
  assert.deepEqual(planPrefetch([o, gate], 200 * MiB), [o, gate]);
  assert.deepEqual(planPrefetch([o, gate, up], 0), []);
  assert.deepEqual(planPrefetch([], 16 * MiB), []);
});

test('planPrefetch: a budget smaller than the first tensor shares it from the first one on', () => {
  const plan = planPrefetch([o, gate, up], 3 * MiB);
  assert.deepEqual(plan.map((r) => r.ptr), [o.ptr, gate.ptr, up.ptr]);
  for (const r of plan) assert.equal(r.bytes, MiB);
  // Shared parts are whole 16-byte units, never past their tensor (the kernel rounds whole ones down).
  const odd = planPrefetch([{ ptr: 16, bytes: 40 }, { ptr: 4096, bytes: 1000 }, { ptr: 8192, bytes: 20 }], 90);
  assert.deepEqual(odd, [{ ptr: 16, bytes: 40 }, { ptr: 4096, bytes: 16 }, { ptr: 8192, bytes: 16 }]);
});

test('planPrefetch: a range that starts off a 16-byte boundary starts at the next one', () => {
  assert.deepEqual(planPrefetch([{ ptr: 4100, bytes: 100 }], 1000), [{ ptr: 4112, bytes: 88 }]);
  assert.deepEqual(planPrefetch([{ ptr: 4100, bytes: 10 }], 1000), []);
});

test('prefetchBudget: off by default, a share of the L2 under TANDEM_L2_PREFETCH=1, TANDEM_L2_PREFETCH_MB overrides, bad values are errors', () => {
  const l2 = 50 * MiB;
  assert.equal(prefetchBudget(l2, {}), 0);
  assert.equal(prefetchBudget(l2, { TANDEM_L2_PREFETCH: '0' }), 0);
  assert.equal(prefetchBudget(l2, { TANDEM_L2_PREFETCH: '1' }), Math.floor(l2 * DEFAULT_L2_SHARE));
  assert.equal(prefetchBudget(l2, { TANDEM_L2_PREFETCH_MB: '24' }), 24 * MiB);
  assert.equal(prefetchBudget(l2, { TANDEM_L2_PREFETCH_MB: '0' }), 0);
  assert.throws(() => prefetchBudget(l2, { TANDEM_L2_PREFETCH_MB: 'lots' }), /TANDEM_L2_PREFETCH_MB/);
  assert.throws(() => prefetchBudget(l2, { TANDEM_L2_PREFETCH_MB: '-1' }), /TANDEM_L2_PREFETCH_MB/);
});
