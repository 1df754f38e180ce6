/**
 * Atomic checkpoints of a training job. `output_dir/checkpoint-<step>/` holds:
 *   adapter_config.json, adapter_model.safetensors   the adapter in peft's format (F32, bit-exact),
 *                                                    so a checkpoint loads in Python peft as it is
 *   optimizer.safetensors   AdamW's m and v, flat in the layout of lora-device.ts, and the Adam
 *                           step count in the metadata
 *   trainer_state.json      step, data position and RNG state (opaque JSON from the trainer), the
 *                           log history, the job config, Tandem's version, the time, and the size
 *                           and SHA-256 of each file above
 *
 * A checkpoint is written into `.checkpoint-<step>.tmp-<random>`, every file and the directory
 * are fsynced, and only then is it renamed into place (and the parent fsynced). A reader sees a
 * whole checkpoint or none; a crash leaves at most a hidden temp directory, which readers ignore
 * and the next save removes. The recorded sizes catch truncation cheaply (latestCheckpoint);
 * the hashes catch any other damage when a checkpoint is loaded.
 *
 * One output_dir belongs to one job at a time.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import type { ModelConfig } from '../model/config.ts';
import type { LoraAdapter } from '../model/lora.ts';
import { PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, loadPeftAdapter, savePeftAdapter } from '../model/lora-peft.ts';
import { SafetensorsFile, writeSafetensors } from '../model/safetensors.ts';
import { PACKAGE_JSON } from '../paths.ts';

export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
const CHECKPOINT_DIR = /^checkpoint-(\d+)$/;
/** Leftovers of a save that never finished (tmp) or a replaced/pruned checkpoint (old). */
const LEFTOVER_DIR = /^\.checkpoint-\d+\.(tmp|old)-/;
const FORMAT = 'tandem-checkpoint';
const CHECKSUMMED = [PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, OPTIMIZER_FILE] as const;

/** AdamW state over the flat parameter vector: one m and one v per parameter, and the step count. */
export interface OptimizerState {
  m: Float32Array;
  v: Float32Array;
  /** Optimizer steps taken (Adam's t, for bias correction). */
  step: number;
}

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

export interface CheckpointData {
  /** Training steps done; names the directory. */
  step: number;
  adapter: LoraAdapter;
  /** base_model_name_or_path for adapter_config.json. */
  baseModel: string;
  optimizer: OptimizerState;
  /** Where the data iterator stands, as the trainer represents it. */
  dataPosition: Json;
  /** RNG state, as the trainer represents it. */
  rngState: Json;
  /** Logged metrics so far, one entry per logging step. */
  metrics: Json[];
  /** The job config the run was started with. */
  config: Json;
}

export interface LoadedCheckpoint extends Omit<CheckpointData, 'baseModel'> {
  dir: string;
  tandemVersion: string;
  /** ISO 8601 time of the save. */
  created: string;
}

export interface SaveCheckpointOptions {
  /** Keep at most this many checkpoints, the newest; default: all. */
  totalLimit?: number;
  onWarning?: (message: string) => void;
  /** Called once the temp directory is complete and synced, just before the rename (crash tests). */
  beforeRename?: (tempDir: string) => void | Promise<void>;
}

const fileEntrySchema = z.strictObject({
  bytes: z.int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits'),
});
const trainerStateSchema = z.strictObject({
  format: z.literal(FORMAT),
  format_version: z.literal(1),
  global_step: z.int().nonnegative(),
  created: z.iso.datetime(),
  tandem_version: z.string(),
  optimizer: z.strictObject({ step: z.int().nonnegative(), size: z.int().positive() }),
  data_position: z.json(),
  rng_state: z.json(),
  log_history: z.array(z.json()),
  config: z.json(),
  files: z.strictObject(Object.fromEntries(CHECKSUMMED.map((f) => [f, fileEntrySchema])) as Record<(typeof CHECKSUMMED)[number], typeof fileEntrySchema>),
});
type TrainerState = z.infer<typeof trainerStateSchema>;

const warnToStderr = (message: string): void => console.warn(`tandem: ${message}`);

