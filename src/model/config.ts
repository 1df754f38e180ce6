/**
 * Hugging Face config.json / generation_config.json -> ModelConfig / GenerationDefaults.
 *
 * Qwen2 is the base; Llama and Qwen3 differ only in flags (biases, q/k norm, head_dim,
 * rope scaling). Defaults for absent fields are those of the matching transformers config
 * class. Unknown fields are ignored; anything we can't run faithfully is an error.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

export type Architecture = 'qwen2' | 'llama' | 'qwen3';

/** rope_scaling variants whose inv_freq is static (dynamic NTK, yarn, longrope are not supported). */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** head_dim if the config gives it (Qwen3, some Llamas), else hiddenSize / numHeads. */
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** Biases on q/k/v projections: always for qwen2, attention_bias for llama and qwen3. */
  qkvBias: boolean;
  /** Bias on o_proj: llama's attention_bias covers it; never for qwen2/qwen3. */
  oBias: boolean;
  mlpBias: boolean;
  /** RMSNorm over each head of q and k before rope (qwen3). */
  qkNorm: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  torchDtype: string | null;
  hiddenAct: 'silu';
}

export interface GenerationDefaults {
  /** false means greedy decoding; the sampling fields below are then unused. */
  doSample: boolean;
  temperature: number;
  /** 0 disables top-k. */
  topK: number;
  topP: number;
  /** 0 disables min-p. */
  minP: number;
  repetitionPenalty: number;
  maxNewTokens: number | null;
  eosTokenIds: number[];
}

const ARCH_BY_CLASS: Record<string, Architecture> = {
  Qwen2ForCausalLM: 'qwen2',
  LlamaForCausalLM: 'llama',
  Qwen3ForCausalLM: 'qwen3',
};
const CLASS_BY_ARCH: Record<Architecture, string> = { qwen2: 'Qwen2ForCausalLM', llama: 'LlamaForCausalLM', qwen3: 'Qwen3ForCausalLM' };
/** transformers' class default for max_position_embeddings. */
const DEFAULT_MAX_POSITIONS: Record<Architecture, number> = { qwen2: 32768, llama: 2048, qwen3: 32768 };

/** Sanity limits: far above any real model, low enough to catch corrupt or mistyped configs. */
const LIMITS = {
  vocab_size: 4_000_000,
  hidden_size: 65_536,
  intermediate_size: 1_048_576,
  num_hidden_layers: 1_024,
  num_attention_heads: 1_024,
  num_key_value_heads: 1_024,
  head_dim: 1_024,
  max_position_embeddings: 1 << 24,
} as const;

const sized = (field: keyof typeof LIMITS) =>
  z
    .number({ error: 'expected a positive integer' })
    .int({ error: 'expected a positive integer' })
    .min(1, { error: 'expected a positive integer' })
    .max(LIMITS[field], { error: `absurdly large (limit ${LIMITS[field]})` });
const tokenId = z.number().int().nonnegative();
const tokenIds = z.union([tokenId, z.array(tokenId)], { error: 'expected a token id or a list of token ids' });
const ropeObject = z.record(z.string(), z.unknown());

const hfConfigSchema = z.object({
  architectures: z.array(z.string()).nullish(),
  model_type: z.string().nullish(),
  vocab_size: sized('vocab_size'),
  hidden_size: sized('hidden_size'),
  intermediate_size: sized('intermediate_size'),
  num_hidden_layers: sized('num_hidden_layers'),
  num_attention_heads: sized('num_attention_heads'),
  num_key_value_heads: sized('num_key_value_heads').nullish(),
  head_dim: sized('head_dim').nullish(),
  hidden_act: z.string().optional(),
  rms_norm_eps: z.number().positive().lt(1).optional(),
  rope_theta: z.number().positive().optional(),
  rope_scaling: ropeObject.nullish(),
  /** transformers v5 moves rope_theta and the scaling into one object. */
  rope_parameters: ropeObject.nullish(),
  partial_rotary_factor: z.number().nullish(),
  max_position_embeddings: sized('max_position_embeddings').optional(),
  tie_word_embeddings: z.boolean().optional(),
  attention_bias: z.boolean().optional(),
  mlp_bias: z.boolean().optional(),
  bos_token_id: tokenId.nullish(),
  eos_token_id: tokenIds.nullish(),
  torch_dtype: z.string().nullish(),
  dtype: z.string().nullish(),
  use_sliding_window: z.boolean().optional(),
  layer_types: z.array(z.string()).optional(),
});
type HfConfig = z.infer<typeof hfConfigSchema>;

