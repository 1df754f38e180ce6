/**
 * LoRA adapters in Hugging Face peft's on-disk format, so adapters move both ways between Tandem
 * and Python peft / vLLM: `adapter_config.json` plus `adapter_model.safetensors`.
 *
 * Format facts come from huggingface/peft (read at commit 5d602fdb):
 * - file names: utils/constants.py (CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME, "all-linear");
 * - config keys and defaults: tuners/lora/config.py (LoraConfig) and config.py (PeftConfig,
 *   PeftConfigMixin; save_pretrained writes `json.dumps(to_dict(), indent=2, sort_keys=True)`,
 *   LoraConfig.to_dict drops runtime_config; from_pretrained drops keys it does not know, with a
 *   warning, so extra keys are safe for older peft);
 * - tensor names: utils/save_and_load.py (get_peft_model_state_dict strips the adapter name,
 *   ".default", from "lora_A.default.weight"); PeftModel wraps the CausalLM as
 *   `base_model.model`, hence "base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight";
 * - safetensors metadata {"format": "pt"}: peft_model.py save_pretrained;
 * - target matching: tuners/tuners_utils.py check_target_module_exists (a list matches a module
 *   whose name equals an entry or ends with "." + entry; a string is `re.fullmatch`ed).
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { ModelConfig } from './config.ts';
import { LORA_TARGETS, isLoraTarget, loraScale, loraShapes, validateLoraSpec } from './lora.ts';
import type { LoraAdapter, LoraSpec, LoraTarget, LoraWeights } from './lora.ts';
import { SafetensorsFile, writeSafetensors } from './safetensors.ts';
import type { TensorToWrite } from './safetensors.ts';

export const PEFT_CONFIG_FILE = 'adapter_config.json';
export const PEFT_WEIGHTS_FILE = 'adapter_model.safetensors';
const ALL_LINEAR = 'all-linear';
const PREFIX = 'base_model.model.';

export interface SavePeftOptions {
  /** Written as base_model_name_or_path: an HF repo id or a local directory. */
  baseModel: string;
  /** Tensor dtype on disk; F32 (the master weights, bit-exact) unless asked. */
  dtype?: 'F32' | 'BF16';
}

/** The HF module name of a target in layer `l`, as transformers names it in Qwen2/Llama/Qwen3. */
export function peftModuleName(layer: number, target: LoraTarget): string {
  const block = target === 'gate_proj' || target === 'up_proj' || target === 'down_proj' ? 'mlp' : 'self_attn';
  return `model.layers.${layer}.${block}.${target}`;
}

/** The tensor name peft's save_pretrained writes for A or B of one target. */
export function peftTensorName(layer: number, target: LoraTarget, which: 'A' | 'B'): string {
  return `${PREFIX}${peftModuleName(layer, target)}.lora_${which}.weight`;
}

/** Every tensor name of an adapter, in module order (A before B), as peft's state dict orders them. */
export function peftTensorNames(numLayers: number, targets: readonly LoraTarget[]): string[] {
  const names: string[] = [];
  for (let l = 0; l < numLayers; l++) {
    for (const t of LORA_TARGETS) {
      if (!targets.includes(t)) continue;
      names.push(peftTensorName(l, t, 'A'), peftTensorName(l, t, 'B'));
    }
  }
  return names;
}

/**
 * adapter_config.json as current peft writes it for a plain LoRA on a causal LM: every key of
 * LoraConfig.to_dict() with its default, except peft_version (we are not peft; peft fills in
 * its own version when the key is absent). peft 0.21.0's save_pretrained wrote exactly these keys
 * plus peft_version (bench/peer/peft_adapter.py make, on the GPU machine).
 */
export function peftAdapterConfig(spec: LoraSpec, baseModel: string): Record<string, unknown> {
  const json: Record<string, unknown> = {
    alora_invocation_tokens: null,
    alpha_pattern: {},
    arrow_config: null,
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: 'none',
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    kasa_config: null,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: spec.alpha,
    lora_bias: false,
    lora_dropout: spec.dropout ?? 0,
    lora_ga_config: null,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    monteclora_config: null,
    peft_type: 'LORA',
    qalora_group_size: 16,
    r: spec.rank,
    rank_pattern: {},
    revision: null,
    target_modules: LORA_TARGETS.filter((t) => spec.targets.includes(t)),
    target_parameters: null,
    task_type: 'CAUSAL_LM',
    trainable_token_indices: null,
    use_bdlora: null,
    use_dora: false,
    use_qalora: false,
    use_rslora: spec.useRslora,
    velora_config: null,
  };
  return json;
}

