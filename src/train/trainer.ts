/**
 * A training job's lifecycle and step loop, for GRPO and SFT alike.
 *
 * start() runs the loop in the background: load data, set up the adapter (fresh, from a PEFT
 * directory, or from the newest checkpoint in output_dir), then step until max_steps or stop().
 * Each step ends with the optimizer update; then, as the publish policy says, the adapter is
 * published to the serving engine (a new immutable version; sequences already running keep
 * theirs), a checkpoint is written every save_steps, and the step's numbers go to the history,
 * Prometheus and the progress log. A step whose loss or gradient norm is not finite is skipped
 * (counted) and nothing is published from it.
 *
 * All device work goes through the DeviceQueue shared with the engine, one slice (a layer of
 * the forward or backward) at a time, so chat requests are served between slices.
 */
import type { DeviceQueue } from '../backend/device-queue.ts';
import type { Engine } from '../engine/engine.ts';
import type { LoadedModel } from '../model/load.ts';
import { initLoraAdapter } from '../model/lora.ts';
import type { LoraAdapter } from '../model/lora.ts';
import { cloneDeviceLora } from '../model/lora-device.ts';
import { loadPeftAdapter } from '../model/lora-peft.ts';
import { TrainableModel } from '../model/train-forward.ts';
import type { TrainingMetrics } from '../metrics-training.ts';
import { loadLatestCheckpoint, saveCheckpoint } from './checkpoint.ts';
import type { Json } from './checkpoint.ts';
import { DeviceOptimizer } from './device-optimizer.ts';
import { EpochIterator } from './data.ts';
import type { DataPosition, Example } from './data.ts';
import { accumulateGrpo, generate, promptsPerGeneration } from './grpo-step.ts';
import type { GrpoParams } from './grpo-step.ts';
import { checkRewardNames, rewardSpecs } from './job-config.ts';
import type { GrpoJobConfig, JobConfig, SftJobConfig } from './job-config.ts';
import { loadJobData } from './job-data.ts';
import { learningRate } from './optimizer.ts';
import type { RewardRegistry } from './reward-registry.ts';
import { prepareSftDataset } from './sft-data.ts';
import type { SftSequence } from './sft-data.ts';
import { accumulateSft } from './sft-step.ts';
import type { TrainContext } from './train-context.ts';

export type JobStatus = 'queued' | 'running' | 'paused' | 'stopping' | 'stopped' | 'completed' | 'failed';

export interface TrainerDeps {
  loaded: LoadedModel;
  engine: Engine;
  queue: DeviceQueue;
  rewards: RewardRegistry;
  metrics?: TrainingMetrics;
  /** Progress lines (one per logging step) and warnings. */
  log?: (line: string) => void;
}

/** One step's record: what TRL would log, plus timings and the published version. */
export interface StepRecord {
  step: number;
  time: string;
  loss: number;
  learning_rate: number;
  grad_norm: number;
  skipped: boolean;
  rollout_seconds: number;
  train_seconds: number;
  adapter_version: number | null;
  [metric: string]: number | string | boolean | null;
}

const HISTORY_LIMIT = 1000;

export class TrainingJob {
  readonly id: string;
  status: JobStatus = 'queued';
  /** Optimizer steps done (skipped ones included: they consume their data). */
  step = 0;
  skippedSteps = 0;
  error: string | null = null;
  resumedFrom: string | null = null;
  lastCheckpoint: string | null = null;
  publishedVersion: string | null = null;
  readonly history: StepRecord[] = [];
  readonly createdAt = new Date().toISOString();
  startedAt: string | null = null;
  finishedAt: string | null = null;
  #done: Promise<void> | null = null;
  #stop = false;
  #paused: { promise: Promise<void>; resume: () => void } | null = null;
  /** save_steps came up mid-generation: save at the generation's end. */
  #saveDue = false;
  /** The adapter name rollouts sample from: the public one, or the hidden policy copy. */
  #policy: string | null = null;
  /** Set as soon as the device state exists, so it is freed however the job ends. */
  #ctx: TrainContext | null = null;
  /** The step of the newest checkpoint written or resumed from. */
  #checkpointStep = -1;

