/**
 * The training jobs of one server, by id: what the admin API drives.
 *
 * One job trains at a time (one device: two jobs would only halve each other's speed and
 * double the memory); later jobs wait as 'queued' and start, in order, when the running one
 * ends. A paused job keeps its place (and its device memory) until resumed or stopped.
 *
 * Every job leaves a record in `dir` (job-records.ts), rewritten when its status changes and
 * every few seconds while it steps. A new manager lists the records it finds; jobs that were
 * unfinished come back 'interrupted'. resume() of an interrupted, stopped or failed job starts
 * a new TrainingJob with the same id and config, which continues from the newest checkpoint in
 * its output_dir (TrainingJob loads it itself).
 */
import fs from 'node:fs';
import path from 'node:path';
import { JobConfigError, parseJobConfig } from './job-config.ts';
import type { JobConfig } from './job-config.ts';
import { JOB_ID, RECORD_METRICS, readJobRecords, writeJobRecord } from './job-records.ts';
import type { JobRecord, ManagedJobStatus } from './job-records.ts';
import { TrainingJob } from './trainer.ts';
import type { TrainerDeps } from './trainer.ts';

export type { JobRecord, ManagedJobStatus } from './job-records.ts';

/** Why the manager refused: the HTTP layer maps these to 404, 409 and 503. */
export class JobManagerError extends Error {
  constructor(
    readonly reason: 'not_found' | 'conflict' | 'unavailable',
    message: string,
  ) {
    super(message);
    this.name = 'JobManagerError';
  }
}

export interface JobManagerOptions {
  /** Where records go (default `<cwd>/runs/jobs`). */
  dir?: string;
  /** Names a job may not publish under (the served base model's name). */
  reservedNames?: readonly string[];
  /** How often progress of a running job is written to its record (default 2000 ms). */
  persistIntervalMs?: number;
}

/** A job as the API shows it: its record, plus the time left and its place in the queue. */
export interface JobView extends JobRecord {
  eta: { seconds_per_step: number; seconds_left: number } | null;
  /** 1 = next to start; null when not queued. */
  queue_position: number | null;
}

interface Entry {
  readonly id: string;
  readonly config: JobConfig;
  readonly createdAt: string;
  /** The live job; null for a record of an earlier process, not resumed. */
  job: TrainingJob | null;
  /** The job's record before its live job started: from disk, or from before a resume. */
  earlier: JobRecord | null;
  /** What was last written to disk. */
  written: JobRecord | null;
  /** Ended by the server's shutdown, not by the user: recorded as 'interrupted'. */
  endedByShutdown: boolean;
  /** Resolves when the live job ends, or at once when there is none. */
  ended: Promise<void>;
  markEnded: () => void;
}

const ACTIVE: readonly ManagedJobStatus[] = ['queued', 'running', 'paused', 'stopping'];

export class JobManager {
  readonly dir: string;
  readonly #deps: TrainerDeps;
  readonly #reserved: readonly string[];
  readonly #entries = new Map<string, Entry>();
  /** Jobs waiting to train, first to start first. */
  readonly #pending: Entry[] = [];
  #running: Entry | null = null;
  #closing = false;
  readonly #timer: NodeJS.Timeout;

  constructor(deps: TrainerDeps, opts: JobManagerOptions = {}) {
    this.#deps = deps;
    this.dir = path.resolve(opts.dir ?? path.join('runs', 'jobs'));
    this.#reserved = opts.reservedNames ?? [];
    for (const { record, interrupted } of readJobRecords(this.dir, (m) => deps.log?.(m))) {
      const entry = newEntry(record.id, record.config, record.created_at, null, record);
      this.#entries.set(record.id, entry);
      // An unfinished job now reads 'interrupted': say so on disk too.
      if (interrupted) this.#persist(entry);
    }
    this.#timer = setInterval(() => this.#persistProgress(), opts.persistIntervalMs ?? 2000);
    this.#timer.unref();
  }

