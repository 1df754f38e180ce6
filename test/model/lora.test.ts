import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseModelConfig } from '../../src/model/config.ts';
import { bf16ToF32, f32ToBf16 } from '../../src/model/dtype.ts';
import {
  LORA_TARGETS,
  adapterIsFinite,
  initLoraAdapter,
  loraParameterCount,
  loraScale,
  loraShapes,
  validateLoraSpec,
  type LoraAdapter,
  type LoraSpec,
} from '../../src/model/lora.ts';
import {
  PEFT_CONFIG_FILE,
  PEFT_WEIGHTS_FILE,
  loadPeftAdapter,
  peftTensorNames,
  savePeftAdapter,
} from '../../src/model/lora-peft.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/model/safetensors.ts';
import { SeededRandom } from '../../src/util/random.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-lora-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
const freshPath = (): string => path.join(tmp, `adapter-${counter++}`);

// Qwen/Qwen2.5-3B's shapes (config.json of the release).
const QWEN25_3B = parseModelConfig(
  {
    architectures: ['Qwen2ForCausalLM'],
    vocab_size: 151936,
    hidden_size: 2048,
    intermediate_size: 11008,
    num_hidden_layers: 36,
    num_attention_heads: 16,
    num_key_value_heads: 2,
    tie_word_embeddings: true,
  },
  'qwen2.5-3b',
);
// Tiny: C=16, H=4, Hkv=2, D=4, F=24, 2 layers (q out 16, k/v out 8).
const TINY = parseModelConfig(
  {
    architectures: ['Qwen2ForCausalLM'],
    vocab_size: 64,
    hidden_size: 16,
    intermediate_size: 24,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
  },
  'tiny',
);
const ALL = [...LORA_TARGETS];

function assertThrowsWith(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: Error) => {
    for (const p of parts) assert.ok(e.message.includes(p), `message should contain ${JSON.stringify(p)}: ${e.message}`);
    return true;
  });
}

/** An adapter with B != 0 too (a trained one), so round trips test every value. */
function trainedAdapter(spec: LoraSpec, seed = 1): LoraAdapter {
  const adapter = initLoraAdapter(TINY, spec, seed);
  const rng = new SeededRandom(seed + 1000);
  for (const layer of adapter.layers) for (const w of layer.values()) w.b.set(rng.normals(w.b.length, 0.1));
  return adapter;
}

function savedAdapter(spec: LoraSpec = { rank: 4, alpha: 8, targets: ['q_proj', 'v_proj'], useRslora: false }): { dir: string; adapter: LoraAdapter } {
  const dir = freshPath();
  const adapter = trainedAdapter(spec);
  savePeftAdapter(dir, adapter, { baseModel: 'tiny-base' });
  return { dir, adapter };
}

function editConfig(dir: string, edit: (json: Record<string, unknown>) => void): void {
  const file = path.join(dir, PEFT_CONFIG_FILE);
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(json);
  fs.writeFileSync(file, JSON.stringify(json));
}

/** Rewrites adapter_model.safetensors through `edit` on its (name, shape, data) list. */
function editWeights(dir: string, edit: (tensors: TensorToWrite[]) => TensorToWrite[]): void {
  const file = path.join(dir, PEFT_WEIGHTS_FILE);
  const st = SafetensorsFile.open(file);
  const tensors: TensorToWrite[] = st.tensors().map((t) => ({ name: t.name, shape: t.shape, data: st.readF32(t.name), dtype: 'F32' }));
  st.close();
  writeSafetensors(file, edit(tensors), { format: 'pt' });
}

function assertSameWeights(got: LoraAdapter, want: LoraAdapter): void {
  assert.equal(got.layers.length, want.layers.length);
  for (let l = 0; l < want.layers.length; l++) {
    assert.deepEqual([...got.layers[l].keys()].sort(), [...want.layers[l].keys()].sort());
    for (const [t, w] of want.layers[l]) {
      const g = got.layers[l].get(t)!;
      assert.equal(g.inFeatures, w.inFeatures);
      assert.equal(g.outFeatures, w.outFeatures);
      assert.deepEqual(new Uint32Array(g.a.buffer), new Uint32Array(w.a.buffer), `layer ${l} ${t} A`);
      assert.deepEqual(new Uint32Array(g.b.buffer), new Uint32Array(w.b.buffer), `layer ${l} ${t} B`);
    }
  }
}

