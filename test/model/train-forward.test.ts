/**
 * The training forward/backward of the whole model with LoRA, against independent references:
 * - log-probs equal the serving path's logits (paged forward) put through a float64 log-softmax;
 * - LoRA gradients equal central finite differences of a float64 dense forward of the model with
 *   the adapter merged into the weights (W + scale * B A), for every target, on several variants
 *   (GQA tied, Qwen3 with q/k norm, biases), with logit chunks smaller than the batch.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { Checkpoint } from '../../src/model/checkpoint.ts';
import { ropeInvFreq } from '../../src/model/config.ts';
import { loadModel, type LoadedModel } from '../../src/model/load.ts';
import { LORA_TARGETS, initLoraAdapter, type LoraAdapter, type LoraSpec } from '../../src/model/lora.ts';
import { loraViews, packLora, uploadLora } from '../../src/model/lora-device.ts';
import { makeModel, type MakeModelOptions } from '../../src/model/make-model.ts';
import { packTrainBatch, type TrainSequence } from '../../src/model/train-batch.ts';
import { TrainableModel } from '../../src/model/train-forward.ts';
import { packBatch } from '../../src/model/transformer.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { referenceLogits, type WeightMap } from './reference-model.ts';

const VARIANTS: Record<string, Omit<MakeModelOptions, 'out'>> = {
  qwen2_gqa_tied: { preset: 'tiny', seed: 11 },
  qwen3_qk_norm_untied: { preset: 'tiny', seed: 12, architecture: 'qwen3', tieWordEmbeddings: false },
  llama_mqa: { preset: 'tiny', seed: 13, architecture: 'llama', numKvHeads: 1 },
};

function randomIds(n: number, vocab: number, rng: SeededRandom): number[] {
  return Array.from({ length: n }, () => Math.floor(rng.uniform() * vocab));
}

/** A peft-initialised adapter with B made random too, so every gradient is non-zero. */
function randomAdapter(m: LoadedModel, spec: LoraSpec, seed: number): LoraAdapter {
  const adapter = initLoraAdapter(m.config, spec, seed);
  const rng = new SeededRandom(seed + 1);
  for (const layer of adapter.layers) for (const w of layer.values()) for (let i = 0; i < w.b.length; i++) w.b[i] = (rng.uniform() - 0.5) * 0.2;
  return adapter;
}

/** Base weights in float64 with the adapter merged: W + scale * B A. */
function mergedWeights(base: WeightMap, adapter: LoraAdapter): WeightMap {
  const merged: WeightMap = new Map(base);
  const R = adapter.spec.rank;
  adapter.layers.forEach((layer, l) => {
    for (const [target, w] of layer) {
      const mod = ['gate_proj', 'up_proj', 'down_proj'].includes(target) ? 'mlp' : 'self_attn';
      const name = `model.layers.${l}.${mod}.${target}.weight`;
      const W = Float64Array.from(base.get(name)!);
      for (let n = 0; n < w.outFeatures; n++) {
        for (let k = 0; k < w.inFeatures; k++) {
          let s = 0;
          for (let r = 0; r < R; r++) s += w.b[n * R + r] * w.a[r * w.inFeatures + k];
          W[n * w.inFeatures + k] += adapter.scale * s;
        }
      }
      merged.set(name, W);
    }
  });
  return merged;
}

/** sum_r coef[r] * logp_r over every sequence's targets, in float64 from dense reference logits. */
function referenceLoss(m: LoadedModel, w: WeightMap, seqs: TrainSequence[], coef: Float64Array, temperature: number): number {
  const invFreq = ropeInvFreq(m.config);
  let loss = 0;
  let r = 0;
  for (const s of seqs) {
    const logits = referenceLogits(m.config, w, invFreq, s.tokens);
    const V = m.config.vocabSize;
    const start = s.targets as number;
    for (let j = start; j < s.tokens.length; j++, r++) {
      const row = j - 1;
      let max = -Infinity;
      for (let v = 0; v < V; v++) max = Math.max(max, logits[row * V + v] / temperature);
      let z = 0;
      for (let v = 0; v < V; v++) z += Math.exp(logits[row * V + v] / temperature - max);
      loss += coef[r] * (logits[row * V + s.tokens[j]] / temperature - max - Math.log(z));
    }
  }
  return loss;
}