  /**
   * Validate a job config (as parseJobConfig, plus reward names, data files and a free adapter
   * name), queue the job and start it if nothing else trains. Throws JobConfigError (naming the
   * field) or JobManagerError.
   */
  create(json: unknown): JobView {
    this.#checkOpen();
    const config = withAbsolutePaths(parseJobConfig(json));
    const adapter = config.publish.adapter;
    if (this.#reserved.includes(adapter)) {
      const field = (json as { publish?: { adapter?: unknown } })?.publish?.adapter != null ? 'publish.adapter' : 'name';
      throw new JobConfigError(field, `"${adapter}" is the base model's name; the trained adapter needs a name of its own`);
    }
    checkFilesExist(config);
    this.#checkNoConflict(config, null);
    const id = this.#newId();
    const job = new TrainingJob(config, this.#deps, { id }); // throws JobConfigError for an unknown reward
    const entry = newEntry(id, config, job.createdAt, job, null);
    this.#entries.set(id, entry);
    this.#pending.push(entry);
    this.#persist(entry);
    this.#pump();
    return this.#view(entry);
  }

  get(id: string): JobView | undefined {
    const entry = this.#entries.get(id);
    return entry ? this.#view(entry) : undefined;
  }

  /** Every job, oldest first. */
  list(): JobView[] {
    return [...this.#entries.values()].sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0)).map((e) => this.#view(e));
  }

  /** The job (queued, running or paused) that publishes `adapter`, if any. */
  activeJobFor(adapter: string): string | null {
    for (const e of this.#entries.values()) if (e.config.publish.adapter === adapter && ACTIVE.includes(this.#status(e))) return e.id;
    return null;
  }

  /** Resolves when the job ends, however it ends (at once if it is not live). */
  async done(id: string): Promise<JobView> {
    const entry = this.#entry(id);
    await entry.ended;
    return this.#view(entry);
  }

  /** Pause a running job after its current step. */
  pause(id: string): JobView {
    const entry = this.#entry(id);
    const status = this.#status(entry);
    if (status !== 'running' || !entry.job?.pause()) throw new JobManagerError('conflict', `job ${id} is ${status}; only a running job can be paused`);
    this.#persist(entry);
    return this.#view(entry);
  }

  /**
   * Resume a paused job; or start again an interrupted, stopped or failed one from the newest
   * checkpoint in its output_dir (queued behind a running job, if any).
   */
  resume(id: string): JobView {
    const entry = this.#entry(id);
    const status = this.#status(entry);
    if (status === 'paused' && entry.job?.resume()) {
      this.#persist(entry);
      return this.#view(entry);
    }
    if (status !== 'interrupted' && status !== 'stopped' && status !== 'failed') {
      const why = status === 'completed' ? 'it has run all its max_steps; create a new job to train further' : 'only a paused, stopped, failed or interrupted job can be resumed';
      throw new JobManagerError('conflict', `job ${id} is ${status}; ${why}`);
    }
    this.#checkOpen();
    this.#checkNoConflict(entry.config, entry.id);
    const job = new TrainingJob(entry.config, this.#deps, { id });
    entry.earlier = this.#record(entry);
    entry.job = job;
    entry.endedByShutdown = false;
    entry.ended = new Promise((resolve) => (entry.markEnded = resolve));
    this.#pending.push(entry);
    this.#persist(entry);
    this.#pump();
    return this.#view(entry);
  }

  /** Stop a job: a queued one at once; a running or paused one after its step, with a checkpoint. */
  stop(id: string): JobView {
    const entry = this.#entry(id);
    const status = this.#status(entry);
    if (status === 'stopping') return this.#view(entry);
    if (!ACTIVE.includes(status) || !entry.job?.stop()) throw new JobManagerError('conflict', `job ${id} has already ended (${status})`);
    const queued = this.#pending.indexOf(entry);
    if (queued >= 0) {
      this.#pending.splice(queued, 1);
      entry.markEnded();
    }
    this.#persist(entry);
    return this.#view(entry);
  }

  /**
   * For the server's exit: start no more jobs, stop the running one (it checkpoints after its
   * step) and wait for it up to `graceMs`. Stopped and queued jobs read 'interrupted' next time.
   */
  async shutdown(graceMs = 30_000): Promise<void> {
    this.#closing = true;
    clearInterval(this.#timer);
    const running = this.#running;
    if (running?.job) {
      running.endedByShutdown = true;
      running.job.stop();
      this.#persist(running);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
      await Promise.race([running.job.done, late]);
      clearTimeout(timer);
    }
    for (const e of this.#entries.values()) if (e.job) this.#persist(e);
  }

  // ---- internals ----

  #pump(): void {
    if (this.#running || this.#closing) return;
    const next = this.#pending.shift();
    if (!next?.job) return;
    this.#running = next;
    const job = next.job;
    const ended = (): void => {
      if (this.#running === next) this.#running = null;
      this.#persist(next);
      next.markEnded();
      this.#pump();
    };
    job.start().then(ended, (err: unknown) => {
      // start() settles its own errors into status 'failed'; this is the cleanup failing.
      job.error ??= `job ended with an error: ${(err as Error)?.message ?? String(err)}`;
      ended();
    });
    this.#persist(next);
  }

  #entry(id: string): Entry {
    const entry = this.#entries.get(id);
    if (!entry) throw new JobManagerError('not_found', `no job with id "${id}"; GET /admin/jobs lists them`);
    return entry;
  }

  #status(e: Entry): ManagedJobStatus {
    if (!e.job) return earlierRecord(e).status;
    const s = e.job.status;
    return e.endedByShutdown && (s === 'stopped' || s === 'failed') ? 'interrupted' : s;
  }

  #checkOpen(): void {
    if (this.#closing) throw new JobManagerError('unavailable', 'the server is shutting down; it starts no more training jobs');
  }

  /** One live job per adapter name and per output_dir: two would overwrite each other. */
  #checkNoConflict(config: JobConfig, self: string | null): void {
    for (const e of this.#entries.values()) {
      if (e.id === self || !ACTIVE.includes(this.#status(e))) continue;
      const status = this.#status(e);
      if (e.config.publish.adapter === config.publish.adapter) {
        throw new JobManagerError('conflict', `job ${e.id} (${status}) already trains adapter "${config.publish.adapter}"; stop it first or give this job another name / publish.adapter`);
      }
      if (e.config.output_dir === config.output_dir) {
        throw new JobManagerError('conflict', `job ${e.id} (${status}) already writes checkpoints to ${config.output_dir}; give this job another output_dir`);
      }
    }
  }

  #newId(): string {
    for (;;) {
      const id = `job-${Date.now().toString(36)}-${Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, '0')}`;
      if (!this.#entries.has(id) && JOB_ID.test(id)) return id;
    }
  }

  #record(e: Entry): JobRecord {
    const job = e.job;
    if (!job) return earlierRecord(e);
    const before = e.earlier;
    // A resumed job shows the earlier progress until it has loaded its checkpoint.
    const live = before === null || job.resumedFrom !== null || job.publishedVersion !== null;
    return {
      id: e.id,
      name: e.config.name,
      kind: e.config.kind,
      adapter: e.config.publish.adapter,
      status: this.#status(e),
      step: live ? job.step : before.step,
      max_steps: e.config.max_steps,
      skipped_steps: live ? job.skippedSteps : before.skipped_steps,
      created_at: e.createdAt,
      started_at: job.startedAt ?? before?.started_at ?? null,
      finished_at: job.finishedAt,
      updated_at: new Date().toISOString(),
      error: job.error,
      last_checkpoint: job.lastCheckpoint ?? before?.last_checkpoint ?? null,
      resumed_from: job.resumedFrom ?? before?.resumed_from ?? null,
      published_version: job.publishedVersion ?? before?.published_version ?? null,
      output_dir: e.config.output_dir,
      config: e.config,
      metrics: (live ? job.history : before.metrics).slice(-RECORD_METRICS),
    };
  }

  #view(e: Entry): JobView {
    const eta = e.job && this.#status(e) !== 'completed' ? e.job.eta() : null;
    const position = this.#pending.indexOf(e);
    return {
      ...this.#record(e),
      eta: eta ? { seconds_per_step: eta.secondsPerStep, seconds_left: eta.secondsLeft } : null,
      queue_position: position >= 0 ? position + 1 : null,
    };
  }

  #persist(e: Entry): void {
    const record = this.#record(e);
    try {
      writeJobRecord(this.dir, record);
    } catch (err) {
      this.#deps.log?.(`job ${e.id}: could not write its record to ${this.dir}: ${(err as Error).message}`);
    }
    e.written = record;
  }

  /** Rewrite the records of live jobs whose progress moved since their last write. */
  #persistProgress(): void {
    for (const e of this.#entries.values()) {
      const job = e.job;
      if (!job) continue;
      const r = e.written;
      const moved = r === null || r.status !== this.#status(e) || r.step !== job.step || r.last_checkpoint !== job.lastCheckpoint || r.published_version !== job.publishedVersion;
      if (moved && job.startedAt !== null) this.#persist(e);
    }
  }
}

function newEntry(id: string, config: JobConfig, createdAt: string, job: TrainingJob | null, earlier: JobRecord | null): Entry {
  let markEnded!: () => void;
  const ended = job ? new Promise<void>((resolve) => (markEnded = resolve)) : Promise.resolve();
  return { id, config, createdAt, job, earlier, written: null, endedByShutdown: false, ended, markEnded: job ? markEnded : () => {} };
}

function earlierRecord(e: Entry): JobRecord {
  if (e.earlier === null) throw new Error(`job ${e.id} has neither a live job nor a record`);
  return e.earlier;
}

/**
 * Records outlive the working directory the server ran in, so relative paths in a config are
 * made absolute once, when the job is created.
 */
function withAbsolutePaths(config: JobConfig): JobConfig {
  const out = { ...config, output_dir: path.resolve(config.output_dir) } as JobConfig;
  if ('path' in out.data) out.data = { ...out.data, path: path.resolve(out.data.path) };
  if (out.lora.init_from !== undefined) out.lora = { ...out.lora, init_from: path.resolve(out.lora.init_from) };
  return out;
}

/** A missing data file or adapter folder is the user's to fix: a 400 now, not a failed job later. */
function checkFilesExist(config: JobConfig): void {
  if ('path' in config.data && !fs.existsSync(config.data.path)) {
    throw new JobConfigError('data.path', `${config.data.path}: no such file or directory (paths are read on the server)`);
  }
  const from = config.lora.init_from;
  if (from !== undefined && !fs.existsSync(path.join(from, 'adapter_config.json'))) {
    throw new JobConfigError('lora.init_from', `${from} holds no PEFT adapter (adapter_config.json is missing)`);
  }
}