describe('LoRA shapes, counts, scale', () => {
  it('gives in/out features of each projection', () => {
    assert.deepEqual(loraShapes(QWEN25_3B, 'q_proj'), { inFeatures: 2048, outFeatures: 2048 });
    assert.deepEqual(loraShapes(QWEN25_3B, 'k_proj'), { inFeatures: 2048, outFeatures: 256 });
    assert.deepEqual(loraShapes(QWEN25_3B, 'v_proj'), { inFeatures: 2048, outFeatures: 256 });
    assert.deepEqual(loraShapes(QWEN25_3B, 'o_proj'), { inFeatures: 2048, outFeatures: 2048 });
    assert.deepEqual(loraShapes(QWEN25_3B, 'gate_proj'), { inFeatures: 2048, outFeatures: 11008 });
    assert.deepEqual(loraShapes(QWEN25_3B, 'up_proj'), { inFeatures: 2048, outFeatures: 11008 });
    assert.deepEqual(loraShapes(QWEN25_3B, 'down_proj'), { inFeatures: 11008, outFeatures: 2048 });
  });

  it('counts 59,867,136 trainable parameters for Qwen2.5-3B at r=32 on all seven (DESIGN.md: 59.9 M)', () => {
    assert.equal(loraParameterCount(QWEN25_3B, { rank: 32, alpha: 64, targets: ALL, useRslora: false }), 59_867_136);
  });

  it('scales by alpha / r, or alpha / sqrt(r) with rsLoRA', () => {
    assert.equal(loraScale({ rank: 8, alpha: 16, useRslora: false }), 2);
    assert.equal(loraScale({ rank: 8, alpha: 16, useRslora: true }), 16 / Math.sqrt(8));
    const rs = initLoraAdapter(TINY, { rank: 4, alpha: 8, targets: ['q_proj'], useRslora: true }, 1);
    assert.equal(rs.scale, 4);
  });

  it('rejects bad specs, naming the field', () => {
    const ok: LoraSpec = { rank: 4, alpha: 8, targets: ['q_proj', 'k_proj'], useRslora: false };
    validateLoraSpec(ok, TINY);
    assertThrowsWith(() => validateLoraSpec({ ...ok, rank: 0 }, TINY), 'rank');
    assertThrowsWith(() => validateLoraSpec({ ...ok, rank: 2.5 }, TINY), 'rank');
    assertThrowsWith(() => validateLoraSpec({ ...ok, rank: 9 }, TINY), 'rank 9 exceeds min(in, out) = 8 of k_proj');
    assertThrowsWith(() => validateLoraSpec({ ...ok, targets: [] }, TINY), 'targets is empty');
    assertThrowsWith(() => validateLoraSpec({ ...ok, targets: ['q_proj', 'q_proj'] }, TINY), 'q_proj', 'twice');
    assertThrowsWith(() => validateLoraSpec({ ...ok, targets: ['lm_head' as never] }, TINY), 'lm_head', 'unknown');
    assertThrowsWith(() => validateLoraSpec({ ...ok, alpha: 0 }, TINY), 'alpha');
    assertThrowsWith(() => validateLoraSpec({ ...ok, alpha: Number.NaN }, TINY), 'alpha');
    assertThrowsWith(() => validateLoraSpec({ ...ok, dropout: 1 }, TINY), 'dropout');
  });
});