  constructor(
    readonly config: JobConfig,
    private readonly deps: TrainerDeps,
    opts: { id?: string } = {},
  ) {
    this.id = opts.id ?? `job-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
    if (config.kind === 'grpo') {
      const err = checkRewardNames(config, deps.rewards);
      if (err) throw err;
    }
  }

  /** Start the loop (once); resolves when the job ends, however it ends. */
  start(): Promise<void> {
    this.#done ??= this.#run();
    return this.#done;
  }

  get done(): Promise<void> {
    return this.#done ?? Promise.resolve();
  }

  pause(): boolean {
    if (this.status !== 'running' || this.#paused) return false;
    let resume!: () => void;
    const promise = new Promise<void>((r) => (resume = r));
    this.#paused = { promise, resume };
    this.status = 'paused';
    return true;
  }

  resume(): boolean {
    if (!this.#paused) return false;
    this.#paused.resume();
    this.#paused = null;
    if (this.status === 'paused') this.status = 'running';
    return true;
  }

  /** Ask the loop to stop after the current step (a checkpoint is written first). */
  stop(): boolean {
    if (['stopped', 'completed', 'failed'].includes(this.status)) return false;
    this.#stop = true;
    this.status = this.status === 'queued' ? 'stopped' : 'stopping';
    this.resume();
    return true;
  }

  /** Seconds per step, averaged over the history, and the time left at that pace. */
  eta(): { secondsPerStep: number; secondsLeft: number } | null {
    const recent = this.history.slice(-20);
    if (recent.length === 0) return null;
    const per = recent.reduce((s, r) => s + r.rollout_seconds + r.train_seconds, 0) / recent.length;
    return { secondsPerStep: per, secondsLeft: per * (this.config.max_steps - this.step) };
  }

  async #run(): Promise<void> {
    if (this.#stop) {
      this.status = 'stopped';
      return;
    }
    this.status = 'running';
    this.startedAt = new Date().toISOString();
    this.deps.metrics?.jobsRunning.inc();
    // Counters start at 0 when a job starts, so a dashboard's rate() has a series before the first skip.
    this.deps.metrics?.steps.inc({ adapter: this.config.publish.adapter }, 0);
    this.deps.metrics?.skippedSteps.inc({ adapter: this.config.publish.adapter }, 0);
    try {
      await this.#loop();
      this.status = this.#stop ? 'stopped' : 'completed';
    } catch (err) {
      this.status = 'failed';
      this.error = (err as Error)?.message ?? String(err);
      this.#log(`job ${this.id} failed: ${this.error}`);
    } finally {
      this.deps.metrics?.jobsRunning.dec();
      this.finishedAt = new Date().toISOString();
      // The hidden rollout copy serves nobody once the job is over.
      this.deps.engine.adapters.unload(policyName(this.config));
      const c = this.#ctx;
      this.#ctx = null;
      if (c) {
        await this.deps.queue.run(() => {
          c.trainable.free();
          c.optimizer.free();
        });
      }
    }
  }

  async #loop(): Promise<void> {
    const { loaded, engine, queue } = this.deps;
    const cfg = this.config;
    const examples = await loadJobData(cfg);
    const ckpt = await loadLatestCheckpoint(cfg.output_dir, loaded.config, { onWarning: (m) => this.#log(m) });
    let adapter: LoraAdapter;
    let position: DataPosition | undefined;
    if (ckpt) {
      adapter = ckpt.adapter;
      this.step = ckpt.step;
      position = ckpt.dataPosition as DataPosition;
      this.resumedFrom = ckpt.dir;
      this.#checkpointStep = ckpt.step;
      for (const m of ckpt.metrics) this.#remember(m as StepRecord);
      this.skippedSteps = this.history.filter((r) => r.skipped).length;
      this.#log(`job ${this.id}: resuming from ${ckpt.dir} at step ${ckpt.step}`);
    } else if (cfg.lora.init_from !== undefined) {
      adapter = loadPeftAdapter(cfg.lora.init_from, loaded.config);
    } else {
      const l = cfg.lora;
      adapter = initLoraAdapter(loaded.config, { rank: l.rank, alpha: l.alpha, targets: l.targets, useRslora: l.use_rslora }, cfg.seed);
    }
    const o = cfg.optimizer;
    const adamw = { lr: o.learning_rate, beta1: o.adam_beta1, beta2: o.adam_beta2, eps: o.adam_epsilon, weightDecay: o.weight_decay };
    const optimizer = await queue.run(() => new DeviceOptimizer(loaded.model.backend, loaded.config, adapter, adamw, ckpt?.optimizer));
    const ctx: TrainContext = { loaded, engine, queue, trainable: new TrainableModel(loaded.model), optimizer };
    this.#ctx = ctx;
    const data = new EpochIterator(examples, { seed: cfg.seed, shuffle: cfg.data.shuffle, start: position });
    // Serve the starting weights, so rollouts (and users) see the policy from step one.
    await this.#publish(ctx, cfg.publish.adapter);
    if (cfg.kind === 'grpo') await this.#grpoLoop(ctx, cfg, data);
    else await this.#sftLoop(ctx, cfg, data);
    // A stop that came while paused ends the loop between steps, after the last step's own
    // checkpoint decision: keep the steps done since the last checkpoint.
    if (this.#stop && this.step > 0 && this.#checkpointStep !== this.step) await this.#checkpoint(ctx, data);
  }

  async #grpoLoop(ctx: TrainContext, cfg: GrpoJobConfig, data: EpochIterator<Example>): Promise<void> {
    const p = grpoParams(cfg);
    const prompts = promptsPerGeneration(p);
    // A generation serves num_iterations optimizer steps (TRL's steps_per_generation x
    // num_iterations). Stops and checkpoints happen only between generations, so a resumed
    // job starts a fresh generation exactly where the uninterrupted one would have.
    while (this.step < cfg.max_steps && !(await this.#shouldStop())) {
      const started = performance.now();
      const gen = await generate(ctx, data.take(prompts), p, {
        step: this.step,
        policy: this.#policy ?? cfg.publish.adapter,
        rewards: this.deps.rewards,
        requestPrefix: `train-${this.id}`,
      });
      let rolloutSeconds = (performance.now() - started) / 1000;
      for (let it = 0; it < p.numIterations && this.step < cfg.max_steps; it++) {
        const trainStarted = performance.now();
        const r = await accumulateGrpo(ctx, gen, p);
        const boundary = it === p.numIterations - 1 || this.step + 1 === cfg.max_steps;
        await this.#finishStep(ctx, r.finite ? r.loss : NaN, { ...gen.metrics, ...r.metrics }, data, rolloutSeconds, trainStarted, boundary);
        rolloutSeconds = 0;
      }
    }
  }

  async #sftLoop(ctx: TrainContext, cfg: SftJobConfig, data: EpochIterator<Example>): Promise<void> {
    const perStep = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps;
    const tok = ctx.loaded.tokenizer;
    while (this.step < cfg.max_steps && !(await this.#shouldStop())) {
      const trainStarted = performance.now();
      const batch: SftSequence[] = prepareSftDataset(data.take(perStep), tok, { maxLength: cfg.max_length }).sequences;
      const r = batch.length === 0 ? { loss: NaN, finite: false, tokens: 0 } : await accumulateSft(ctx, batch, cfg.per_device_train_batch_size);
      await this.#finishStep(ctx, r.finite ? r.loss : NaN, { tokens: r.tokens }, data, 0, trainStarted, true);
    }
  }

  /** Optimizer update, publish, checkpoint, record. */
  async #finishStep(
    ctx: TrainContext,
    loss: number,
    values: Record<string, number>,
    data: EpochIterator<Example>,
    rolloutSeconds: number,
    trainStarted: number,
    /** The data consumed so far is exactly what the steps so far used (a checkpoint may be written). */
    boundary: boolean,
  ): Promise<void> {
    const cfg = this.config;
    const o = cfg.optimizer;
    const lr = learningRate({ lr: o.learning_rate, warmupSteps: o.warmup_steps, totalSteps: cfg.max_steps, kind: o.lr_scheduler_type }, this.step);
    let outcome = { gradNorm: NaN, applied: false };
    if (Number.isFinite(loss)) outcome = await ctx.queue.run(() => ctx.optimizer.apply(lr, o.max_grad_norm));
    else await ctx.queue.run(() => ctx.optimizer.zeroGrads());
    this.step++;
    const skipped = !outcome.applied;
    if (skipped) {
      this.skippedSteps++;
      this.#log(`job ${this.id}: step ${this.step} skipped (loss ${loss}, grad norm ${outcome.gradNorm}); nothing published`);
    }
    const publishDue = this.step % cfg.publish.every_steps === 0 || this.step === cfg.max_steps;
    if (!skipped && publishDue) await this.#publish(ctx, cfg.publish.adapter);
    // Rollouts are on-policy: between public versions they sample from a hidden policy copy.
    if (!skipped && cfg.kind === 'grpo' && !publishDue) await this.#publish(ctx, policyName(cfg), true);
    const trainSeconds = (performance.now() - trainStarted) / 1000;
    const version = this.deps.engine.adapters.get(cfg.publish.adapter)?.version ?? null;
    const record: StepRecord = {
      step: this.step,
      time: new Date().toISOString(),
      loss,
      learning_rate: lr,
      grad_norm: outcome.gradNorm,
      skipped,
      rollout_seconds: rolloutSeconds,
      train_seconds: trainSeconds,
      adapter_version: version,
      ...values,
    };
    this.#remember(record);
    this.deps.metrics?.report({
      adapter: cfg.publish.adapter,
      step: this.step,
      loss,
      learningRate: lr,
      gradNorm: outcome.gradNorm,
      skipped,
      adapterVersion: version ?? 0,
      values,
      rewards: rewardStats(values),
      rolloutSeconds,
      trainSeconds,
    });
    if (this.step % cfg.logging_steps === 0 || this.step === cfg.max_steps || this.step === 1) this.#log(this.#progressLine(record));
    if (this.step % cfg.save_steps === 0) this.#saveDue = true;
    if (boundary && (this.#saveDue || this.step === cfg.max_steps || this.#stop)) {
      await this.#checkpoint(ctx, data);
      this.#saveDue = false;
    }
  }

  async #publish(ctx: TrainContext, name: string, hidden = false): Promise<void> {
    const { engine, queue, loaded } = this.deps;
    if (!(await queue.run(() => ctx.optimizer.weightsFinite()))) {
      // Finite gradients and learning rate keep weights finite, so this is an overflow: stop
      // rather than train on (or serve) garbage. The last checkpoint is the last good state.
      throw new Error(`the adapter's weights are not finite after step ${this.step}; nothing was published (last checkpoint: ${this.lastCheckpoint ?? 'none'})`);
    }
    const copy = await queue.run(() => cloneDeviceLora(loaded.model.backend, loaded.config, ctx.optimizer.lora));
    const v = engine.adapters.publish(name, copy, { hidden });
    if (hidden) this.#policy = name;
    else {
      this.publishedVersion = v.id;
      this.#policy = name;
      // The public version is the newest policy now: the hidden copy is no longer needed.
      if (name !== policyName(this.config)) engine.adapters.unload(policyName(this.config));
    }
  }

  async #checkpoint(ctx: TrainContext, data: EpochIterator<Example>): Promise<void> {
    const [adapter, optimizer] = await this.deps.queue.run(() => Promise.all([ctx.optimizer.adapter(), ctx.optimizer.state()]));
    this.lastCheckpoint = await saveCheckpoint(
      this.config.output_dir,
      {
        step: this.step,
        adapter,
        baseModel: this.deps.loaded.dir,
        optimizer,
        dataPosition: data.position as unknown as Json,
        rngState: { seed: this.config.seed, step: this.step },
        metrics: this.history as unknown as Json[],
        config: this.config as unknown as Json,
      },
      { totalLimit: this.config.save_total_limit, onWarning: (m) => this.#log(m) },
    );
    this.#checkpointStep = this.step;
  }

  async #shouldStop(): Promise<boolean> {
    if (this.#paused) await this.#paused.promise;
    return this.#stop;
  }

  #remember(r: StepRecord): void {
    this.history.push(r);
    if (this.history.length > HISTORY_LIMIT) this.history.splice(0, this.history.length - HISTORY_LIMIT);
  }

  #progressLine(r: StepRecord): string {
    const eta = this.eta();
    const parts = [`step ${r.step}/${this.config.max_steps}`, `loss ${fmt(r.loss)}`];
    if (typeof r.reward === 'number') parts.push(`reward ${fmt(r.reward)} ± ${fmt(r.reward_std as number)}`);
    if (typeof r.kl === 'number') parts.push(`kl ${fmt(r.kl)}`);
    parts.push(`grad ${fmt(r.grad_norm)}`, `lr ${r.learning_rate.toExponential(2)}`);
    parts.push(`step ${(r.rollout_seconds + r.train_seconds).toFixed(2)}s (rollout ${r.rollout_seconds.toFixed(2)}s)`);
    if (eta) parts.push(`eta ${formatSeconds(eta.secondsLeft)}`);
    if (r.skipped) parts.push('SKIPPED');
    return `[${this.config.name}] ${parts.join(' | ')}`;
  }

  #log(line: string): void {
    this.deps.log?.(line);
  }
}

