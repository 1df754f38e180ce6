/**
 * The examples a job trains on, from its data config: GSM8K JSONL, chat JSONL, or the built-in
 * synthetic arithmetic set (so a job runs with no files at all).
 */
import fs from 'node:fs';
import { loadChatJsonl, loadGsm8kJsonl } from './data.ts';
import type { Example } from './data.ts';
import { dataFile } from './job-config.ts';
import type { JobConfig } from './job-config.ts';
import { syntheticExamples } from './synthetic.ts';

export async function loadJobData(cfg: JobConfig): Promise<Example[]> {
  const d = cfg.data;
  if (d.source === 'synthetic') return syntheticExamples({ count: d.limit, seed: cfg.seed, difficulty: d.difficulty });
  let isDir: boolean;
  try {
    isDir = (await fs.promises.stat(d.path)).isDirectory();
  } catch {
    throw new Error(`data.path ${d.path}: no such file or directory`);
  }
  const file = dataFile(d, isDir);
  const examples =
    d.source === 'gsm8k'
      ? await loadGsm8kJsonl(file, { limit: d.limit, stripCommasAndDollars: d.strip_commas_and_dollars })
      : await loadChatJsonl(file, { limit: d.limit, purpose: cfg.kind });
  if (examples.length === 0) throw new Error(`data.path ${file}: no examples`);
  return examples;
}