describe('initLoraAdapter (peft default init)', () => {
  const cfg = parseModelConfig(
    { architectures: ['Qwen2ForCausalLM'], vocab_size: 8, hidden_size: 256, intermediate_size: 512, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 },
    'init',
  );
  const spec: LoraSpec = { rank: 16, alpha: 32, targets: ['down_proj', 'q_proj'], useRslora: false };
  const adapter = initLoraAdapter(cfg, spec, 42);

  it('has A [r, in] and B [out, r] for every layer and target, in module order', () => {
    assert.equal(adapter.layers.length, 2);
    assert.equal(adapter.scale, 2);
    for (const layer of adapter.layers) {
      assert.deepEqual([...layer.keys()], ['q_proj', 'down_proj']);
      for (const [t, w] of layer) {
        const { inFeatures, outFeatures } = loraShapes(cfg, t);
        assert.equal(w.a.length, 16 * inFeatures);
        assert.equal(w.b.length, outFeatures * 16);
      }
    }
  });

  it('draws A from U(-1/sqrt(in), 1/sqrt(in)) and sets B to zero', () => {
    for (const layer of adapter.layers) {
      for (const [t, w] of layer) {
        const bound = 1 / Math.sqrt(w.inFeatures);
        let max = 0;
        let sum = 0;
        let sumSq = 0;
        for (const x of w.a) {
          max = Math.max(max, Math.abs(x));
          sum += x;
          sumSq += x * x;
        }
        const n = w.a.length;
        assert.ok(max <= Math.fround(bound), `${t}: max |A| ${max} > bound ${bound}`);
        assert.ok(max > 0.99 * bound, `${t}: max |A| ${max} should approach the bound ${bound}`);
        // U(-b, b): mean 0, variance b^2 / 3; n >= 4096 draws, so 5 standard errors is loose but meaningful.
        const variance = sumSq / n - (sum / n) ** 2;
        assert.ok(Math.abs(sum / n) < 5 * bound / Math.sqrt(3 * n), `${t}: mean ${sum / n}`);
        assert.ok(Math.abs(variance / (bound * bound / 3) - 1) < 0.1, `${t}: variance ${variance} vs ${bound * bound / 3}`);
        assert.ok(w.b.every((x) => x === 0), `${t}: B must be zero`);
      }
    }
  });

  it('is reproducible from the seed and differs across seeds and layers', () => {
    const again = initLoraAdapter(cfg, spec, 42);
    assert.deepEqual(again.layers[1].get('q_proj')!.a, adapter.layers[1].get('q_proj')!.a);
    const other = initLoraAdapter(cfg, spec, 43);
    assert.notDeepEqual(other.layers[0].get('q_proj')!.a, adapter.layers[0].get('q_proj')!.a);
    assert.notDeepEqual(adapter.layers[0].get('q_proj')!.a, adapter.layers[1].get('q_proj')!.a);
  });

  it('adapterIsFinite catches NaN and infinity', () => {
    const a = initLoraAdapter(TINY, { rank: 2, alpha: 4, targets: ['v_proj'], useRslora: false }, 3);
    assert.equal(adapterIsFinite(a), true);
    a.layers[1].get('v_proj')!.b[5] = Number.NaN;
    assert.equal(adapterIsFinite(a), false);
    a.layers[1].get('v_proj')!.b[5] = 0;
    a.layers[0].get('v_proj')!.a[0] = -Infinity;
    assert.equal(adapterIsFinite(a), false);
  });
});

