/**
 * A model directory as transformers' `save_pretrained` writes it: either one
 * `model.safetensors`, or `model.safetensors.index.json` plus shards named
 * `model-00001-of-00003.safetensors`, ... The index maps every tensor name to its shard.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { SafetensorsFile, writeSafetensors, writtenByteLength, type TensorInfo, type TensorToWrite } from './safetensors.ts';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';
/** transformers' default `max_shard_size` ("5GB", decimal). */
const DEFAULT_MAX_SHARD_BYTES = 5_000_000_000;
const SHARD_NAME = /^model-\d{5}-of-\d{5}\.safetensors$/;

const indexSchema = z.object({
  metadata: z.record(z.string(), z.unknown()).optional(),
  weight_map: z.record(z.string(), z.string()),
});

type Entry = { file: SafetensorsFile; info: TensorInfo };

export class Checkpoint {
  readonly dir: string;
  readonly #files: SafetensorsFile[];
  readonly #byName: Map<string, Entry>;

  private constructor(dir: string, files: SafetensorsFile[], byName: Map<string, Entry>) {
    this.dir = dir;
    this.#files = files;
    this.#byName = byName;
  }

  /** Opens `dir` the way transformers looks for weights: the single file first, then the index. */
  static open(dir: string): Checkpoint {
    const single = path.join(dir, SINGLE_FILE);
    if (fs.existsSync(single)) {
      const file = SafetensorsFile.open(single);
      const byName = new Map(file.tensors().map((info) => [info.name, { file, info }]));
      return new Checkpoint(dir, [file], byName);
    }
    const index = path.join(dir, INDEX_FILE);
    if (fs.existsSync(index)) {
      const { files, byName } = openShards(dir, index);
      return new Checkpoint(dir, files, byName);
    }
    throw new Error(missingWeightsMessage(dir));
  }

  /** Tensor names: header order for a single file, index order for shards. */
  names(): string[] {
    return [...this.#byName.keys()];
  }

  has(name: string): boolean {
    return this.#byName.has(name);
  }

  info(name: string): TensorInfo {
    return this.#entry(name).info;
  }

  /** The tensor as f32; with `expectedShape`, a mismatch is an error rather than silent garbage. */
  read(name: string, expectedShape?: readonly number[]): Float32Array {
    const { file, info } = this.#entry(name);
    if (expectedShape && !sameShape(info.shape, expectedShape)) {
      throw new Error(
        `${info.file}: tensor "${name}" has shape [${info.shape}], expected [${expectedShape}] from the model config`,
      );
    }
    return file.readF32(name);
  }

  close(): void {
    for (const f of this.#files) f.close();
  }

  #entry(name: string): Entry {
    const entry = this.#byName.get(name);
    if (!entry) throw new Error(`${this.dir}: checkpoint has no tensor named "${name}"`);
    return entry;
  }
}

function openShards(dir: string, indexPath: string): { files: SafetensorsFile[]; byName: Map<string, Entry> } {
  const weightMap = readIndex(indexPath);
  const shards = new Map<string, SafetensorsFile>();
  const byName = new Map<string, Entry>();
  try {
    for (const [name, shardName] of Object.entries(weightMap)) {
      let file = shards.get(shardName);
      if (!file) {
        file = SafetensorsFile.open(shardPath(dir, indexPath, name, shardName));
        shards.set(shardName, file);
      }
      const info = file.get(name);
      if (!info) throw new Error(`${indexPath}: tensor "${name}" is mapped to ${shardName}, but that shard has no such tensor`);
      byName.set(name, { file, info });
    }
  } catch (err) {
    for (const f of shards.values()) f.close();
    throw err;
  }
  return { files: [...shards.values()], byName };
}

function readIndex(indexPath: string): Record<string, string> {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw new Error(`${indexPath}: not valid JSON (${(err as Error).message})`);
  }
  const parsed = indexSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new Error(`${indexPath}: not a safetensors index (${issues})`);
  }
  return parsed.data.weight_map;
}