describe('training forward and backward (LoRA)', () => {
  let root: string;
  const backend = new CpuBackend({ threads: 1 });
  const models = new Map<string, LoadedModel>();
  const base = new Map<string, WeightMap>();

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'tandem-train-fwd-'));
    for (const [name, opts] of Object.entries(VARIANTS)) {
      makeModel({ ...opts, out: join(root, name) });
      const m = loadModel(join(root, name), backend);
      models.set(name, m);
      const ckpt = Checkpoint.open(m.dir);
      base.set(name, new Map(ckpt.names().map((n) => [n, Float64Array.from(ckpt.read(n))])));
      ckpt.close();
    }
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('log-probs equal the serving forward (paged) logits, with and without temperature', async () => {
    const m = models.get('qwen2_gqa_tied')!;
    const rng = new SeededRandom(5);
    const seqs: TrainSequence[] = [
      { tokens: randomIds(9, m.config.vocabSize, rng), targets: 4 },
      { tokens: randomIds(2, m.config.vocabSize, rng), targets: 1 },
      { tokens: randomIds(14, m.config.vocabSize, rng), targets: 1 },
    ];
    const batch = packTrainBatch(seqs, m.config.vocabSize);
    const trainable = new TrainableModel(m.model, 3 * m.config.vocabSize); // 3 rows per logit chunk
    for (const temperature of [1, 0.7]) {
      const logp = await trainable.forward(batch, null, { temperature, forBackward: false });
      let r = 0;
      for (const s of seqs) {
        const cache = backend.allocKvCache(m.model.kvCacheSpec(4, 16));
        const logits = (await backend.download(m.model.forward(packBatch([{ newTokens: s.tokens, numCached: 0, blockTable: [0, 1, 2, 3], allLogits: true }], 16), cache))) as Float32Array;
        backend.resetScratch();
        backend.freeKvCache(cache);
        const V = m.config.vocabSize;
        for (let j = s.targets as number; j < s.tokens.length; j++, r++) {
          const row = j - 1;
          let max = -Infinity;
          for (let v = 0; v < V; v++) max = Math.max(max, logits[row * V + v] / temperature);
          let z = 0;
          for (let v = 0; v < V; v++) z += Math.exp(logits[row * V + v] / temperature - max);
          const want = logits[row * V + s.tokens[j]] / temperature - max - Math.log(z);
          assert.ok(Math.abs(logp[r] - want) < 1e-4, `target ${r}: ${logp[r]} vs ${want}`);
        }
      }
      assert.equal(r, logp.length);
    }
    trainable.free();
  });

  for (const name of Object.keys(VARIANTS)) {
    it(`${name}: LoRA gradients equal float64 finite differences of the merged model`, async () => {
      const m = models.get(name)!;
      const spec: LoraSpec = { rank: 3, alpha: 6, targets: [...LORA_TARGETS], useRslora: false };
      const adapter = randomAdapter(m, spec, 21);
      const rng = new SeededRandom(31);
      const seqs: TrainSequence[] = [
        { tokens: randomIds(7, m.config.vocabSize, rng), targets: 3 },
        { tokens: randomIds(5, m.config.vocabSize, rng), targets: 1 },
      ];
      const batch = packTrainBatch(seqs, m.config.vocabSize);
      const R = batch.targets.length;
      const coef = Float64Array.from({ length: R }, () => rng.uniform() - 0.5);
      const temperature = 0.9;

      const dev = uploadLora(backend, m.config, adapter);
      const grads = backend.alloc([dev.layout.size], 'f32', 'persistent');
      const trainable = new TrainableModel(m.model, 2 * m.config.vocabSize);
      const logp = await trainable.forward(batch, dev, { temperature, forBackward: true });
      // Loss = sum coef * logp, so dLoss/dLogp = coef.
      await trainable.backward(Float32Array.from(coef), loraViews(backend, grads, dev.layout, m.config.numLayers));
      const g = (await backend.download(grads)) as Float32Array;

      const w = base.get(name)!;
      const lossAt = (a: LoraAdapter): number => referenceLoss(m, mergedWeights(w, a), seqs, coef, temperature);
      const loss0 = lossAt(adapter);
      let ours = 0;
      for (let r = 0; r < R; r++) ours += coef[r] * logp[r];
      assert.ok(Math.abs(ours - loss0) < 1e-4 * Math.max(1, Math.abs(loss0)), `loss ${ours} vs reference ${loss0}`);

      // Finite differences on a few parameters of A and of B of every target of both layers.
      const flat0 = packLora(adapter, dev.layout);
      const eps = 1e-3;
      let worst = 0;
      let checked = 0;
      for (const e of dev.layout.entries) {
        for (const [offset, size] of [[e.aOffset, spec.rank * e.inFeatures], [e.bOffset, e.outFeatures * spec.rank]]) {
          for (let k = 0; k < 2; k++) {
            const i = offset + Math.floor(rng.uniform() * size);
            const perturbed = (delta: number): number => {
              const flat = flat0.slice();
              flat[i] += delta;
              const a = structuredClone(adapter);
              for (const ee of dev.layout.entries) {
                const lw = a.layers[ee.layer].get(ee.target)!;
                lw.a.set(flat.subarray(ee.aOffset, ee.aOffset + lw.a.length));
                lw.b.set(flat.subarray(ee.bOffset, ee.bOffset + lw.b.length));
              }
              return lossAt(a);
            };
            // Float32 parameters: the step must be exactly representable around the value.
            const fd = (perturbed(eps) - perturbed(-eps)) / (2 * eps);
            const err = Math.abs(g[i] - fd) / Math.max(1e-3, Math.abs(fd));
            worst = Math.max(worst, err);
            checked++;
            assert.ok(err < 1e-3, `${e.target} layer ${e.layer} param ${i - offset}: backward ${g[i]} vs finite difference ${fd}`);
          }
        }
      }
      assert.equal(checked, dev.layout.entries.length * 4);
      console.log(`${name}: worst relative error ${worst.toExponential(2)} over ${checked} parameters`);
      assert.ok(worst < 1e-3);
      trainable.free();
      backend.free(grads);
      backend.free(dev.params);
    });
  }
});
