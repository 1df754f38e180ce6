import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  loadGenerationDefaults,
  loadModelConfig,
  modelConfigToHfJson,
  parseModelConfig,
  ropeInvFreq,
  type ModelConfig,
} from '../../src/model/config.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-config-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
function modelDir(files: Record<string, unknown>): string {
  const dir = path.join(tmp, `model-${counter++}`);
  fs.mkdirSync(dir);
  for (const [name, content] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, name), typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  }
  return dir;
}

// config.json of Qwen/Qwen2.5-3B-Instruct.
const QWEN25_3B = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 32768,
  max_window_layers: 70,
  model_type: 'qwen2',
  num_attention_heads: 16,
  num_hidden_layers: 36,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.43.1',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

// config.json of meta-llama/Llama-3.2-1B-Instruct.
const LLAMA32_1B = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    factor: 32.0,
    high_freq_factor: 4.0,
    low_freq_factor: 1.0,
    original_max_position_embeddings: 8192,
    rope_type: 'llama3',
  },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.45.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};

// config.json of Qwen/Qwen3-0.6B.
const QWEN3_06B = {
  architectures: ['Qwen3ForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 1024,
  initializer_range: 0.02,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: 'qwen3',
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.51.0',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

// generation_config.json of Qwen/Qwen2.5-3B-Instruct.
const QWEN25_GENERATION = {
  bos_token_id: 151643,
  pad_token_id: 151643,
  do_sample: true,
  eos_token_id: [151645, 151643],
  repetition_penalty: 1.05,
  temperature: 0.7,
  top_p: 0.8,
  top_k: 20,
  transformers_version: '4.37.0',
};

/** Asserts that parsing `json` fails with a message naming the source and every part. */
function assertRejected(json: unknown, ...parts: string[]): void {
  assert.throws(() => parseModelConfig(json, '/models/x/config.json'), (e: Error) => {
    assert.ok(e.message.startsWith('/models/x/config.json: '), `message should start with the source: ${e.message}`);
    for (const p of parts) assert.ok(e.message.includes(p), `message should contain ${JSON.stringify(p)}: ${e.message}`);
    return true;
  });
}

describe('parseModelConfig on real configs', () => {
  it('Qwen2.5-3B-Instruct', () => {
    assert.deepEqual(parseModelConfig(QWEN25_3B, 'qwen'), {
      architecture: 'qwen2',
      vocabSize: 151936,
      hiddenSize: 2048,
      intermediateSize: 11008,
      numLayers: 36,
      numHeads: 16,
      numKvHeads: 2,
      headDim: 128,
      rmsNormEps: 1e-6,
      ropeTheta: 1e6,
      ropeScaling: null,
      maxPositionEmbeddings: 32768,
      tieWordEmbeddings: true,
      qkvBias: true,
      oBias: false,
      mlpBias: false,
      qkNorm: false,
      bosTokenId: 151643,
      eosTokenIds: [151645],
      torchDtype: 'bfloat16',
      hiddenAct: 'silu',
    } satisfies ModelConfig);
  });

  it('Llama-3.2-1B-Instruct with llama3 rope scaling and a list of eos ids', () => {
    const cfg = parseModelConfig(LLAMA32_1B, 'llama');
    assert.equal(cfg.architecture, 'llama');
    assert.equal(cfg.headDim, 64);
    assert.equal(cfg.numKvHeads, 8);
    assert.equal(cfg.rmsNormEps, 1e-5);
    assert.equal(cfg.ropeTheta, 500000);
    assert.deepEqual(cfg.ropeScaling, { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    assert.deepEqual(cfg.eosTokenIds, [128001, 128008, 128009]);
    assert.equal(cfg.bosTokenId, 128000);
    assert.deepEqual([cfg.qkvBias, cfg.oBias, cfg.mlpBias, cfg.qkNorm], [false, false, false, false]);
    assert.equal(cfg.maxPositionEmbeddings, 131072);
  });

  it('Llama with attention_bias and mlp_bias biases q/k/v, o and the MLP', () => {
    const cfg = parseModelConfig({ ...LLAMA32_1B, attention_bias: true, mlp_bias: true }, 'llama');
    assert.deepEqual([cfg.qkvBias, cfg.oBias, cfg.mlpBias], [true, true, true]);
  });

  it('Qwen3-0.6B: explicit head_dim, q/k norm, no biases', () => {
    const cfg = parseModelConfig(QWEN3_06B, 'qwen3');
    assert.equal(cfg.architecture, 'qwen3');
    assert.equal(cfg.headDim, 128); // hidden/heads would be 64
    assert.deepEqual([cfg.qkvBias, cfg.oBias, cfg.mlpBias, cfg.qkNorm], [false, false, false, true]);
    assert.equal(cfg.ropeScaling, null);
    assert.equal(cfg.maxPositionEmbeddings, 40960);
  });

  it('falls back to model_type when architectures is absent, with class defaults', () => {
    const { architectures: _, num_key_value_heads: __, rms_norm_eps: ___, rope_theta: ____, max_position_embeddings: _____, tie_word_embeddings: ______, ...rest } = LLAMA32_1B;
    const cfg = parseModelConfig({ ...rest, rope_scaling: null }, 'llama');
    assert.equal(cfg.architecture, 'llama');
    assert.equal(cfg.numKvHeads, 32);
    assert.equal(cfg.rmsNormEps, 1e-6);
    assert.equal(cfg.ropeTheta, 10000);
    assert.equal(cfg.maxPositionEmbeddings, 2048);
    assert.equal(cfg.tieWordEmbeddings, false);
  });

  it('reads old-style rope_scaling {"type": "linear"}', () => {
    const cfg = parseModelConfig({ ...LLAMA32_1B, rope_scaling: { type: 'linear', factor: 4.0 } }, 'llama');
    assert.deepEqual(cfg.ropeScaling, { type: 'linear', factor: 4 });
  });

  it('treats rope_type "default" as no scaling', () => {
    assert.equal(parseModelConfig({ ...QWEN25_3B, rope_scaling: { rope_type: 'default' } }, 'q').ropeScaling, null);
  });

  it('reads transformers v5 rope_parameters and dtype', () => {
    const { rope_theta: _, rope_scaling: __, torch_dtype: ___, ...rest } = LLAMA32_1B;
    const cfg = parseModelConfig({ ...rest, dtype: 'bfloat16', rope_parameters: { ...LLAMA32_1B.rope_scaling, rope_theta: 500000.0 } }, 'v5');
    assert.equal(cfg.ropeTheta, 500000);
    assert.equal(cfg.ropeScaling?.type, 'llama3');
    assert.equal(cfg.torchDtype, 'bfloat16');
  });

  it('accepts an eos list, a missing eos and a null bos', () => {
    assert.deepEqual(parseModelConfig({ ...QWEN25_3B, eos_token_id: [1, 2] }, 'q').eosTokenIds, [1, 2]);
    const { eos_token_id: _, ...noEos } = QWEN25_3B;
    assert.deepEqual(parseModelConfig(noEos, 'q').eosTokenIds, []);
    assert.equal(parseModelConfig({ ...QWEN25_3B, bos_token_id: null }, 'q').bosTokenId, null);
  });
});

describe('parseModelConfig rejects what it cannot run', () => {
  it('unsupported architecture lists the supported ones', () => {
    assertRejected({ ...QWEN25_3B, architectures: ['MistralForCausalLM'] }, 'MistralForCausalLM', 'Qwen2ForCausalLM', 'LlamaForCausalLM', 'Qwen3ForCausalLM');
  });

  it('unsupported model_type without architectures', () => {
    const { architectures: _, ...rest } = QWEN25_3B;
    assertRejected({ ...rest, model_type: 'gemma' }, 'model_type "gemma"');
  });

  it('neither architectures nor model_type', () => {
    const { architectures: _, model_type: __, ...rest } = QWEN25_3B;
    assertRejected(rest, 'neither architectures nor model_type');
  });

  it('missing hidden_size', () => {
    const { hidden_size: _, ...rest } = QWEN25_3B;
    assertRejected(rest, 'hidden_size', 'missing');
  });

  it('negative num_attention_heads', () => {
    assertRejected({ ...QWEN25_3B, num_attention_heads: -16 }, 'num_attention_heads', 'positive integer', '-16');
  });

  it('non-integer intermediate_size', () => {
    assertRejected({ ...QWEN25_3B, intermediate_size: 11008.5 }, 'intermediate_size', '11008.5');
  });

  it('string where a number belongs', () => {
    assertRejected({ ...QWEN25_3B, vocab_size: '151936' }, 'vocab_size');
  });

  it('absurd vocab_size', () => {
    assertRejected({ ...QWEN25_3B, vocab_size: 1e12 }, 'vocab_size', 'absurdly large');
  });

  it('absurd num_hidden_layers', () => {
    assertRejected({ ...QWEN25_3B, num_hidden_layers: 100000 }, 'num_hidden_layers', 'absurdly large');
  });

  it('num_attention_heads not a multiple of num_key_value_heads', () => {
    assertRejected({ ...QWEN25_3B, num_key_value_heads: 3 }, 'num_attention_heads (16)', 'num_key_value_heads (3)');
  });

  it('hidden_size not divisible by heads without head_dim', () => {
    assertRejected({ ...QWEN25_3B, hidden_size: 2050 }, 'hidden_size (2050)', 'num_attention_heads (16)');
  });

  it('odd head_dim', () => {
    assertRejected({ ...QWEN3_06B, head_dim: 127 }, 'head_dim 127', 'even');
  });

  it('non-positive rms_norm_eps', () => {
    assertRejected({ ...QWEN25_3B, rms_norm_eps: 0 }, 'rms_norm_eps');
  });

  it('hidden_act other than silu', () => {
    assertRejected({ ...QWEN25_3B, hidden_act: 'gelu' }, 'hidden_act "gelu"');
  });

  it('use_sliding_window true', () => {
    assertRejected({ ...QWEN25_3B, use_sliding_window: true }, 'sliding-window attention is not supported');
  });

  it('sliding layers in layer_types', () => {
    assertRejected({ ...QWEN3_06B, layer_types: ['full_attention', 'sliding_attention'] }, 'layer_types', 'sliding-window attention is not supported');
  });

  it('yarn rope scaling', () => {
    assertRejected({ ...QWEN25_3B, rope_scaling: { type: 'yarn', factor: 4.0, original_max_position_embeddings: 32768 } }, 'rope_scaling', '"yarn"', 'not supported');
  });

  it('dynamic rope scaling', () => {
    assertRejected({ ...LLAMA32_1B, rope_scaling: { rope_type: 'dynamic', factor: 2.0 } }, 'rope_scaling', '"dynamic"', 'not supported');
  });

  it('llama3 rope scaling without low_freq_factor', () => {
    const { low_freq_factor: _, ...scaling } = LLAMA32_1B.rope_scaling;
    assertRejected({ ...LLAMA32_1B, rope_scaling: scaling }, 'rope_scaling.low_freq_factor');
  });

  it('linear rope scaling with a non-positive factor', () => {
    assertRejected({ ...LLAMA32_1B, rope_scaling: { type: 'linear', factor: 0 } }, 'rope_scaling.factor');
  });

  it('partial rotary embeddings', () => {
    assertRejected({ ...LLAMA32_1B, partial_rotary_factor: 0.5 }, 'partial_rotary_factor');
  });

  it('eos_token_id of the wrong type', () => {
    assertRejected({ ...QWEN25_3B, eos_token_id: '<|im_end|>' }, 'eos_token_id');
  });

  it('a config that is not an object', () => {
    assertRejected([1, 2], 'invalid config');
  });
});

describe('loadModelConfig', () => {
  it('reads config.json from a directory', () => {
    const dir = modelDir({ 'config.json': QWEN25_3B });
    assert.equal(loadModelConfig(dir).numLayers, 36);
  });

  it('names the file when config.json is missing or not JSON', () => {
    const missing = modelDir({});
    assert.throws(() => loadModelConfig(missing), (e: Error) => e.message.includes(path.join(missing, 'config.json')) && /ENOENT/.test(e.message));
    const broken = modelDir({ 'config.json': '{"hidden_size": ' });
    assert.throws(() => loadModelConfig(broken), (e: Error) => e.message.includes(path.join(broken, 'config.json')) && /not valid JSON/.test(e.message));
  });

  it('puts the file path in validation errors', () => {
    const dir = modelDir({ 'config.json': { ...QWEN25_3B, num_key_value_heads: 0 } });
    assert.throws(() => loadModelConfig(dir), (e: Error) => e.message.includes(path.join(dir, 'config.json')) && e.message.includes('num_key_value_heads'));
  });
});

describe('loadGenerationDefaults', () => {
  it("reads Qwen2.5's generation_config.json", () => {
    const dir = modelDir({ 'config.json': QWEN25_3B, 'generation_config.json': QWEN25_GENERATION });
    assert.deepEqual(loadGenerationDefaults(dir, loadModelConfig(dir)), {
      doSample: true,
      temperature: 0.7,
      topK: 20,
      topP: 0.8,
      minP: 0,
      repetitionPenalty: 1.05,
      maxNewTokens: null,
      eosTokenIds: [151645, 151643],
    });
  });

  it("falls back to transformers' defaults and the config's eos without generation_config.json", () => {
    const dir = modelDir({ 'config.json': LLAMA32_1B });
    assert.deepEqual(loadGenerationDefaults(dir, loadModelConfig(dir)), {
      doSample: false,
      temperature: 1,
      topK: 50,
      topP: 1,
      minP: 0,
      repetitionPenalty: 1,
      maxNewTokens: null,
      eosTokenIds: [128001, 128008, 128009],
    });
  });

  it('takes a single eos id and max_new_tokens', () => {
    const dir = modelDir({ 'config.json': QWEN25_3B, 'generation_config.json': { eos_token_id: 7, max_new_tokens: 512, min_p: 0.05 } });
    const g = loadGenerationDefaults(dir, loadModelConfig(dir));
    assert.deepEqual([g.eosTokenIds, g.maxNewTokens, g.minP], [[7], 512, 0.05]);
  });

  it('rejects invalid values naming the file and field', () => {
    const dir = modelDir({ 'config.json': QWEN25_3B, 'generation_config.json': { top_p: 2 } });
    const file = path.join(dir, 'generation_config.json');
    assert.throws(() => loadGenerationDefaults(dir, loadModelConfig(dir)), (e: Error) => e.message.includes(file) && e.message.includes('top_p'));
  });
});

describe('modelConfigToHfJson', () => {
  for (const [name, json] of [['qwen2', QWEN25_3B], ['llama', LLAMA32_1B], ['qwen3', QWEN3_06B]] as const) {
    it(`${name}: parses back to the same ModelConfig`, () => {
      const cfg = parseModelConfig(json, name);
      const out = modelConfigToHfJson(cfg);
      assert.deepEqual(parseModelConfig(JSON.parse(JSON.stringify(out)), 'roundtrip'), cfg);
    });
  }

  it('writes the fields transformers expects for qwen2', () => {
    const out = modelConfigToHfJson(parseModelConfig(QWEN25_3B, 'q'));
    assert.deepEqual(out.architectures, ['Qwen2ForCausalLM']);
    assert.equal(out.model_type, 'qwen2');
    assert.equal(out.use_sliding_window, false);
    assert.equal(out.num_key_value_heads, 2);
    assert.equal(out.rope_theta, 1e6);
    assert.equal(out.torch_dtype, 'bfloat16');
    assert.equal(out.eos_token_id, 151645);
    assert.equal(out.tie_word_embeddings, true);
    assert.equal(out.use_cache, true);
  });

  it('writes llama3 rope scaling and attention_bias for llama', () => {
    const out = modelConfigToHfJson(parseModelConfig(LLAMA32_1B, 'l'));
    assert.deepEqual(out.rope_scaling, LLAMA32_1B.rope_scaling);
    assert.equal(out.attention_bias, false);
    assert.deepEqual(out.eos_token_id, [128001, 128008, 128009]);
  });

  it('refuses combinations the architecture cannot express', () => {
    const llama = parseModelConfig(LLAMA32_1B, 'l');
    assert.throws(() => modelConfigToHfJson({ ...llama, qkvBias: true, oBias: false }), /llama config cannot express/);
    const qwen2 = parseModelConfig(QWEN25_3B, 'q');
    assert.throws(() => modelConfigToHfJson({ ...qwen2, qkNorm: true }), /qwen2 config cannot express q\/k norm/);
  });
});

/** inv_freq bit patterns from transformers 5.17.0 / torch 2.11 (LlamaRotaryEmbedding on the CPU). */
const TORCH_LLAMA32_1B_INV_FREQ = [
  0x3f800000, 0x3f29e1c6, 0x3ee177bc, 0x3e959ee3, 0x3e4693b0, 0x3e03c6a0, 0x3daee4ad, 0x3d681e67, 0x3d1a08c8, 0x3ccc6f49,
  0x3c87a9c3, 0x3c340d6d, 0x3beef74f, 0x3b9e9402, 0x3b527720, 0x3aa9279b, 0x39e13620, 0x38cb98f7, 0x37a3418d, 0x3758ac81,
  0x370fc8f8, 0x36bed4f4, 0x367d45c3, 0x3628126b, 0x35df10c4, 0x359406cb, 0x35447610, 0x35025f34, 0x34ad07a7, 0x3465a54d,
  0x341864a7, 0x33ca41b0,
];
const TORCH_QWEN25_3B_INV_FREQ = [
  0x3f800000, 0x3f4e4bad, 0x3f263de0, 0x3f05f6ef, 0x3ed7e89b, 0x3eadfcff, 0x3e8c3504, 0x3e61f835, 0x3e361887, 0x3e12bd91,
  0x3dec7fd6, 0x3dbe94c6, 0x3d99940d, 0x3d778513, 0x3d47763f, 0x3d20bc1d, 0x3d0186e3, 0x3cd0c1a8, 0x3ca8398b, 0x3c879008,
  0x3c5a7bf2, 0x3c301052, 0x3c0de12d, 0x3be4aa46, 0x3bb8449c, 0x3b947dae, 0x3b6f520e, 0x3b40dac5, 0x3b1b690d, 0x3afa78f0,
  0x3ac9d75c, 0x3aa2a6f7, 0x3a83126f, 0x3a533f28, 0x3a2a3b44, 0x3a092e02, 0x39dd1725, 0x39b229fb, 0x398f9272, 0x39676492,
  0x393a7753, 0x39164324, 0x38f22ce2, 0x38c327b5, 0x389d43a4, 0x387d75d4, 0x384c3fbe, 0x382497ab, 0x3804a2b2, 0x37d5c441,
  0x37ac431d, 0x378ad0ed, 0x375fba4f, 0x37344a0e, 0x371148e3, 0x36ea2732, 0x36bcb0c1, 0x36980e02, 0x36751070, 0x36457bab,
  0x361f23e4, 0x36003dec, 0x35ceaf79, 0x35a68e4c,
];

/** transformers' formulas evaluated in float64, as an independent reference. */
function invFreqF64(cfg: ModelConfig): number[] {
  const d = cfg.headDim;
  const inv = Array.from({ length: d / 2 }, (_, i) => 1 / cfg.ropeTheta ** ((2 * i) / d));
  const s = cfg.ropeScaling;
  if (s === null) return inv;
  if (s.type === 'linear') return inv.map((x) => x / s.factor);
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return inv.map((x) => {
    const wavelen = (2 * Math.PI) / x;
    if (wavelen < highWavelen) return x;
    if (wavelen > lowWavelen) return x / s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return ((1 - smooth) * x) / s.factor + smooth * x;
  });
}

function assertClose(got: Float32Array, want: number[], relTol: number): void {
  assert.equal(got.length, want.length);
  want.forEach((w, i) => assert.ok(Math.abs(got[i] - w) <= relTol * Math.abs(w), `inv_freq[${i}] = ${got[i]}, float64 reference ${w}`));
}

const bitsOf = (a: Float32Array): number[] => [...new Uint32Array(a.buffer)];

describe('ropeInvFreq', () => {
  it('without scaling matches base ** (-2i/D) computed in float64', () => {
    const cfg = parseModelConfig(QWEN25_3B, 'q');
    const got = ropeInvFreq(cfg);
    assert.equal(got.length, 64);
    assert.equal(got[0], 1);
    assertClose(got, invFreqF64(cfg), 3e-7);
  });

  it('with linear scaling divides every frequency by the factor', () => {
    const cfg = parseModelConfig({ ...LLAMA32_1B, rope_scaling: { type: 'linear', factor: 4 } }, 'l');
    const got = ropeInvFreq(cfg);
    assert.equal(got[0], 0.25);
    assertClose(got, invFreqF64(cfg), 3e-7);
  });

  it('with llama3 scaling keeps high frequencies, divides low ones, interpolates between', () => {
    const cfg = parseModelConfig(LLAMA32_1B, 'l');
    const got = ropeInvFreq(cfg);
    const plain = ropeInvFreq({ ...cfg, ropeScaling: null });
    assert.equal(got.length, 32);
    assertClose(got, invFreqF64(cfg), 1e-6);
    let kept = 0;
    let divided = 0;
    let between = 0;
    for (let i = 0; i < got.length; i++) {
      if (got[i] === plain[i]) kept++;
      else if (got[i] === Math.fround(plain[i] / 32)) divided++;
      else between++;
    }
    assert.ok(kept > 0 && divided > 0 && between > 0, `kept ${kept}, divided ${divided}, interpolated ${between}`);
  });

  it("equals torch's float32 values bit for bit for Llama-3.2-1B (llama3 scaling)", () => {
    assert.deepEqual(bitsOf(ropeInvFreq(parseModelConfig(LLAMA32_1B, 'l'))), TORCH_LLAMA32_1B_INV_FREQ);
  });

  it("is within 1 ulp of torch's float32 values for Qwen2.5-3B (torch's powf is not correctly rounded)", () => {
    const got = bitsOf(ropeInvFreq(parseModelConfig(QWEN25_3B, 'q')));
    const offByOne = got.filter((b, i) => b !== TORCH_QWEN25_3B_INV_FREQ[i]);
    got.forEach((b, i) => assert.ok(Math.abs(b - TORCH_QWEN25_3B_INV_FREQ[i]) <= 1, `inv_freq[${i}] differs by more than 1 ulp`));
    assert.ok(offByOne.length <= 2, `${offByOne.length} values differ by 1 ulp`);
  });
});
