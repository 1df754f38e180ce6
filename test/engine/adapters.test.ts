// LoRA adapters in the forward and the registry: an adapter's logits equal those of a model whose
// weights are merged on the host (W + scale * B A, float64), rows of one batch take only their
// own adapter, and the registry's versions, pins and frees behave as documented.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Backend, KvCache, Tensor } from '../../src/backend/backend.ts';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { AdapterRegistry } from '../../src/engine/adapters.ts';
import { EngineError } from '../../src/engine/types.ts';
import { parseModelConfig, ropeInvFreq } from '../../src/model/config.ts';
import { loadModel, type LoadedModel } from '../../src/model/load.ts';
import type { LoraAdapter, LoraTarget } from '../../src/model/lora.ts';
import { cloneDeviceLora, downloadLora, freeDeviceLora, uploadLora, type DeviceLora } from '../../src/model/lora-device.ts';
import { savePeftAdapter } from '../../src/model/lora-peft.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { Transformer, packBatch, type SequenceSlice } from '../../src/model/transformer.ts';
import type { LayerWeights, ModelWeights } from '../../src/model/weights.ts';
import { collect, makeEngine, randomPrompt, request, trainedAdapter } from './helpers.ts';

const FIELD: Record<LoraTarget, keyof LayerWeights> = {
  q_proj: 'q',
  k_proj: 'k',
  v_proj: 'v',
  o_proj: 'o',
  gate_proj: 'gate',
  up_proj: 'up',
  down_proj: 'down',
};

/** The model with every adapted projection replaced by W + scale * B A, computed in float64. */
async function mergedModel(be: Backend, m: LoadedModel, adapter: LoraAdapter): Promise<{ model: Transformer; owned: Tensor[] }> {
  const owned: Tensor[] = [];
  const R = adapter.spec.rank;
  const layers = await Promise.all(
    m.model.weights.layers.map(async (L, l) => {
      const merged: LayerWeights = { ...L };
      for (const [target, lw] of adapter.layers[l]) {
        const field = FIELD[target];
        const W = (await be.download(L[field] as Tensor)) as Float32Array;
        const out = new Float32Array(W.length);
        for (let o = 0; o < lw.outFeatures; o++) {
          for (let i = 0; i < lw.inFeatures; i++) {
            let delta = 0;
            for (let r = 0; r < R; r++) delta += lw.b[o * R + r] * lw.a[r * lw.inFeatures + i];
            out[o * lw.inFeatures + i] = W[o * lw.inFeatures + i] + adapter.scale * delta;
          }
        }
        const t = be.upload(out, [lw.outFeatures, lw.inFeatures], 'f32');
        owned.push(t);
        (merged as unknown as Record<string, Tensor>)[field] = t;
      }
      return merged;
    }),
  );
  const weights: ModelWeights = { ...m.model.weights, layers };
  return { model: new Transformer(be, m.config, weights, ropeInvFreq(m.config)), owned };
}

async function logitsOf(model: Transformer, cache: KvCache, seqs: SequenceSlice[], blockSize: number): Promise<Float32Array> {
  const out = (await model.backend.download(model.forward(packBatch(seqs, blockSize), cache))) as Float32Array;
  model.backend.resetScratch();
  return out;
}

/** max |a - b| / max |b|. */
function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  assert.ok(scale > 0.1, 'logits near zero would prove nothing');
  return diff / scale;
}

