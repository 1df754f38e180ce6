/**
 * The adapter's optimizer on the backend steps exactly like the host reference (optimizer.ts:
 * torch AdamW with clip_grad_norm_), skips a step whose gradients are not finite without
 * touching weights or moments, and reports non-finite weights (never published).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { parseModelConfig } from '../../src/model/config.ts';
import { LORA_TARGETS, initLoraAdapter } from '../../src/model/lora.ts';
import { packLora } from '../../src/model/lora-device.ts';
import { DeviceOptimizer } from '../../src/train/device-optimizer.ts';
import { adamwStep, clipGradNorm, newAdamWState } from '../../src/train/optimizer.ts';
import { SeededRandom } from '../../src/util/random.ts';

const CFG = parseModelConfig(
  { architectures: ['Qwen2ForCausalLM'], vocab_size: 64, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 },
  'tiny',
);
const ADAMW = { lr: 1e-2, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 };

describe('DeviceOptimizer', () => {
  it('matches host AdamW + gradient clipping over several steps', async () => {
    const be = new CpuBackend({ threads: 1 });
    const adapter = initLoraAdapter(CFG, { rank: 4, alpha: 8, targets: [...LORA_TARGETS], useRslora: false }, 1);
    const opt = new DeviceOptimizer(be, CFG, adapter, ADAMW);
    const host = packLora(adapter, opt.lora.layout);
    const state = newAdamWState(host.length);
    const rng = new SeededRandom(2);
    for (let step = 1; step <= 4; step++) {
      const g = Float32Array.from({ length: host.length }, () => (rng.uniform() - 0.5) * (step === 2 ? 50 : 0.5));
      be.copy(opt.grads, be.upload(g, [g.length], 'f32', 'scratch'));
      const lr = ADAMW.lr / step;
      const out = await opt.apply(lr, 1);
      be.resetScratch();
      const norm = clipGradNorm([g], 1);
      adamwStep(host, g, state, ADAMW, lr, step);
      assert.ok(out.applied);
      assert.ok(Math.abs(out.gradNorm - norm) <= 1e-6 * norm, `step ${step}: norm ${out.gradNorm} vs ${norm}`);
      const got = (await be.download(opt.lora.params)) as Float32Array;
      let worst = 0;
      for (let i = 0; i < host.length; i++) worst = Math.max(worst, Math.abs(got[i] - host[i]));
      assert.ok(worst <= 1e-6, `step ${step}: weights differ from the host reference by ${worst}`);
      const grads = (await be.download(opt.grads)) as Float32Array;
      assert.ok(grads.every((x) => x === 0), 'gradients are zeroed after a step');
    }
    assert.equal(opt.step, 4);
    opt.free();
  });

  it('skips a step with non-finite gradients and leaves weights and moments alone', async () => {
    const be = new CpuBackend({ threads: 1 });
    const adapter = initLoraAdapter(CFG, { rank: 2, alpha: 2, targets: ['q_proj', 'v_proj'], useRslora: false }, 3);
    const opt = new DeviceOptimizer(be, CFG, adapter, ADAMW);
    const before = (await be.download(opt.lora.params)) as Float32Array;
    const g = new Float32Array(opt.parameterCount).fill(0.1);
    g[5] = NaN;
    be.copy(opt.grads, be.upload(g, [g.length], 'f32', 'scratch'));
    const out = await opt.apply(1e-2, 1);
    assert.equal(out.applied, false);
    assert.ok(Number.isNaN(out.gradNorm));
    assert.equal(opt.step, 0);
    assert.deepEqual(await be.download(opt.lora.params), before);
    const st = await opt.state();
    assert.ok(st.m.every((x) => x === 0) && st.v.every((x) => x === 0));
    assert.ok((await be.download(opt.grads)).every((x) => x === 0));
    assert.equal(await opt.weightsFinite(), true);
    // Poisoned weights are reported, so the trainer refuses to publish them.
    const w = (await be.download(opt.lora.params)) as Float32Array;
    w[0] = Infinity;
    be.copy(opt.lora.params, be.upload(w, [w.length], 'f32', 'scratch'));
    assert.equal(await opt.weightsFinite(), false);
    opt.free();
  });
});
