/**
 * A training job's record on disk: `<dir>/<id>.json`, one JSON object with the job's config,
 * status, progress, timestamps, error, last checkpoint and recent step metrics. The job manager
 * rewrites it whenever the status changes and every few seconds while steps advance, so a
 * server that restarts can list the jobs of its previous life (and resume them from their
 * checkpoints). Each write goes to a temp file that is renamed over the record, so a reader
 * (or a crash) sees the old record or the new one, never half of one.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { parseJobConfig } from './job-config.ts';
import type { JobConfig } from './job-config.ts';
import type { JobStatus, StepRecord } from './trainer.ts';

/** A TrainingJob's status, plus 'interrupted': the process ended while the job was unfinished. */
export type ManagedJobStatus = JobStatus | 'interrupted';

export const FINAL_STATUSES: readonly ManagedJobStatus[] = ['stopped', 'completed', 'failed', 'interrupted'];

/** Step records kept in a record file (the live job keeps more in memory). */
export const RECORD_METRICS = 100;

export interface JobRecord {
  id: string;
  /** The job config's name, kind and the adapter it publishes. */
  name: string;
  kind: 'grpo' | 'sft';
  adapter: string;
  status: ManagedJobStatus;
  /** Optimizer steps done, of max_steps. */
  step: number;
  max_steps: number;
  skipped_steps: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
  error: string | null;
  /** The newest checkpoint directory the job wrote. */
  last_checkpoint: string | null;
  /** The checkpoint the job (last) resumed from. */
  resumed_from: string | null;
  /** The adapter version the job last published, `name@vN`. */
  published_version: string | null;
  output_dir: string;
  config: JobConfig;
  /** The last RECORD_METRICS step records, oldest first. */
  metrics: StepRecord[];
}

/** Job ids name files, so they keep to a safe alphabet. */
export const JOB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const STATUSES = ['queued', 'running', 'paused', 'stopping', 'stopped', 'completed', 'failed', 'interrupted'] as const;
const time = z.string().min(1);

const recordSchema = z.object({
  id: z.string().regex(JOB_ID),
  status: z.enum(STATUSES),
  step: z.int().min(0),
  skipped_steps: z.int().min(0).default(0),
  created_at: time,
  started_at: time.nullable(),
  finished_at: time.nullable(),
  updated_at: time,
  error: z.string().nullable(),
  last_checkpoint: z.string().nullable(),
  resumed_from: z.string().nullable().default(null),
  published_version: z.string().nullable(),
  config: z.unknown(),
  // NaN losses were written as null (JSON has no NaN); they read back as null.
  metrics: z.array(z.record(z.string(), z.union([z.number(), z.string(), z.boolean(), z.null()]))).default([]),
});

/** Writes `<dir>/<id>.json` atomically (temp file + rename). */
export function writeJobRecord(dir: string, record: JobRecord): void {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${record.id}.json`);
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`);
  fs.renameSync(tmp, file);
}

/**
 * Every readable record in `dir` (none if it does not exist), oldest first. A record whose
 * status was not final belonged to a process that died (or was killed) mid-job: it comes back
 * as 'interrupted', with `interrupted` true. Unreadable records are skipped with a warning
 * naming the file.
 */
export function readJobRecords(dir: string, onWarning: (message: string) => void = () => {}): { record: JobRecord; interrupted: boolean }[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const records: { record: JobRecord; interrupted: boolean }[] = [];
  for (const name of names.sort()) {
    const file = path.join(dir, name);
    try {
      records.push(parseRecord(JSON.parse(fs.readFileSync(file, 'utf8')), name));
    } catch (err) {
      onWarning(`job record ${file} skipped: ${(err as Error).message}`);
    }
  }
  return records.sort((a, b) => (a.record.created_at < b.record.created_at ? -1 : a.record.created_at > b.record.created_at ? 1 : 0));
}

function parseRecord(json: unknown, fileName: string): { record: JobRecord; interrupted: boolean } {
  const parsed = recordSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const r = parsed.data;
  if (`${r.id}.json` !== fileName) throw new Error(`its id "${r.id}" does not match the file name`);
  // The stored config is a resolved one; parsing it again checks it and gives the same config.
  const config = parseJobConfig(r.config);
  const interrupted = !FINAL_STATUSES.includes(r.status);
  const record: JobRecord = {
    ...r,
    name: config.name,
    kind: config.kind,
    adapter: config.publish.adapter,
    status: interrupted ? 'interrupted' : r.status,
    max_steps: config.max_steps,
    output_dir: config.output_dir,
    config,
    metrics: r.metrics as StepRecord[],
  };
  return { record, interrupted };
}