/** Writes checkpoint-<step> atomically, then prunes; returns its path. */
export async function saveCheckpoint(outputDir: string, data: CheckpointData, opts: SaveCheckpointOptions = {}): Promise<string> {
  const size = checkSaveInput(data, opts);
  const onWarning = opts.onWarning ?? warnToStderr;
  await fs.promises.mkdir(outputDir, { recursive: true });
  const tmp = await fs.promises.mkdtemp(path.join(outputDir, `.checkpoint-${data.step}.tmp-`));
  const target = path.join(outputDir, `checkpoint-${data.step}`);
  try {
    const { m, v, step } = data.optimizer;
    writeSafetensors(path.join(tmp, OPTIMIZER_FILE), [
      { name: 'm', shape: [size], data: m, dtype: 'F32' },
      { name: 'v', shape: [size], data: v, dtype: 'F32' },
    ], { format: 'tandem-adamw', step: String(step) });
    // The directory is not empty now, so savePeftAdapter writes its files in place.
    savePeftAdapter(tmp, data.adapter, { baseModel: data.baseModel, dtype: 'F32' });
    const files = {} as TrainerState['files'];
    for (const name of CHECKSUMMED) files[name] = await fileDigest(path.join(tmp, name));
    const state: TrainerState = {
      format: FORMAT,
      format_version: 1,
      global_step: data.step,
      created: new Date().toISOString(),
      tandem_version: tandemVersion(),
      optimizer: { step, size },
      data_position: data.dataPosition,
      rng_state: data.rngState,
      log_history: data.metrics,
      config: data.config,
      files,
    };
    await writeAndSync(path.join(tmp, TRAINER_STATE_FILE), `${JSON.stringify(state, null, 2)}\n`);
    await syncDir(tmp);
    await opts.beforeRename?.(tmp);
    await renameIntoPlace(tmp, target, outputDir, data.step);
  } catch (err) {
    await fs.promises.rm(tmp, { recursive: true, force: true });
    throw err;
  }
  await prune(outputDir, data.step, opts.totalLimit, onWarning);
  return target;
}

/** Replaces an existing checkpoint of the same step (a rerun after a resume) without ever deleting it first. */
async function renameIntoPlace(tmp: string, target: string, outputDir: string, step: number): Promise<void> {
  let aside: string | null = null;
  if (fs.existsSync(target)) {
    aside = path.join(outputDir, `.checkpoint-${step}.old-${path.basename(tmp).split('.tmp-')[1]}`);
    await fs.promises.rename(target, aside);
  }
  try {
    await fs.promises.rename(tmp, target);
  } catch (err) {
    if (aside) await fs.promises.rename(aside, target).catch(() => undefined);
    throw err;
  }
  await syncDir(outputDir);
  if (aside) await fs.promises.rm(aside, { recursive: true, force: true });
}

/**
 * After saving `step`: checkpoints of later steps belong to a run that was resumed from an
 * earlier point, and would hijack the next resume, so they go; then all but the newest
 * `totalLimit`; then leftovers of interrupted saves. Each is renamed to a hidden name before
 * it is deleted, so a crash mid-delete never leaves a half checkpoint under a visible name.
 */
async function prune(outputDir: string, step: number, totalLimit: number | undefined, onWarning: (m: string) => void): Promise<void> {
  const all = await listCheckpoints(outputDir);
  const doomed: string[] = [];
  for (const c of all) {
    if (c.step > step) {
      onWarning(`deleting ${c.dir}: it is from a run abandoned at an earlier step (this run saved step ${step})`);
      doomed.push(c.dir);
    }
  }
  const kept = all.filter((c) => c.step <= step);
  if (totalLimit !== undefined) doomed.push(...kept.slice(0, Math.max(0, kept.length - totalLimit)).map((c) => c.dir));
  for (const dir of doomed) {
    const hidden = path.join(outputDir, `.${path.basename(dir)}.old-${Math.random().toString(36).slice(2, 10)}`);
    await fs.promises.rename(dir, hidden);
    await fs.promises.rm(hidden, { recursive: true, force: true });
  }
  for (const entry of await fs.promises.readdir(outputDir)) {
    if (LEFTOVER_DIR.test(entry)) await fs.promises.rm(path.join(outputDir, entry), { recursive: true, force: true });
  }
}