/**
 * Writes `dir`/adapter_config.json and `dir`/adapter_model.safetensors. When `dir` does not
 * exist (or is empty) both files are written into a sibling temp directory that is renamed into
 * place, so a reader sees both files or neither. Over an existing adapter each file is replaced
 * atomically on its own, weights first: publish new versions into new directories.
 */
export function savePeftAdapter(dir: string, adapter: LoraAdapter, options: SavePeftOptions): void {
  const { spec } = adapter;
  const dtype = options.dtype ?? 'F32';
  const tensors: TensorToWrite[] = [];
  for (let l = 0; l < adapter.layers.length; l++) {
    for (const t of LORA_TARGETS) {
      const w = adapter.layers[l].get(t);
      if (!spec.targets.includes(t)) {
        if (w) throw new Error(`savePeftAdapter: layer ${l} has weights for ${t}, which is not among the spec's targets`);
        continue;
      }
      if (!w) throw new Error(`savePeftAdapter: layer ${l} has no weights for target ${t}`);
      tensors.push({ name: peftTensorName(l, t, 'A'), shape: [spec.rank, w.inFeatures], data: w.a, dtype });
      tensors.push({ name: peftTensorName(l, t, 'B'), shape: [w.outFeatures, spec.rank], data: w.b, dtype });
    }
  }
  const configText = `${JSON.stringify(peftAdapterConfig(spec, options.baseModel), null, 2)}\n`;
  const write = (into: string): void => {
    writeSafetensors(path.join(into, PEFT_WEIGHTS_FILE), tensors, { format: 'pt' });
    writeFileAtomic(path.join(into, PEFT_CONFIG_FILE), configText);
  };

  const exists = fs.existsSync(dir);
  if (exists && fs.readdirSync(dir).length > 0) {
    write(dir);
    return;
  }
  const parent = path.dirname(path.resolve(dir));
  fs.mkdirSync(parent, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(parent, `.${path.basename(dir)}.tmp-`));
  try {
    write(tmp);
    // rename(2) replaces an empty directory, so an existing empty `dir` is fine too.
    fs.renameSync(tmp, dir);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeSync(fd, text);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Loading

const stringOrList = z.union([z.string(), z.array(z.string())]);
/** Only the keys we act on; anything else peft may write is ignored, as peft itself does. */
const peftConfigSchema = z.looseObject({
  peft_type: z.string({ error: 'expected a string' }),
  task_type: z.string().nullish(),
  r: z.number().int({ error: 'expected a positive integer' }).min(1, { error: 'expected a positive integer' }),
  lora_alpha: z.number().positive({ error: 'expected a positive number' }),
  lora_dropout: z.number().min(0).lt(1).nullish(),
  target_modules: stringOrList.nullish(),
  exclude_modules: stringOrList.nullish(),
  bias: z.string().nullish(),
  use_rslora: z.boolean().nullish(),
  use_dora: z.boolean().nullish(),
  fan_in_fan_out: z.boolean().nullish(),
  modules_to_save: z.array(z.string()).nullish(),
  layers_to_transform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullish(),
  layers_pattern: stringOrList.nullish(),
  rank_pattern: z.record(z.string(), z.unknown()).nullish(),
  alpha_pattern: z.record(z.string(), z.unknown()).nullish(),
  init_lora_weights: z.union([z.boolean(), z.string()]).nullish(),
  lora_bias: z.boolean().nullish(),
  use_qalora: z.boolean().nullish(),
  layer_replication: z.unknown(),
  trainable_token_indices: z.unknown(),
  target_parameters: z.unknown(),
  alora_invocation_tokens: z.unknown(),
});
type PeftConfigJson = z.infer<typeof peftConfigSchema>;

/**
 * init_lora_weights values whose saved adapter works on the unmodified base model. PiSSA, OLoRA,
 * CorDA, LoRA-GA and LoftQ rewrite the base weights at init (peft converts them back to a plain
 * LoRA, with init_lora_weights=true, only when saved with path_initial_model_for_weight_conversion).
 */
const PLAIN_INITS: readonly (boolean | string)[] = [true, false, 'gaussian', 'eva'];

/** Reads a peft LoRA adapter for a model of `cfg`; every mismatch is an error naming file and key or tensor. */
export function loadPeftAdapter(dir: string, cfg: ModelConfig): LoraAdapter {
  const configFile = path.join(dir, PEFT_CONFIG_FILE);
  const weightsFile = path.join(dir, PEFT_WEIGHTS_FILE);
  const config = readPeftConfig(configFile);
  const spec = specFromConfig(config, cfg, configFile);

  if (!fs.existsSync(weightsFile)) {
    const bin = path.join(dir, 'adapter_model.bin');
    const hint = fs.existsSync(bin) ? ' (adapter_model.bin is a pickle; re-save it with safe_serialization=True)' : '';
    throw new Error(`${weightsFile}: missing adapter weights${hint}`);
  }
  const file = SafetensorsFile.open(weightsFile);
  try {
    return readWeights(file, spec, cfg);
  } finally {
    file.close();
  }
}

function readPeftConfig(file: string): PeftConfigJson {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: cannot read the adapter config (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: adapter config is not valid JSON (${(err as Error).message})`);
  }
  const parsed = peftConfigSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new Error(`${file}: invalid adapter config: ${issues}`);
  }
  return parsed.data;
}

/** Checks everything we cannot represent, then resolves target_modules against the model's modules. */
function specFromConfig(c: PeftConfigJson, cfg: ModelConfig, file: string): LoraSpec {
  const fail = (msg: string): never => {
    throw new Error(`${file}: ${msg}`);
  };
  if (c.peft_type !== 'LORA') fail(`peft_type "${c.peft_type}" is not supported (only "LORA")`);
  if (c.task_type != null && c.task_type !== 'CAUSAL_LM') fail(`task_type "${c.task_type}" is not supported (only "CAUSAL_LM")`);
  if (c.use_dora) fail('use_dora is true: DoRA adapters are not supported');
  if ((c.bias ?? 'none') !== 'none') fail(`bias "${c.bias}" is not supported (only "none": LoRA adapters here train no biases)`);
  if (c.lora_bias) fail('lora_bias is true: a bias on lora_B is not supported');
  if (c.modules_to_save != null && c.modules_to_save.length > 0) {
    fail(`modules_to_save ${JSON.stringify(c.modules_to_save)} is not supported: only LoRA weights can be loaded, not full copies of modules`);
  }
  if (c.rank_pattern && Object.keys(c.rank_pattern).length > 0) fail('rank_pattern is not empty: per-module ranks are not supported');
  if (c.alpha_pattern && Object.keys(c.alpha_pattern).length > 0) fail('alpha_pattern is not empty: per-module alphas are not supported');
  if (c.use_qalora) fail('use_qalora is true: QA-LoRA is not supported');
  if (c.layer_replication != null) fail('layer_replication is set: layer replication is not supported');
  if (c.trainable_token_indices != null) fail('trainable_token_indices is set: trainable tokens are not supported');
  if (c.target_parameters != null) fail('target_parameters is set: LoRA on raw parameters is not supported');
  if (c.alora_invocation_tokens != null) fail('alora_invocation_tokens is set: activated LoRA (aLoRA) is not supported');
  const init = c.init_lora_weights ?? true;
  if (!PLAIN_INITS.includes(init)) {
    fail(`init_lora_weights "${String(init)}" rewrites the base model's weights; convert the adapter to a plain LoRA first (save_pretrained with path_initial_model_for_weight_conversion)`);
  }
  // fan_in_fan_out is meaningless for nn.Linear (peft warns and resets it to false), so it is ignored.

  const layers = c.layers_to_transform;
  if (layers != null) {
    const list = typeof layers === 'number' ? [layers] : layers;
    const missing = [...Array(cfg.numLayers).keys()].filter((l) => !list.includes(l));
    if (missing.length > 0) {
      fail(`layers_to_transform ${JSON.stringify(layers)} leaves out layers ${missing.join(', ')}: adapters must cover every layer`);
    }
    const pattern = c.layers_pattern;
    const patterns = pattern == null ? [] : typeof pattern === 'string' ? [pattern] : pattern;
    if (patterns.length > 0 && !patterns.includes('layers')) {
      fail(`layers_pattern ${JSON.stringify(pattern)} matches no layer list of this model (its layers are model.layers)`);
    }
  }

  const spec: LoraSpec = {
    rank: c.r,
    alpha: c.lora_alpha,
    targets: resolveTargets(c, cfg, fail),
    useRslora: c.use_rslora ?? false,
    dropout: c.lora_dropout ?? 0,
  };
  try {
    validateLoraSpec(spec, cfg);
  } catch (err) {
    fail((err as Error).message);
  }
  return spec;
}

/**
 * Which of our targets the config selects, found the way peft finds them: by matching the
 * names of the model's Linear and Embedding modules. Every selected target must be selected in
 * every layer, since an adapter here has one target set for all layers.
 */
function resolveTargets(c: PeftConfigJson, cfg: ModelConfig, fail: (msg: string) => never): LoraTarget[] {
  const targets = c.target_modules;
  if (targets == null) fail('target_modules is not set (peft would infer it from the model type; list the modules explicitly)');
  const matcher = (spec: string | string[], field: string): ((key: string) => boolean) => {
    if (Array.isArray(spec)) return (key) => spec.some((t) => key === t || key.endsWith(`.${t}`));
    let re: RegExp;
    try {
      re = new RegExp(`^(?:${spec})$`);
    } catch (err) {
      return fail(`${field} regex ${JSON.stringify(spec)} is not supported here (${(err as Error).message})`);
    }
    return (key) => re.test(key);
  };
  const allLinear = targets === ALL_LINEAR;
  const includes = allLinear ? null : matcher(targets!, 'target_modules');
  const excludes = c.exclude_modules == null ? null : matcher(c.exclude_modules, 'exclude_modules');
  const selected = (key: string): boolean => !(excludes?.(key) ?? false) && (includes ? includes(key) : true);

  // "all-linear" is every nn.Linear except the output layer (peft's _maybe_include_all_linear_layers).
  if (!allLinear) {
    for (const other of ['model.embed_tokens', 'lm_head']) {
      if (selected(other)) fail(`target_modules ${JSON.stringify(targets)} selects ${other}: LoRA on embeddings or the LM head is not supported`);
    }
  }
  const layersOf = new Map<LoraTarget, number[]>();
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const t of LORA_TARGETS) {
      if (!selected(peftModuleName(l, t))) continue;
      const list = layersOf.get(t) ?? [];
      list.push(l);
      layersOf.set(t, list);
    }
  }
  for (const [t, layers] of layersOf) {
    if (layers.length !== cfg.numLayers) {
      fail(`target_modules ${JSON.stringify(targets)} selects ${t} in layers ${layers.join(', ')} only: adapters must cover every layer`);
    }
  }
  const resolved = LORA_TARGETS.filter((t) => layersOf.has(t));
  if (resolved.length === 0) fail(`target_modules ${JSON.stringify(targets)} selects none of ${LORA_TARGETS.join(', ')}`);
  return resolved;
}