/** Shards must be plain file names inside the directory: an index cannot point elsewhere. */
function shardPath(dir: string, indexPath: string, tensor: string, shardName: string): string {
  if (shardName !== path.basename(shardName) || shardName === '..' || shardName === '.') {
    throw new Error(`${indexPath}: tensor "${tensor}" is mapped to "${shardName}", which is not a file name in ${dir}`);
  }
  const full = path.join(dir, shardName);
  if (!fs.existsSync(full)) {
    throw new Error(`${indexPath}: shard ${shardName} (holding tensor "${tensor}") does not exist in ${dir}`);
  }
  return full;
}

function missingWeightsMessage(dir: string): string {
  if (!fs.existsSync(dir)) return `${dir}: model directory does not exist`;
  const entries = fs.readdirSync(dir);
  const base = `${dir}: no ${SINGLE_FILE} or ${INDEX_FILE}`;
  if (entries.some((e) => e.startsWith('pytorch_model') && (e.endsWith('.bin') || e.endsWith('.bin.index.json')))) {
    return `${base}; only PyTorch .bin weights are there, which Tandem does not load ` +
      `(convert them: load with transformers and save_pretrained(dir, safe_serialization=True))`;
  }
  const others = entries.filter((e) => e.endsWith('.safetensors'));
  return others.length ? `${base} (found ${others.join(', ')}, which are not a model checkpoint)` : base;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Writes `tensors` into `dir` as transformers does: one model.safetensors when they fit in
 * `maxShardBytes`, else shards filled greedily in the given order (a tensor larger than the
 * limit gets a shard of its own) plus model.safetensors.index.json. Files of an earlier save
 * that the new layout doesn't use are removed, so the directory always opens as what was
 * just written.
 */
export function writeCheckpoint(
  dir: string,
  tensors: readonly TensorToWrite[],
  opts: { maxShardBytes?: number; metadata?: Record<string, string> } = {},
): void {
  const maxShardBytes = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  const metadata = opts.metadata ?? { format: 'pt' };
  fs.mkdirSync(dir, { recursive: true });
  const groups = splitIntoShards(tensors, maxShardBytes);

  if (groups.length <= 1) {
    writeSafetensors(path.join(dir, SINGLE_FILE), groups[0] ?? [], metadata);
    removeStale(dir, new Set([SINGLE_FILE]));
    return;
  }
  const weightMap: Record<string, string> = {};
  const written = new Set<string>();
  let totalSize = 0;
  groups.forEach((group, i) => {
    const name = `model-${pad5(i + 1)}-of-${pad5(groups.length)}.safetensors`;
    writeSafetensors(path.join(dir, name), group, metadata);
    written.add(name);
    for (const t of group) {
      weightMap[t.name] = name;
      totalSize += writtenByteLength(t);
    }
  });
  // transformers writes json.dumps(index, indent=2, sort_keys=True) + "\n".
  const sortedMap = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]));
  const index = { metadata: { total_size: totalSize }, weight_map: sortedMap };
  const indexPath = path.join(dir, INDEX_FILE);
  const tmp = `${indexPath}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(index, null, 2) + '\n');
  fs.renameSync(tmp, indexPath);
  written.add(INDEX_FILE);
  removeStale(dir, written);
}

function splitIntoShards(tensors: readonly TensorToWrite[], maxShardBytes: number): TensorToWrite[][] {
  if (!(maxShardBytes > 0)) throw new Error(`writeCheckpoint: maxShardBytes must be positive, got ${maxShardBytes}`);
  const groups: TensorToWrite[][] = [];
  let current: TensorToWrite[] = [];
  let currentBytes = 0;
  for (const t of tensors) {
    const bytes = writtenByteLength(t);
    if (current.length > 0 && currentBytes + bytes > maxShardBytes) {
      groups.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(t);
    currentBytes += bytes;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

function removeStale(dir: string, keep: ReadonlySet<string>): void {
  for (const entry of fs.readdirSync(dir)) {
    const ours = entry === SINGLE_FILE || entry === INDEX_FILE || SHARD_NAME.test(entry);
    if (ours && !keep.has(entry)) fs.rmSync(path.join(dir, entry), { force: true });
  }
}

function pad5(n: number): string {
  return String(n).padStart(5, '0');
}