describe('LoRA adapters: forward and registry', () => {
  let root: string;
  let be: CpuBackend;
  let m: LoadedModel;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'tandem-adapters-'));
    be = new CpuBackend();
    // Untied head and f32 weights: the merged reference differs from the LoRA path only by rounding.
    makeModel({ preset: 'tiny', out: join(root, 'model'), seed: 11, tieWordEmbeddings: false, dtype: 'F32' });
    m = loadModel(join(root, 'model'), be);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('a mixed batch gives base rows the base logits and adapter rows those of W + scale * B A (prefill and decode)', async () => {
    const V = m.config.vocabSize;
    const bs = 4;
    const hostA = trainedAdapter(m.config, 1);
    const hostB = trainedAdapter(m.config, 2, { rank: 2, alpha: 3, targets: ['q_proj', 'v_proj', 'down_proj'], useRslora: true });
    const devA = uploadLora(be, m.config, hostA);
    const devB = uploadLora(be, m.config, hostB);
    const refA = await mergedModel(be, m, hostA);
    const refB = await mergedModel(be, m, hostB);

    const prompts = [randomPrompt(7, 1), randomPrompt(9, 2), randomPrompt(6, 3), randomPrompt(5, 4)];
    const loras: (DeviceLora | null)[] = [null, devA, devA, devB];
    const refs = [m.model, refA.model, refA.model, refB.model];
    const tables = [[0, 1], [2, 3, 4], [5, 6], [7, 8]];
    const cache = be.allocKvCache(m.model.kvCacheSpec(16, bs));
    const packed = await logitsOf(
      m.model,
      cache,
      prompts.map((p, i) => ({ newTokens: p, numCached: 0, blockTable: tables[i], allLogits: true, lora: loras[i] })),
      bs,
    );
    // Decode one more token each, reading the K/V the adapters wrote in the shared cache.
    const next = [17, 33, 65, 129];
    const decoded = await logitsOf(
      m.model,
      cache,
      prompts.map((p, i) => ({ newTokens: [next[i]], numCached: p.length, blockTable: tables[i], lora: loras[i] })),
      bs,
    );
    let row = 0;
    for (let i = 0; i < prompts.length; i++) {
      const alone = be.allocKvCache(m.model.kvCacheSpec(16, bs));
      const want = await logitsOf(refs[i], alone, [{ newTokens: prompts[i], numCached: 0, blockTable: tables[i], allLogits: true }], bs);
      const wantNext = await logitsOf(refs[i], alone, [{ newTokens: [next[i]], numCached: prompts[i].length, blockTable: tables[i] }], bs);
      be.freeKvCache(alone);
      const got = packed.subarray(row * V, (row + prompts[i].length) * V);
      row += prompts[i].length;
      assert.ok(relErr(got, want) < 1e-4, `sequence ${i} prefill: relative error ${relErr(got, want)}`);
      const gotNext = decoded.subarray(i * V, (i + 1) * V);
      assert.ok(relErr(gotNext, wantNext) < 1e-4, `sequence ${i} decode: relative error ${relErr(gotNext, wantNext)}`);
    }
    // The adapters matter: their logits are far from the base model's for the same tokens.
    const base = be.allocKvCache(m.model.kvCacheSpec(16, bs));
    const baseLogits = await logitsOf(m.model, base, [{ newTokens: prompts[1], numCached: 0, blockTable: tables[1], allLogits: true }], bs);
    be.freeKvCache(base);
    const adapted = packed.subarray(prompts[0].length * V, (prompts[0].length + prompts[1].length) * V);
    assert.ok(relErr(adapted, baseLogits) > 0.05, `adapter A barely changes the logits (${relErr(adapted, baseLogits)})`);

    be.freeKvCache(cache);
    for (const t of [...refA.owned, ...refB.owned]) be.free(t);
    be.free(devA.params);
    be.free(devB.params);
  });

  it('packBatch makes one segment per run of equal adapters; forward rejects overlapping segments', () => {
    const devA = uploadLora(be, m.config, trainedAdapter(m.config, 3));
    const devB = uploadLora(be, m.config, trainedAdapter(m.config, 4));
    const slice = (n: number, block: number, lora: DeviceLora | null): SequenceSlice => ({ newTokens: Array(n).fill(1), numCached: 0, blockTable: [block], lora });
    const batch = packBatch([slice(2, 0, null), slice(3, 1, devA), slice(1, 2, devA), slice(2, 3, devB), slice(1, 4, null), slice(2, 5, devA)], 4);
    assert.deepEqual(
      batch.lora?.map((s) => [s.start, s.end, s.lora === devA ? 'A' : 'B']),
      [[2, 6, 'A'], [6, 8, 'B'], [9, 11, 'A']],
    );
    assert.equal(packBatch([slice(2, 0, null)], 4).lora, undefined);
    const cache = be.allocKvCache(m.model.kvCacheSpec(8, 4));
    batch.lora = [{ start: 0, end: 4, lora: devA }, { start: 3, end: 5, lora: devB }];
    assert.throws(() => m.model.forward(batch, cache), /overlap at row 3/);
    batch.lora = [{ start: 0, end: 12, lora: devA }];
    assert.throws(() => m.model.forward(batch, cache), /\[0, 12\) is not a row range of the batch's 11 rows/);
    be.resetScratch();
    be.freeKvCache(cache);
    be.free(devA.params);
    be.free(devB.params);
  });

  it('registry: versions count up per name, a superseded version is freed when its last pin goes', () => {
    const reg = new AdapterRegistry(be, m.config);
    const weightsBefore = be.memoryUsage().weights;
    const v1 = reg.publish('math', uploadLora(be, m.config, trainedAdapter(m.config, 5)));
    assert.equal(v1.id, 'math@v1');
    assert.equal(v1.bytes, v1.lora.layout.size * 4);
    assert.equal(be.memoryUsage().weights - weightsBefore, v1.bytes);
    reg.pin(v1);
    reg.pin(v1);
    const v2 = reg.publish('math', uploadLora(be, m.config, trainedAdapter(m.config, 6)));
    assert.equal(v2.id, 'math@v2');
    assert.equal(reg.get('math'), v2);
    assert.equal(v1.state, 'retired');
    assert.deepEqual(reg.usage(), [{ name: 'math', versions: 2, bytes: v1.bytes + v2.bytes }]);
    assert.throws(() => reg.pin(v1), /math@v1 is retired/);
    reg.unpin(v1);
    assert.equal(v1.state, 'retired', 'still pinned once');
    reg.unpin(v1);
    assert.equal(v1.state, 'freed');
    assert.equal(reg.freedCount, 1);
    assert.equal(be.memoryUsage().weights - weightsBefore, v2.bytes);
    assert.throws(() => reg.unpin(v1), /not resident/);

    // Unload: an unpinned version goes at once; ids are never reused afterwards.
    assert.equal(reg.unload('math'), true);
    assert.equal(reg.unload('math'), false);
    assert.equal(reg.get('math'), undefined);
    assert.equal(v2.state, 'freed');
    assert.equal(be.memoryUsage().weights, weightsBefore);
    const v3 = reg.publish('math', uploadLora(be, m.config, trainedAdapter(m.config, 7)));
    assert.equal(v3.id, 'math@v3');
    reg.pin(v3);
    reg.unloadAll();
    assert.equal(v3.state, 'retired', 'an unloaded version stays while a sequence uses it');
    assert.deepEqual(reg.list(), []);
    reg.unpin(v3);
    assert.equal(v3.state, 'freed');
    assert.equal(be.memoryUsage().weights, weightsBefore);
  });

  it('registry: on a backend computing in bf16 a version gets a compute copy, served with the same tokens and freed with it', async () => {
    // The cpu backend stores every float as f32; claiming bf16 as its compute dtype makes the
    // registry keep the copy it keeps on cuda (values equal here, so the tokens must be too).
    class Bf16CpuBackend extends CpuBackend {
      override readonly preferredDtype = 'bf16' as 'f32';
    }
    const bf = new Bf16CpuBackend();
    const mb = loadModel(join(root, 'model'), bf);
    const reg = new AdapterRegistry(bf, mb.config);
    const before = bf.memoryUsage().weights;
    const lora = uploadLora(bf, mb.config, trainedAdapter(mb.config, 5));
    const v1 = reg.publish('math', lora);
    assert.ok(v1.lora.compute !== undefined, 'a compute copy');
    assert.notEqual(v1.lora.compute.params, v1.lora.params);
    // Every matrix copied, each starting at a 256-byte boundary (128 bf16 elements) of the copy.
    const at = (t: Tensor): number => (t as unknown as { data: Float32Array }).data.byteOffset / 4;
    const copyBase = at(v1.lora.compute.params);
    for (let l = 0; l < mb.config.numLayers; l++) {
      for (const [target, f32] of v1.lora.views[l]) {
        const c: { a: Tensor; b: Tensor } = v1.lora.compute.views[l].get(target)!;
        assert.equal((at(c.a) - copyBase) % 128, 0, `layer ${l} ${target} A at element ${at(c.a) - copyBase}`);
        assert.equal((at(c.b) - copyBase) % 128, 0, `layer ${l} ${target} B at element ${at(c.b) - copyBase}`);
        assert.deepEqual(c.a.shape, f32.a.shape);
        assert.deepEqual(c.b.shape, f32.b.shape);
        assert.deepEqual(await bf.download(c.a), await bf.download(f32.a), `layer ${l} ${target} A`);
        assert.deepEqual(await bf.download(c.b), await bf.download(f32.b), `layer ${l} ${target} B`);
      }
    }
    const copyElems = v1.lora.compute.params.shape[0];
    assert.ok(copyElems >= v1.lora.layout.size, 'room for every matrix');
    assert.equal(v1.bytes, v1.lora.layout.size * 4 + copyElems * 4, 'f32 parameters + their copy (stored as f32 on the cpu)');
    assert.equal(bf.memoryUsage().weights - before, v1.bytes);
    // A clone (a trainer's published snapshot) gets a copy of its own when published.
    const clone = cloneDeviceLora(bf, mb.config, v1.lora);
    assert.equal(clone.compute, undefined);
    freeDeviceLora(bf, clone);
    reg.unloadAll();
    assert.equal(v1.state, 'freed');
    assert.equal(bf.memoryUsage().weights, before, 'the copy went with the version');

    // Served through the copy: the same tokens as on the f32 backend, which has none.
    const plain = makeEngine(m);
    const copied = makeEngine(mb);
    try {
      const vp = plain.adapters.publish('math', uploadLora(be, m.config, trainedAdapter(m.config, 5)));
      assert.equal(vp.lora.compute, undefined, 'no copy where the backend computes in f32');
      assert.equal(vp.bytes, vp.lora.layout.size * 4);
      const vc = copied.adapters.publish('math', uploadLora(bf, mb.config, trainedAdapter(mb.config, 5)));
      assert.ok(vc.lora.compute !== undefined);
      // Poison the f32 matrices the copy was made from: serving must not read them.
      bf.write(vc.lora.params, new Float32Array(vc.lora.layout.size).fill(Number.NaN));
      const prompt = randomPrompt(12, 4);
      const a = await collect(plain.add(request(prompt, { maxTokens: 6, adapter: 'math' })));
      const b = await collect(copied.add(request(prompt, { maxTokens: 6, adapter: 'math' })));
      assert.deepEqual(b.ids, a.ids);
      const base = await collect(plain.add(request(prompt, { maxTokens: 6 })));
      assert.notDeepEqual(a.ids, base.ids, 'the adapter changes the tokens (or this test proves nothing)');
    } finally {
      await plain.close();
      await copied.close();
    }
  });

  it('registry: rejects bad names and adapters that do not fit the base model, taking nothing', () => {
    const reg = new AdapterRegistry(be, m.config);
    const dev = uploadLora(be, m.config, trainedAdapter(m.config, 8));
    for (const bad of ['', 'a@v1', 'a+b', 'has space', '-lead', 'x'.repeat(129)]) {
      assert.throws(() => reg.publish(bad, dev), /adapter name .* is invalid/, bad);
    }
    // An adapter made for another model: the hidden size differs.
    const other = parseModelConfig(
      { architectures: ['Qwen2ForCausalLM'], vocab_size: 512, hidden_size: 32, intermediate_size: 176, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 },
      'other',
    );
    const foreign = uploadLora(be, other, trainedAdapter(other, 9));
    assert.throws(() => reg.publish('foreign', foreign), /adapter 'foreign' does not fit the base model: .*q_proj of layer 0 is \[32, 32\]; the model's q_proj of layer 0 is \[64, 64\]/);
    const oneLayer = parseModelConfig(
      { architectures: ['Qwen2ForCausalLM'], vocab_size: 512, hidden_size: 64, intermediate_size: 176, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2 },
      'short',
    );
    const short = uploadLora(be, oneLayer, trainedAdapter(oneLayer, 9));
    assert.throws(() => reg.publish('short', short), /does not fit the base model: its layout/);
    assert.deepEqual(reg.list(), []);
    // The caller still owns what was refused: freeing works (it was not freed by the registry).
    for (const d of [dev, foreign, short]) be.free(d.params);
  });

  it('registry: loadPeft reads a peft folder, names its source, and explains a mismatch', async () => {
    const reg = new AdapterRegistry(be, m.config);
    const host = trainedAdapter(m.config, 10, { targets: ['q_proj', 'o_proj', 'up_proj'] });
    const dir = join(root, 'peft-ok');
    savePeftAdapter(dir, host, { baseModel: 'tiny' });
    const v = reg.loadPeft('sql', dir);
    assert.equal(v.source, dir);
    assert.equal(v.id, 'sql@v1');
    const back = await downloadLora(be, m.config, v.lora);
    for (let l = 0; l < host.layers.length; l++) {
      for (const [t, w] of host.layers[l]) {
        assert.deepEqual(back.layers[l].get(t)!.a, w.a, `layer ${l} ${t} A`);
        assert.deepEqual(back.layers[l].get(t)!.b, w.b, `layer ${l} ${t} B`);
      }
    }
    const other = parseModelConfig(
      { architectures: ['Qwen2ForCausalLM'], vocab_size: 512, hidden_size: 32, intermediate_size: 176, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 },
      'other',
    );
    const badDir = join(root, 'peft-other');
    savePeftAdapter(badDir, trainedAdapter(other, 11), { baseModel: 'other' });
    const weights = be.memoryUsage().weights;
    assert.throws(() => reg.loadPeft('bad', badDir), /^Error: adapter 'bad': .*shape \[4,32\] does not match \[4,64\]/);
    assert.throws(() => reg.loadPeft('missing', join(root, 'nope')), /adapter 'missing': .*cannot read the adapter config/);
    assert.equal(be.memoryUsage().weights, weights, 'a refused adapter leaves nothing on the backend');
    reg.unloadAll();
  });

  it('engine: an unknown adapter name is EngineError model_not_found naming the model field', async () => {
    const engine = makeEngine(m);
    assert.throws(
      () => engine.add(request([1, 2, 3], { adapter: 'nope' })),
      (e: unknown) => e instanceof EngineError && e.code === 'model_not_found' && e.param === 'model' && /'nope'.*loaded: none/.test(e.message),
    );
    engine.adapters.publish('a', uploadLora(be, m.config, trainedAdapter(m.config, 12)));
    assert.throws(() => engine.add(request([1, 2, 3], { adapter: 'b' })), /loaded: 'a'/);
    // null and absent both mean the base model.
    const [x, y] = await Promise.all([collect(engine.add(request([1, 2, 3], { adapter: null }))), collect(engine.add(request([1, 2, 3])))]);
    assert.deepEqual(x.ids, y.ids);
    await engine.close();
    assert.deepEqual(engine.adapters.list(), [], 'close() unloads the adapters');
  });
});