/** Accepts "lora_A.weight" and, from files saved other ways, "lora_A.<adapter name>.weight". */
const TENSOR_NAME = /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)\.lora_([AB])(?:\.([^.]+))?\.weight$/;

function readWeights(file: SafetensorsFile, spec: LoraSpec, cfg: ModelConfig): LoraAdapter {
  const where = (name: string): string => `${file.path}: tensor "${name}"`;
  /** canonical name -> the name in the file */
  const found = new Map<string, string>();
  for (const info of file.tensors()) {
    const m = TENSOR_NAME.exec(info.name);
    const layer = m ? Number(m[1]) : -1;
    const target = m?.[3] ?? '';
    if (!m || !isLoraTarget(target) || layer >= cfg.numLayers || peftModuleName(layer, target) !== `model.layers.${layer}.${m[2]}.${target}`) {
      throw new Error(`${where(info.name)}: unexpected tensor${unexpectedHint(info.name)}`);
    }
    if (!spec.targets.includes(target)) {
      throw new Error(`${where(info.name)}: ${target} is not in target_modules of ${PEFT_CONFIG_FILE}`);
    }
    const canonical = peftTensorName(layer, target, m[4] as 'A' | 'B');
    const previous = found.get(canonical);
    if (previous !== undefined) throw new Error(`${where(info.name)}: the same weight as "${previous}" (two adapter names in one file?)`);
    found.set(canonical, info.name);
  }

  const read = (canonical: string, shape: number[]): Float32Array => {
    const name = found.get(canonical);
    if (name === undefined) throw new Error(`${file.path}: missing tensor "${canonical}"`);
    const info = file.get(name)!;
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new Error(`${where(name)}: shape [${info.shape}] does not match [${shape}] (r=${spec.rank} in ${PEFT_CONFIG_FILE})`);
    }
    const data = file.readF32(name);
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) throw new Error(`${where(name)}: element ${i} is ${data[i]}; the adapter has diverged or is corrupt`);
    }
    return data;
  };

  const layers: Map<LoraTarget, LoraWeights>[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const layer = new Map<LoraTarget, LoraWeights>();
    for (const t of spec.targets) {
      const { inFeatures, outFeatures } = loraShapes(cfg, t);
      const a = read(peftTensorName(l, t, 'A'), [spec.rank, inFeatures]);
      const b = read(peftTensorName(l, t, 'B'), [outFeatures, spec.rank]);
      layer.set(t, { a, b, inFeatures, outFeatures });
    }
    layers.push(layer);
  }
  return { spec, scale: loraScale(spec), layers };
}

function unexpectedHint(name: string): string {
  if (name.includes('lora_embedding_')) return ' (LoRA on embeddings is not supported)';
  if (name.includes('lora_magnitude_vector')) return ' (DoRA magnitudes are not supported)';
  if (/lora_B(\.[^.]+)?\.bias$/.test(name)) return ' (lora_bias is not supported)';
  if (name.includes('lm_head') || name.includes('embed_tokens')) return ' (only the seven projections of decoder layers can carry LoRA)';
  return ` (expected names like "${peftTensorName(0, 'q_proj', 'A')}", layers below the model's num_hidden_layers)`;
}