/** The hidden adapter name a GRPO job's rollouts use between public versions. */
export function policyName(cfg: JobConfig): string {
  return `${cfg.publish.adapter}:policy`;
}

export function grpoParams(cfg: GrpoJobConfig): GrpoParams {
  return {
    numGenerations: cfg.num_generations,
    perDeviceTrainBatchSize: cfg.per_device_train_batch_size,
    gradientAccumulationSteps: cfg.gradient_accumulation_steps,
    maxPromptLength: cfg.max_prompt_length,
    maxCompletionLength: cfg.max_completion_length,
    temperature: cfg.temperature,
    topP: cfg.top_p,
    topK: cfg.top_k,
    minP: cfg.min_p,
    repetitionPenalty: cfg.repetition_penalty,
    beta: cfg.beta,
    epsilon: cfg.epsilon,
    epsilonHigh: cfg.epsilon_high,
    lossType: cfg.loss_type,
    scaleRewards: cfg.scale_rewards,
    numIterations: cfg.num_iterations,
    rewards: rewardSpecs(cfg),
    seed: cfg.seed,
  };
}

function rewardStats(values: Record<string, number>): Record<string, { mean: number; std: number }> {
  const out: Record<string, { mean: number; std: number }> = {};
  for (const [k, v] of Object.entries(values)) {
    const m = /^rewards\/(.+)\/(mean|std)$/.exec(k);
    if (!m) continue;
    out[m[1]] ??= { mean: NaN, std: NaN };
    out[m[1]][m[2] as 'mean' | 'std'] = v;
  }
  return out;
}

function fmt(x: number): string {
  return Number.isFinite(x) ? (Math.abs(x) >= 1e-3 || x === 0 ? x.toFixed(4) : x.toExponential(2)) : String(x);
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.round(s % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}