describe('PEFT format: save', () => {
  it('writes exactly peft tensor names, shapes and F32 for a 2-layer model with targets q, v', () => {
    const { dir } = savedAdapter();
    const st = SafetensorsFile.open(path.join(dir, PEFT_WEIGHTS_FILE));
    const names = st.tensors().map((t) => t.name);
    const want = [
      'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
      'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
      'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight',
      'base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight',
      'base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight',
      'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight',
      'base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight',
      'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight',
    ];
    assert.deepEqual(names, want);
    assert.deepEqual(peftTensorNames(2, ['v_proj', 'q_proj']), want);
    assert.deepEqual(st.get(want[0])!.shape, [4, 16]);
    assert.deepEqual(st.get(want[1])!.shape, [16, 4]);
    assert.deepEqual(st.get(want[2])!.shape, [4, 16]);
    assert.deepEqual(st.get(want[3])!.shape, [8, 4]);
    assert.ok(st.tensors().every((t) => t.dtype === 'F32'));
    assert.deepEqual(st.metadata, { format: 'pt' });
    st.close();
  });

  it('names MLP targets under mlp.*', () => {
    assert.deepEqual(peftTensorNames(1, ['down_proj', 'gate_proj']), [
      'base_model.model.model.layers.0.mlp.gate_proj.lora_A.weight',
      'base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight',
      'base_model.model.model.layers.0.mlp.down_proj.lora_A.weight',
      'base_model.model.model.layers.0.mlp.down_proj.lora_B.weight',
    ]);
  });

  it('writes adapter_config.json with the keys peft writes for a causal-LM LoRA', () => {
    const { dir } = savedAdapter({ rank: 4, alpha: 8, targets: ['v_proj', 'q_proj'], useRslora: true, dropout: 0.05 });
    const json = JSON.parse(fs.readFileSync(path.join(dir, PEFT_CONFIG_FILE), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(Object.keys(json).sort(), [
      'alora_invocation_tokens', 'alpha_pattern', 'arrow_config', 'auto_mapping', 'base_model_name_or_path', 'bias',
      'corda_config', 'ensure_weight_tying', 'eva_config', 'exclude_modules', 'fan_in_fan_out', 'inference_mode',
      'init_lora_weights', 'kasa_config', 'layer_replication', 'layers_pattern', 'layers_to_transform', 'loftq_config',
      'lora_alpha', 'lora_bias', 'lora_dropout', 'lora_ga_config', 'megatron_config', 'megatron_core', 'modules_to_save',
      'monteclora_config', 'peft_type', 'qalora_group_size', 'r', 'rank_pattern', 'revision', 'target_modules',
      'target_parameters', 'task_type', 'trainable_token_indices', 'use_bdlora', 'use_dora', 'use_qalora', 'use_rslora',
      'velora_config',
    ]);
    assert.equal(json.peft_type, 'LORA');
    assert.equal(json.task_type, 'CAUSAL_LM');
    assert.equal(json.r, 4);
    assert.equal(json.lora_alpha, 8);
    assert.equal(json.lora_dropout, 0.05);
    assert.deepEqual(json.target_modules, ['q_proj', 'v_proj']);
    assert.equal(json.bias, 'none');
    assert.equal(json.use_rslora, true);
    assert.equal(json.use_dora, false);
    assert.equal(json.base_model_name_or_path, 'tiny-base');
    assert.equal(json.fan_in_fan_out, false);
    assert.equal(json.init_lora_weights, true);
    assert.equal(json.inference_mode, true);
    assert.equal(json.modules_to_save, null);
    assert.equal(json.layers_to_transform, null);
    assert.equal(json.revision, null);
    assert.deepEqual(json.rank_pattern, {});
  });

  it('is atomic: a new directory appears whole, leaving no temp directory behind', () => {
    const parent = path.join(tmp, `atomic-${counter++}`);
    fs.mkdirSync(parent);
    const dir = path.join(parent, 'v1');
    savePeftAdapter(dir, trainedAdapter({ rank: 2, alpha: 2, targets: ['o_proj'], useRslora: false }), { baseModel: 'b' });
    assert.deepEqual(fs.readdirSync(parent), ['v1']);
    assert.deepEqual(fs.readdirSync(dir).sort(), [PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE]);
    // Over an existing adapter: replaced in place, still no leftovers.
    const second = trainedAdapter({ rank: 2, alpha: 2, targets: ['o_proj'], useRslora: false }, 7);
    savePeftAdapter(dir, second, { baseModel: 'b' });
    assert.deepEqual(fs.readdirSync(dir).sort(), [PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE]);
    assertSameWeights(loadPeftAdapter(dir, TINY), second);
  });

  it('refuses an adapter whose layers do not match its spec', () => {
    const adapter = trainedAdapter({ rank: 2, alpha: 2, targets: ['o_proj'], useRslora: false });
    adapter.layers[1].delete('o_proj');
    assertThrowsWith(() => savePeftAdapter(freshPath(), adapter, { baseModel: 'b' }), 'layer 1', 'o_proj');
  });
});

describe('PEFT format: load', () => {
  it('round-trips bitwise through F32', () => {
    const spec: LoraSpec = { rank: 4, alpha: 16, targets: ALL, useRslora: true, dropout: 0.1 };
    const dir = freshPath();
    const adapter = trainedAdapter(spec);
    savePeftAdapter(dir, adapter, { baseModel: 'tiny-base' });
    const loaded = loadPeftAdapter(dir, TINY);
    assert.deepEqual(loaded.spec, spec);
    assert.equal(loaded.scale, adapter.scale);
    assertSameWeights(loaded, adapter);
  });

  it('round-trips through BF16 to the bf16-rounded weights', () => {
    const dir = freshPath();
    const adapter = trainedAdapter({ rank: 2, alpha: 4, targets: ['up_proj', 'k_proj'], useRslora: false });
    savePeftAdapter(dir, adapter, { baseModel: 'b', dtype: 'BF16' });
    const st = SafetensorsFile.open(path.join(dir, PEFT_WEIGHTS_FILE));
    assert.ok(st.tensors().every((t) => t.dtype === 'BF16'));
    st.close();
    const loaded = loadPeftAdapter(dir, TINY);
    for (let l = 0; l < 2; l++) {
      for (const [t, w] of adapter.layers[l]) {
        assert.deepEqual(loaded.layers[l].get(t)!.b, bf16ToF32(f32ToBf16(w.b)), `layer ${l} ${t}`);
      }
    }
  });

  it('accepts tensor names with the adapter-name infix (lora_A.default.weight)', () => {
    const { dir, adapter } = savedAdapter();
    editWeights(dir, (ts) => ts.map((t) => ({ ...t, name: t.name.replace(/lora_([AB])\.weight$/, 'lora_$1.default.weight') })));
    assertSameWeights(loadPeftAdapter(dir, TINY), adapter);
  });

  it('resolves target_modules given as a regex, as "all-linear", and with exclude_modules', () => {
    const { dir, adapter } = savedAdapter();
    editConfig(dir, (j) => { j.target_modules = 'model\\.layers\\.\\d+\\.self_attn\\.(q|v)_proj'; });
    assert.deepEqual(loadPeftAdapter(dir, TINY).spec.targets, ['q_proj', 'v_proj']);
    editConfig(dir, (j) => { j.target_modules = '.*_proj'; j.exclude_modules = ['k_proj', 'o_proj', 'mlp.gate_proj', 'up_proj', 'down_proj']; });
    assertSameWeights(loadPeftAdapter(dir, TINY), adapter);

    const all = savedAdapter({ rank: 2, alpha: 2, targets: ALL, useRslora: false });
    editConfig(all.dir, (j) => { j.target_modules = 'all-linear'; });
    assert.deepEqual(loadPeftAdapter(all.dir, TINY).spec.targets, ALL);
  });

  it('accepts layers_to_transform covering every layer', () => {
    const { dir, adapter } = savedAdapter();
    editConfig(dir, (j) => { j.layers_to_transform = [0, 1]; j.layers_pattern = 'layers'; });
    assertSameWeights(loadPeftAdapter(dir, TINY), adapter);
  });

  describe('errors name the file and the key or tensor', () => {
    const configCase = (what: string, edit: (j: Record<string, unknown>) => void, ...parts: string[]): void => {
      it(what, () => {
        const { dir } = savedAdapter();
        editConfig(dir, edit);
        assertThrowsWith(() => loadPeftAdapter(dir, TINY), path.join(dir, PEFT_CONFIG_FILE), ...parts);
      });
    };
    const weightsCase = (what: string, edit: (ts: TensorToWrite[]) => TensorToWrite[], ...parts: string[]): void => {
      it(what, () => {
        const { dir } = savedAdapter();
        editWeights(dir, edit);
        assertThrowsWith(() => loadPeftAdapter(dir, TINY), path.join(dir, PEFT_WEIGHTS_FILE), ...parts);
      });
    };
    const A0 = 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight';
    const B1 = 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight';

    it('missing adapter_config.json', () => {
      const { dir } = savedAdapter();
      fs.rmSync(path.join(dir, PEFT_CONFIG_FILE));
      assertThrowsWith(() => loadPeftAdapter(dir, TINY), path.join(dir, PEFT_CONFIG_FILE), 'cannot read', 'ENOENT');
    });
    it('missing adapter_model.safetensors', () => {
      const { dir } = savedAdapter();
      fs.rmSync(path.join(dir, PEFT_WEIGHTS_FILE));
      assertThrowsWith(() => loadPeftAdapter(dir, TINY), path.join(dir, PEFT_WEIGHTS_FILE), 'missing');
    });
    it('config that is not JSON', () => {
      const { dir } = savedAdapter();
      fs.writeFileSync(path.join(dir, PEFT_CONFIG_FILE), '{"r": 4,');
      assertThrowsWith(() => loadPeftAdapter(dir, TINY), path.join(dir, PEFT_CONFIG_FILE), 'not valid JSON');
    });
    configCase('peft_type other than LORA', (j) => { j.peft_type = 'IA3'; }, 'peft_type "IA3"');
    configCase('use_dora', (j) => { j.use_dora = true; }, 'use_dora');
    configCase('bias other than none', (j) => { j.bias = 'lora_only'; }, 'bias "lora_only"');
    configCase('modules_to_save', (j) => { j.modules_to_save = ['lm_head']; }, 'modules_to_save');
    configCase('layers_to_transform leaving out a layer', (j) => { j.layers_to_transform = [1]; }, 'layers_to_transform', 'leaves out layers 0');
    configCase('rank_pattern', (j) => { j.rank_pattern = { q_proj: 8 }; }, 'rank_pattern');
    configCase('alpha_pattern', (j) => { j.alpha_pattern = { q_proj: 8 }; }, 'alpha_pattern');
    configCase('a non-integer r', (j) => { j.r = 4.5; }, 'r:');
    configCase('PiSSA init', (j) => { j.init_lora_weights = 'pissa'; }, 'init_lora_weights "pissa"');
    configCase('regex selecting some layers only', (j) => { j.target_modules = 'model\\.layers\\.0\\.self_attn\\.(q|v)_proj'; }, 'q_proj in layers 0 only');
    configCase('LoRA on the LM head', (j) => { j.target_modules = ['q_proj', 'v_proj', 'lm_head']; }, 'lm_head');
    configCase('target_modules matching nothing', (j) => { j.target_modules = ['c_attn']; }, 'selects none');
    configCase('rank above min(in, out)', (j) => { j.r = 9; }, 'rank 9 exceeds');

    weightsCase('a missing tensor', (ts) => ts.filter((t) => t.name !== B1), `missing tensor "${B1}"`);
    weightsCase('a wrong shape', (ts) => ts.map((t) => (t.name === A0 ? { ...t, shape: [2, 32] } : t)), `tensor "${A0}"`, 'shape [2,32]', '[4,16]');
    weightsCase(
      'a non-finite value',
      (ts) => ts.map((t) => (t.name === B1 ? { ...t, data: Float32Array.from(t.data, (x, i) => (i === 3 ? Number.NaN : x)) } : t)),
      `tensor "${B1}"`, 'element 3 is NaN',
    );
    weightsCase(
      'an extra embedding LoRA tensor',
      (ts) => [...ts, { name: 'base_model.model.model.embed_tokens.lora_embedding_A', shape: [4, 64], data: new Float32Array(256), dtype: 'F32' }],
      'lora_embedding_A', 'embeddings',
    );
    weightsCase(
      'a tensor for a target not in target_modules',
      (ts) => [...ts, { name: 'base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight', shape: [4, 16], data: new Float32Array(64), dtype: 'F32' }],
      'k_proj is not in target_modules',
    );
    weightsCase(
      'a layer beyond the model',
      (ts) => [...ts, { name: 'base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight', shape: [4, 16], data: new Float32Array(64), dtype: 'F32' }],
      'layers.2', 'unexpected tensor',
    );
    weightsCase(
      'the same weight twice under two adapter names',
      (ts) => [...ts, { ...ts[0], name: ts[0].name.replace('lora_A.weight', 'lora_A.other.weight') }],
      'lora_A.other.weight', 'the same weight',
    );
  });
});