/** checkpoint-<step> directories in output_dir, oldest first (by step, not by time). */
export async function listCheckpoints(outputDir: string): Promise<{ step: number; dir: string }[]> {
  let entries: fs.Dirent[];
  try {
    entries = await fs.promises.readdir(outputDir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return entries
    .filter((e) => e.isDirectory() && CHECKPOINT_DIR.test(e.name))
    .map((e) => ({ step: Number(CHECKPOINT_DIR.exec(e.name)![1]), dir: path.join(outputDir, e.name) }))
    .sort((a, b) => a.step - b.step);
}

/**
 * The newest checkpoint whose trainer_state.json is valid and whose files have their recorded
 * sizes and readable safetensors headers, or null. Each one skipped is reported to `onWarning`.
 * Cheap: reads no tensor data and no hashes; loadCheckpoint checks those.
 */
export async function latestCheckpoint(outputDir: string, opts: { onWarning?: (message: string) => void } = {}): Promise<string | null> {
  const onWarning = opts.onWarning ?? warnToStderr;
  for (const { dir } of (await listCheckpoints(outputDir)).reverse()) {
    try {
      const state = await readTrainerState(dir);
      for (const name of CHECKSUMMED) await checkSize(dir, name, state.files[name].bytes);
      for (const name of [PEFT_WEIGHTS_FILE, OPTIMIZER_FILE]) SafetensorsFile.open(path.join(dir, name)).close();
      return dir;
    } catch (err) {
      onWarning(`skipping ${dir}: ${(err as Error).message}`);
    }
  }
  return null;
}

/** Loads the newest checkpoint that loads completely (see loadCheckpoint), or null. */
export async function loadLatestCheckpoint(
  outputDir: string,
  cfg: ModelConfig,
  opts: { onWarning?: (message: string) => void } = {},
): Promise<LoadedCheckpoint | null> {
  const onWarning = opts.onWarning ?? warnToStderr;
  for (const { dir } of (await listCheckpoints(outputDir)).reverse()) {
    try {
      return await loadCheckpoint(dir, cfg);
    } catch (err) {
      onWarning(`skipping ${dir}: ${(err as Error).message}`);
    }
  }
  return null;
}

/** Reads a checkpoint back, checking every file; errors name the file at fault. */
export async function loadCheckpoint(dir: string, cfg: ModelConfig): Promise<LoadedCheckpoint> {
  const state = await readTrainerState(dir);
  for (const name of CHECKSUMMED) {
    const expected = state.files[name];
    await checkSize(dir, name, expected.bytes);
    const { sha256 } = await fileDigest(path.join(dir, name));
    if (sha256 !== expected.sha256) {
      throw new Error(`${path.join(dir, name)}: content does not match the SHA-256 recorded in ${TRAINER_STATE_FILE}; the file is corrupt`);
    }
  }
  const adapter = loadPeftAdapter(dir, cfg);
  const optimizer = readOptimizer(path.join(dir, OPTIMIZER_FILE), state.optimizer, parameterCount(adapter));
  return {
    dir,
    step: state.global_step,
    adapter,
    optimizer,
    dataPosition: state.data_position,
    rngState: state.rng_state,
    metrics: state.log_history,
    config: state.config,
    tandemVersion: state.tandem_version,
    created: state.created,
  };
}

async function readTrainerState(dir: string): Promise<TrainerState> {
  const file = path.join(dir, TRAINER_STATE_FILE);
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${file}: ${code === 'ENOENT' ? 'missing' : `cannot read it (${code ?? (err as Error).message})`}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: not valid JSON (${(err as Error).message}); the file is truncated or corrupt`);
  }
  const parsed = trainerStateSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new Error(`${file}: not a Tandem trainer state: ${issues}`);
  }
  const dirStep = CHECKPOINT_DIR.exec(path.basename(dir))?.[1];
  if (dirStep !== undefined && Number(dirStep) !== parsed.data.global_step) {
    throw new Error(`${file}: global_step is ${parsed.data.global_step} but the directory is for step ${dirStep}`);
  }
  return parsed.data;
}

function readOptimizer(file: string, expected: TrainerState['optimizer'], parameters: number): OptimizerState {
  if (expected.size !== parameters) {
    throw new Error(`${file}: trainer state records ${expected.size} optimizer values but the adapter has ${parameters} parameters`);
  }
  const st = SafetensorsFile.open(file);
  try {
    const names = st.tensors().map((t) => t.name).sort();
    if (!isDeepStrictEqual(names, ['m', 'v'])) throw new Error(`${file}: expected tensors "m" and "v", found ${JSON.stringify(names)}`);
    if (st.metadata.step !== String(expected.step)) {
      throw new Error(`${file}: metadata step ${JSON.stringify(st.metadata.step)} does not match ${TRAINER_STATE_FILE} (${expected.step})`);
    }
    const read = (name: 'm' | 'v'): Float32Array => {
      const info = st.get(name)!;
      if (info.dtype !== 'F32' || info.shape.length !== 1 || info.shape[0] !== parameters) {
        throw new Error(`${file}: tensor "${name}" is ${info.dtype} [${info.shape}], expected F32 [${parameters}]`);
      }
      const data = st.readF32(name);
      for (let i = 0; i < data.length; i++) {
        // v is a running mean of squares: negative is as impossible as NaN.
        if (!Number.isFinite(data[i]) || (name === 'v' && data[i] < 0)) throw new Error(`${file}: tensor "${name}" element ${i} is ${data[i]}`);
      }
      return data;
    };
    return { m: read('m'), v: read('v'), step: expected.step };
  } finally {
    st.close();
  }
}

function checkSaveInput(data: CheckpointData, opts: SaveCheckpointOptions): number {
  const fail = (msg: string): never => {
    throw new Error(`saveCheckpoint: ${msg}`);
  };
  if (!Number.isSafeInteger(data.step) || data.step < 0) fail(`step must be an integer >= 0, got ${data.step}`);
  const { m, v, step } = data.optimizer;
  if (!Number.isSafeInteger(step) || step < 0) fail(`optimizer.step must be an integer >= 0, got ${step}`);
  const size = parameterCount(data.adapter);
  if (!(m instanceof Float32Array) || !(v instanceof Float32Array)) fail('optimizer.m and optimizer.v must be Float32Arrays');
  if (m.length !== size || v.length !== size) fail(`optimizer.m has ${m.length} values and v ${v.length}; the adapter has ${size} parameters`);
  const limit = opts.totalLimit;
  if (limit !== undefined && !(Number.isSafeInteger(limit) && limit >= 1)) fail(`totalLimit must be an integer >= 1, got ${limit}`);
  if (!Array.isArray(data.metrics)) fail('metrics must be an array');
  for (const key of ['dataPosition', 'rngState', 'metrics', 'config'] as const) {
    // NaN, undefined, Maps, Dates... would come back different: refuse them now, not at resume.
    const value: unknown = data[key];
    let back: unknown;
    try {
      back = JSON.parse(JSON.stringify(value) ?? 'undefined');
    } catch {
      fail(`${key} is not JSON`);
    }
    if (!isDeepStrictEqual(back, value)) fail(`${key} does not survive JSON unchanged (NaN, undefined, a Map, a Date or a class instance inside?)`);
  }
  return size;
}

function parameterCount(adapter: LoraAdapter): number {
  let n = 0;
  for (const layer of adapter.layers) for (const { a, b } of layer.values()) n += a.length + b.length;
  return n;
}

async function checkSize(dir: string, name: string, bytes: number): Promise<void> {
  const file = path.join(dir, name);
  let actual: number;
  try {
    actual = (await fs.promises.stat(file)).size;
  } catch {
    throw new Error(`${file}: missing`);
  }
  if (actual !== bytes) throw new Error(`${file}: ${actual} bytes, but ${TRAINER_STATE_FILE} records ${bytes}; the file is truncated or was replaced`);
}

/** Size and SHA-256, streamed so a large file neither fills memory nor blocks the event loop. */
async function fileDigest(file: string): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).byteLength;
  }
  return { bytes, sha256: hash.digest('hex') };
}

async function writeAndSync(file: string, text: string): Promise<void> {
  const fh = await fs.promises.open(file, 'w');
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsync a directory so the names in it (new files, a rename) survive a power cut. */
async function syncDir(dir: string): Promise<void> {
  const fh = await fs.promises.open(dir, 'r');
  try {
    await fh.sync();
  } catch (err) {
    // Some platforms and file systems cannot fsync a directory; there is nothing more to do there.
    if (!['EISDIR', 'EINVAL', 'EPERM', 'ENOTSUP'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err;
  } finally {
    await fh.close();
  }
}

let version: string | undefined;
function tandemVersion(): string {
  version ??= (JSON.parse(fs.readFileSync(PACKAGE_JSON, 'utf8')) as { version: string }).version;
  return version;
}
