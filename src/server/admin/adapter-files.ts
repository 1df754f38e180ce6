/**
 * Writing a served adapter version to disk as a PEFT folder ("publish to disk"), so peft,
 * vLLM or another Tandem can load it. The version is pinned while its weights are read, so a
 * publish or unload meanwhile cannot free them under the download.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { AdapterVersion } from '../../engine/adapters.ts';
import type { Engine } from '../../engine/engine.ts';
import { downloadLora } from '../../model/lora-device.ts';
import { PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, savePeftAdapter } from '../../model/lora-peft.ts';
import { ApiError } from '../errors.ts';

export interface SavedFiles {
  dir: string;
  files: string[];
  bytes: number;
}

export async function saveAdapterVersion(engine: Engine, version: AdapterVersion, target: string, opts: { overwrite?: boolean; dtype?: 'F32' | 'BF16' }): Promise<SavedFiles> {
  const dir = path.resolve(target);
  checkTarget(dir, opts.overwrite ?? false);
  const { adapters } = engine;
  adapters.pin(version);
  try {
    const adapter = await engine.deviceQueue.run(() => downloadLora(adapters.backend, adapters.config, version.lora));
    savePeftAdapter(dir, adapter, { baseModel: engine.loaded.dir, dtype: opts.dtype });
  } finally {
    adapters.unpin(version);
  }
  const files = [PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE];
  const bytes = files.reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
  return { dir, files, bytes };
}

/** A new or empty directory; an existing adapter folder only with overwrite. */
function checkTarget(dir: string, overwrite: boolean): void {
  let entries: string[];
  try {
    const stat = fs.statSync(dir);
    if (!stat.isDirectory()) throw new ApiError(400, `${dir} exists and is not a directory; give a new or empty directory.`, 'path', 'invalid_value');
    entries = fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (entries.length === 0) return;
  const isAdapter = entries.includes(PEFT_CONFIG_FILE);
  if (isAdapter && overwrite) return;
  throw new ApiError(
    409,
    isAdapter
      ? `${dir} already holds an adapter; pass "overwrite": true to replace it, or give a new directory.`
      : `${dir} is not empty and holds no adapter; give a new or empty directory.`,
    'path',
    'path_exists',
  );
}