export function loadModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  return parseModelConfig(readJson(file, 'model config'), file);
}

/** Validates an HF config.json object; `source` names it in error messages. */
export function parseModelConfig(json: unknown, source: string): ModelConfig {
  const parsed = hfConfigSchema.safeParse(json);
  if (!parsed.success) throw new Error(`${source}: invalid config: ${issuesText(parsed.error, json)}`);
  const raw = parsed.data;
  const fail = (msg: string): never => {
    throw new Error(`${source}: ${msg}`);
  };

  const architecture = resolveArchitecture(raw, fail);
  const hiddenAct = raw.hidden_act ?? 'silu';
  if (hiddenAct !== 'silu') fail(`hidden_act "${hiddenAct}" is not supported (only "silu")`);
  if (raw.use_sliding_window) fail('use_sliding_window is true: sliding-window attention is not supported');
  if (raw.layer_types?.some((t) => t !== 'full_attention')) {
    fail('layer_types has non-"full_attention" layers: sliding-window attention is not supported');
  }

  const numHeads = raw.num_attention_heads;
  const numKvHeads = raw.num_key_value_heads ?? numHeads;
  if (numHeads % numKvHeads !== 0) {
    fail(`num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  if (raw.head_dim == null && raw.hidden_size % numHeads !== 0) {
    fail(`hidden_size (${raw.hidden_size}) is not divisible by num_attention_heads (${numHeads}) and head_dim is not given`);
  }
  const headDim = raw.head_dim ?? raw.hidden_size / numHeads;
  if (headDim % 2 !== 0) fail(`head_dim ${headDim} must be even for rotary embeddings`);
  if (raw.partial_rotary_factor != null && raw.partial_rotary_factor !== 1) {
    fail(`partial_rotary_factor ${raw.partial_rotary_factor} is not supported (only 1)`);
  }

  const { ropeTheta, ropeScaling } = resolveRope(raw, fail);
  const attentionBias = raw.attention_bias ?? false;
  const eos = raw.eos_token_id;
  return {
    architecture,
    vocabSize: raw.vocab_size,
    hiddenSize: raw.hidden_size,
    intermediateSize: raw.intermediate_size,
    numLayers: raw.num_hidden_layers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: raw.rms_norm_eps ?? 1e-6,
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings: raw.max_position_embeddings ?? DEFAULT_MAX_POSITIONS[architecture],
    tieWordEmbeddings: raw.tie_word_embeddings ?? false,
    qkvBias: architecture === 'qwen2' ? true : attentionBias,
    oBias: architecture === 'llama' ? attentionBias : false,
    mlpBias: architecture === 'llama' ? (raw.mlp_bias ?? false) : false,
    qkNorm: architecture === 'qwen3',
    bosTokenId: raw.bos_token_id ?? null,
    eosTokenIds: eos == null ? [] : Array.isArray(eos) ? eos : [eos],
    torchDtype: raw.torch_dtype ?? raw.dtype ?? null,
    hiddenAct: 'silu',
  };
}

function resolveArchitecture(raw: HfConfig, fail: (msg: string) => never): Architecture {
  const supported = Object.keys(ARCH_BY_CLASS).join(', ');
  const cls = raw.architectures?.[0];
  if (cls !== undefined) {
    return ARCH_BY_CLASS[cls] ?? fail(`architecture ${cls} is not supported (supported: ${supported})`);
  }
  const type = raw.model_type;
  if (type === 'qwen2' || type === 'llama' || type === 'qwen3') return type;
  return fail(
    type == null
      ? `neither architectures nor model_type is set (supported: ${supported})`
      : `model_type "${type}" is not supported (supported: qwen2, llama, qwen3)`,
  );
}

function resolveRope(raw: HfConfig, fail: (msg: string) => never): { ropeTheta: number; ropeScaling: RopeScaling | null } {
  const params = raw.rope_parameters ?? null;
  const theta = raw.rope_theta ?? params?.rope_theta ?? 10000;
  if (typeof theta !== 'number' || !(theta > 0)) fail(`rope_theta must be a positive number, found ${JSON.stringify(theta)}`);
  const scaling = raw.rope_scaling ?? params;
  const type = scaling?.rope_type ?? scaling?.type ?? 'default';
  const where = raw.rope_scaling ? 'rope_scaling' : 'rope_parameters';
  const num = (key: string, positive = true): number => {
    const v = scaling?.[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || (positive && !(v > 0))) {
      fail(`${where}.${key} must be a positive number for rope type "${String(type)}", found ${JSON.stringify(v)}`);
    }
    return v as number;
  };
  let ropeScaling: RopeScaling | null = null;
  if (type === 'linear') {
    ropeScaling = { type: 'linear', factor: num('factor') };
  } else if (type === 'llama3') {
    ropeScaling = {
      type: 'llama3',
      factor: num('factor'),
      lowFreqFactor: num('low_freq_factor'),
      highFreqFactor: num('high_freq_factor'),
      originalMaxPositionEmbeddings: num('original_max_position_embeddings'),
    };
    if (ropeScaling.highFreqFactor <= ropeScaling.lowFreqFactor) {
      fail(`${where}: high_freq_factor (${ropeScaling.highFreqFactor}) must exceed low_freq_factor (${ropeScaling.lowFreqFactor})`);
    }
  } else if (type !== 'default') {
    fail(`${where} type "${String(type)}" is not supported (supported: default, linear, llama3)`);
  }
  return { ropeTheta: theta as number, ropeScaling };
}

/**
 * inv_freq [headDim/2] exactly as transformers computes it in float32 on the CPU:
 * `1.0 / (base ** (arange(0, D, 2).float() / D))`, then the rope_scaling adjustment.
 * Every step is rounded to f32 (Math.fround) in torch's order; note that torch evaluates
 * `scalar / tensor` as `tensor.reciprocal() * scalar`, which we mirror.
 */
export function ropeInvFreq(cfg: ModelConfig): Float32Array {
  const f = Math.fround;
  const dim = cfg.headDim;
  const base = f(cfg.ropeTheta);
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < out.length; i++) {
    const exponent = f((2 * i) / dim);
    out[i] = f(1 / f(Math.pow(base, exponent)));
  }
  const s = cfg.ropeScaling;
  if (s === null) return out;
  if (s.type === 'linear') {
    for (let i = 0; i < out.length; i++) out[i] = f(out[i] / f(s.factor));
    return out;
  }
  // transformers' _compute_llama3_parameters: long wavelengths are divided by `factor`, short
  // ones kept, and the band in between interpolated smoothly.
  const factor = f(s.factor);
  const old = s.originalMaxPositionEmbeddings;
  const lowWavelen = f(old / s.lowFreqFactor);
  const highWavelen = f(old / s.highFreqFactor);
  const twoPi = f(2 * Math.PI);
  for (let i = 0; i < out.length; i++) {
    const inv = out[i];
    const wavelen = f(f(1 / inv) * twoPi);
    if (wavelen > lowWavelen) {
      out[i] = f(inv / factor);
    } else if (!(wavelen < highWavelen)) {
      const ratio = f(f(1 / wavelen) * f(old));
      const smooth = f(f(ratio - f(s.lowFreqFactor)) / f(s.highFreqFactor - s.lowFreqFactor));
      const scaledPart = f(f(f(1 - smooth) * inv) / factor);
      out[i] = f(scaledPart + f(smooth * inv));
    }
  }
  return out;
}

const generationSchema = z.object({
  do_sample: z.boolean().nullish(),
  temperature: z.number().nonnegative().nullish(),
  top_k: z.number().int().nonnegative().nullish(),
  top_p: z.number().min(0).max(1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  repetition_penalty: z.number().positive().nullish(),
  max_new_tokens: z.number().int().positive().nullish(),
  eos_token_id: tokenIds.nullish(),
});

/**
 * generation_config.json when present, else transformers' GenerationConfig defaults
 * (greedy, temperature 1, top_k 50, top_p 1). eos comes from it, else from config.json.
 * max_length is ignored: the request decides how long to generate.
 */
export function loadGenerationDefaults(dir: string, cfg: ModelConfig): GenerationDefaults {
  const file = path.join(dir, 'generation_config.json');
  const json = fs.existsSync(file) ? readJson(file, 'generation config') : {};
  const parsed = generationSchema.safeParse(json);
  if (!parsed.success) throw new Error(`${file}: invalid generation config: ${issuesText(parsed.error, json)}`);
  const g = parsed.data;
  const eos = g.eos_token_id;
  return {
    doSample: g.do_sample ?? false,
    temperature: g.temperature ?? 1,
    topK: g.top_k ?? 50,
    topP: g.top_p ?? 1,
    minP: g.min_p ?? 0,
    repetitionPenalty: g.repetition_penalty ?? 1,
    maxNewTokens: g.max_new_tokens ?? null,
    eosTokenIds: eos == null ? [...cfg.eosTokenIds] : Array.isArray(eos) ? eos : [eos],
  };
}

/** A config.json that transformers loads as `cfg` (and parseModelConfig reads back unchanged). */
export function modelConfigToHfJson(cfg: ModelConfig): Record<string, unknown> {
  const arch = cfg.architecture;
  const cannot = (what: string): never => {
    throw new Error(`modelConfigToHfJson: a ${arch} config cannot express ${what}`);
  };
  if (arch !== 'qwen3' && cfg.qkNorm) cannot('q/k norm (qkNorm)');
  if (arch === 'qwen3' && !cfg.qkNorm) cannot('the absence of q/k norm');
  if (arch === 'qwen2' && !cfg.qkvBias) cannot('q/k/v projections without bias');
  if (arch !== 'llama' && cfg.oBias) cannot('an o_proj bias');
  if (arch !== 'llama' && cfg.mlpBias) cannot('MLP biases');
  if (arch === 'llama' && cfg.qkvBias !== cfg.oBias) cannot('q/k/v and o_proj biases that differ (attention_bias covers both)');

  const eos = cfg.eosTokenIds;
  const json: Record<string, unknown> = {
    architectures: [CLASS_BY_ARCH[arch]],
    model_type: arch,
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
    head_dim: cfg.headDim,
    hidden_act: cfg.hiddenAct,
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: ropeScalingToHf(cfg.ropeScaling),
    max_position_embeddings: cfg.maxPositionEmbeddings,
    tie_word_embeddings: cfg.tieWordEmbeddings,
    bos_token_id: cfg.bosTokenId,
    eos_token_id: eos.length === 1 ? eos[0] : eos.length === 0 ? null : [...eos],
    torch_dtype: cfg.torchDtype ?? 'float32',
    attention_dropout: 0.0,
    initializer_range: 0.02,
    use_cache: true,
  };
  if (arch === 'llama') {
    json.attention_bias = cfg.qkvBias;
    json.mlp_bias = cfg.mlpBias;
    json.pretraining_tp = 1;
  } else {
    if (arch === 'qwen3') json.attention_bias = cfg.qkvBias;
    json.use_sliding_window = false;
    json.sliding_window = null;
    json.max_window_layers = cfg.numLayers;
  }
  return json;
}

function ropeScalingToHf(s: RopeScaling | null): Record<string, unknown> | null {
  if (s === null) return null;
  if (s.type === 'linear') return { rope_type: 'linear', factor: s.factor };
  return {
    rope_type: 'llama3',
    factor: s.factor,
    low_freq_factor: s.lowFreqFactor,
    high_freq_factor: s.highFreqFactor,
    original_max_position_embeddings: s.originalMaxPositionEmbeddings,
  };
}

function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: cannot read ${what} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: ${what} is not valid JSON (${(err as Error).message})`);
  }
}

/** "num_attention_heads: expected a positive integer (found -1)", one per issue. */
function issuesText(error: z.ZodError, input: unknown): string {
  return error.issues
    .map((issue) => {
      const field = issue.path.join('.') || '(root)';
      let found: unknown = input;
      for (const key of issue.path) found = (found as Record<PropertyKey, unknown> | undefined)?.[key as PropertyKey];
      const foundText = found === undefined ? 'missing' : `found ${JSON.stringify(found)}`;
      return `${field}: ${issue.message} (${foundText})`;
    })
    .join('; ');
}
