/**
 * The Tandem side of the peft comparison (bench/peer/lora-grads.ts) on the CPU, against a float64
 * dense reference of the model with the adapter merged (W + s * B A), so that what the GPU machine
 * compares with peft is checked here too, and the script keeps working as src/ changes:
 * - its batch has 3 sequences, one coefficient per target, tokens inside the vocabulary;
 * - its gradient tensors carry peft's names and shapes, and their directional derivatives along
 *   B and along A (scaling B or A by 1 + e scales the update s B A alike, so both equal
 *   d loss / d e) equal a float64 central difference of the merged model's loss;
 * - its serving logits equal the merged model's logits.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peerBatch, randomAdapter, servingLogits, tandemGradients, type PeerBatch } from '../../bench/peer/lora-grads.ts';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { Checkpoint } from '../../src/model/checkpoint.ts';
import { ropeInvFreq } from '../../src/model/config.ts';
import { loadModel, type LoadedModel } from '../../src/model/load.ts';
import type { LoraAdapter, LoraSpec } from '../../src/model/lora.ts';
import { peftModuleName, peftTensorNames } from '../../src/model/lora-peft.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { referenceLogits, type WeightMap } from './reference-model.ts';

/** Base weights in float64 with factor * scale * B A added to every adapted projection. */
function merged(base: WeightMap, adapter: LoraAdapter, factor: number): WeightMap {
  const out: WeightMap = new Map(base);
  const R = adapter.spec.rank;
  adapter.layers.forEach((layer, l) => {
    for (const [target, w] of layer) {
      const name = `${peftModuleName(l, target)}.weight`;
      const W = Float64Array.from(base.get(name)!);
      for (let n = 0; n < w.outFeatures; n++) {
        for (let k = 0; k < w.inFeatures; k++) {
          let s = 0;
          for (let r = 0; r < R; r++) s += w.b[n * R + r] * w.a[r * w.inFeatures + k];
          W[n * w.inFeatures + k] += factor * adapter.scale * s;
        }
      }
      out.set(name, W);
    }
  });
  return out;
}

/** sum_r c_r * log_softmax(logits / T)[target] in float64. */
function referenceLoss(m: LoadedModel, w: WeightMap, batch: PeerBatch): number {
  const V = m.config.vocabSize;
  const invFreq = ropeInvFreq(m.config);
  let loss = 0;
  let r = 0;
  for (const s of batch.sequences) {
    const logits = referenceLogits(m.config, w, invFreq, s.tokens);
    for (let j = s.targetStart; j < s.tokens.length; j++, r++) {
      const row = logits.subarray((j - 1) * V, j * V).map((x) => x / batch.temperature);
      const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
      const z = row.reduce((a, b) => a + Math.exp(b - max), 0);
      loss += batch.coefficients[r] * (row[s.tokens[j]] - max - Math.log(z));
    }
  }
  return loss;
}

describe('bench/peer/lora-grads.ts (Tandem side of the peft comparison)', () => {
  let root: string;
  const be = new CpuBackend({ threads: 1 });
  let m: LoadedModel;
  let base: WeightMap;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'tandem-lora-peer-'));
    makeModel({ preset: 'tiny', seed: 5, out: join(root, 'model') });
    m = loadModel(join(root, 'model'), be);
    const ckpt = Checkpoint.open(m.dir);
    base = new Map(ckpt.names().map((n) => [n, Float64Array.from(ckpt.read(n))]));
    ckpt.close();
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const spec: LoraSpec = { rank: 2, alpha: 3, targets: ['q_proj', 'v_proj', 'down_proj'], useRslora: true };

  it('builds a batch of 3 sequences with one coefficient per target', () => {
    const batch = peerBatch(m.config.vocabSize, 8);
    assert.equal(batch.sequences.length, 3);
    const targets = batch.sequences.reduce((n, s) => n + s.tokens.length - s.targetStart, 0);
    assert.equal(batch.coefficients.length, targets);
    for (const s of batch.sequences) {
      assert.ok(s.targetStart >= 1 && s.targetStart < s.tokens.length);
      for (const t of s.tokens) assert.ok(Number.isInteger(t) && t >= 0 && t < m.config.vocabSize);
    }
    assert.ok(batch.sequences.some((s) => s.tokens.length > 16), 'a sequence should cross a 16-token KV block');
    assert.deepEqual(peerBatch(m.config.vocabSize, 8), batch, 'the seed alone fixes the batch');
  });

  it('gradients: peft names and shapes; directional derivatives equal float64 central differences', async () => {
    const adapter = randomAdapter(m, spec, 3);
    const batch = peerBatch(m.config.vocabSize, 9);
    const { logp, loss, grads } = await tandemGradients(m, adapter, batch);
    assert.equal(logp.length, batch.coefficients.length);
    assert.deepEqual(grads.map((g) => g.name), peftTensorNames(m.config.numLayers, spec.targets));

    const loss0 = referenceLoss(m, merged(base, adapter, 1), batch);
    assert.ok(Math.abs(loss - loss0) < 1e-4 * Math.max(1, Math.abs(loss0)), `loss ${loss} vs float64 ${loss0}`);

    const eps = 1e-4;
    const fd = (referenceLoss(m, merged(base, adapter, 1 + eps), batch) - referenceLoss(m, merged(base, adapter, 1 - eps), batch)) / (2 * eps);
    let alongA = 0;
    let alongB = 0;
    let i = 0;
    adapter.layers.forEach((layer) => {
      for (const w of layer.values()) {
        const [gA, gB] = [grads[i++], grads[i++]];
        assert.deepEqual(gA.shape, [spec.rank, w.inFeatures]);
        assert.deepEqual(gB.shape, [w.outFeatures, spec.rank]);
        w.a.forEach((v, k) => (alongA += v * gA.data[k]));
        w.b.forEach((v, k) => (alongB += v * gB.data[k]));
      }
    });
    assert.ok(Math.abs(fd) > 1e-2, `the adapter barely matters to the loss (d loss / d e = ${fd})`);
    assert.ok(Math.abs(alongA - fd) < 1e-4 * Math.abs(fd), `<grad A, A> ${alongA} vs central difference ${fd}`);
    assert.ok(Math.abs(alongB - fd) < 1e-4 * Math.abs(fd), `<grad B, B> ${alongB} vs central difference ${fd}`);
  });

  it('serving logits with the adapter equal the merged float64 model', async () => {
    const adapter = randomAdapter(m, spec, 4);
    const batch = peerBatch(m.config.vocabSize, 10);
    const logits = await servingLogits(m, adapter, batch);
    const w = merged(base, adapter, 1);
    const invFreq = ropeInvFreq(m.config);
    batch.sequences.forEach((s, i) => {
      const want = referenceLogits(m.config, w, invFreq, s.tokens);
      assert.equal(logits[i].length, want.length);
      let diff = 0;
      let scale = 0;
      want.forEach((v, k) => {
        diff = Math.max(diff, Math.abs(logits[i][k] - v));
        scale = Math.max(scale, Math.abs(v));
      });
      assert.ok(diff / scale < 1e-4, `sequence ${i}: max|diff| / max|logit| = ${diff / scale}`);
    });
  });
});
