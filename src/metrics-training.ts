/**
 * The training metrics (tandem_train_*), registered on the serving Metrics' registry so that
 * one /metrics scrape shows both. Every series carries the job's adapter name as `adapter`
 * (the model name users request), so a dashboard can plot one job or all of them.
 *
 * Gauges hold the last optimizer step's values (what TRL logs each logging step); counters
 * count steps and skipped steps; step time is a histogram split by phase (rollout, training).
 */
import { Counter, Gauge, Histogram } from 'prom-client';
import type { Registry } from 'prom-client';

const STEP_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600];

export interface StepReport {
  adapter: string;
  step: number;
  loss: number;
  learningRate: number;
  gradNorm: number;
  skipped: boolean;
  adapterVersion: number;
  /** Name -> value for reward, reward_std, kl, clip_ratio/region_mean, completion_length, ... */
  values: Record<string, number>;
  /** Per reward function: mean and std. */
  rewards: Record<string, { mean: number; std: number }>;
  rolloutSeconds: number;
  trainSeconds: number;
}

export class TrainingMetrics {
  readonly step: Gauge<'adapter'>;
  readonly steps: Counter<'adapter'>;
  readonly skippedSteps: Counter<'adapter'>;
  readonly loss: Gauge<'adapter'>;
  readonly learningRate: Gauge<'adapter'>;
  readonly gradNorm: Gauge<'adapter'>;
  readonly reward: Gauge<'adapter'>;
  readonly rewardStd: Gauge<'adapter'>;
  readonly rewardByFunction: Gauge<'adapter' | 'reward'>;
  readonly rewardStdByFunction: Gauge<'adapter' | 'reward'>;
  readonly kl: Gauge<'adapter'>;
  readonly clipRatio: Gauge<'adapter'>;
  readonly completionLength: Gauge<'adapter'>;
  readonly rolloutTokensPerSecond: Gauge<'adapter'>;
  readonly stepSeconds: Histogram<'adapter' | 'phase'>;
  readonly adapterVersion: Gauge<'adapter'>;
  readonly jobsRunning: Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    const gauge = (name: string, help: string): Gauge<'adapter'> => new Gauge({ name, help, labelNames: ['adapter'], registers });
    this.step = gauge('tandem_train_step', 'Optimizer steps completed by the job.');
    this.steps = new Counter({ name: 'tandem_train_steps_total', help: 'Optimizer steps run (skipped ones included).', labelNames: ['adapter'], registers });
    this.skippedSteps = new Counter({
      name: 'tandem_train_skipped_steps_total',
      help: 'Steps skipped because the loss or a gradient was not finite.',
      labelNames: ['adapter'],
      registers,
    });
    this.loss = gauge('tandem_train_loss', 'Loss of the last step.');
    this.learningRate = gauge('tandem_train_learning_rate', 'Learning rate of the last step.');
    this.gradNorm = gauge('tandem_train_grad_norm', 'Global gradient norm of the last step, before clipping.');
    this.reward = gauge('tandem_train_reward', 'Mean total reward of the last generation batch (GRPO).');
    this.rewardStd = gauge('tandem_train_reward_std', 'Standard deviation of the total reward of the last generation batch (GRPO).');
    this.rewardByFunction = new Gauge({
      name: 'tandem_train_reward_function',
      help: 'Mean of one reward function over the last generation batch (unweighted).',
      labelNames: ['adapter', 'reward'],
      registers,
    });
    this.rewardStdByFunction = new Gauge({
      name: 'tandem_train_reward_function_std',
      help: 'Standard deviation of one reward function over the last generation batch.',
      labelNames: ['adapter', 'reward'],
      registers,
    });
    this.kl = gauge('tandem_train_kl', 'Mean per-token KL to the reference model (k3 estimator; GRPO with beta > 0).');
    this.clipRatio = gauge('tandem_train_clip_ratio', 'Share of completion tokens whose ratio was clipped (GRPO).');
    this.completionLength = gauge('tandem_train_completion_length', 'Mean completion length in tokens of the last generation batch.');
    this.rolloutTokensPerSecond = gauge('tandem_train_rollout_tokens_per_second', 'Completion tokens per second of the last rollout.');
    this.stepSeconds = new Histogram({
      name: 'tandem_train_step_seconds',
      help: 'Seconds per step by phase: rollout (generation, rewards) and training (forward, backward, optimizer).',
      labelNames: ['adapter', 'phase'],
      buckets: STEP_BUCKETS,
      registers,
    });
    this.adapterVersion = gauge('tandem_train_adapter_version', 'Version number of the adapter the job last published.');
    this.jobsRunning = new Gauge({ name: 'tandem_train_jobs_running', help: 'Training jobs running now.', registers });
  }

  report(r: StepReport): void {
    const a = { adapter: r.adapter };
    this.steps.inc(a);
    if (r.skipped) this.skippedSteps.inc(a);
    this.step.set(a, r.step);
    if (Number.isFinite(r.loss)) this.loss.set(a, r.loss);
    this.learningRate.set(a, r.learningRate);
    if (Number.isFinite(r.gradNorm)) this.gradNorm.set(a, r.gradNorm);
    const v = r.values;
    const set = (g: Gauge<'adapter'>, x: number | undefined): void => {
      if (x !== undefined && Number.isFinite(x)) g.set(a, x);
    };
    set(this.reward, v.reward);
    set(this.rewardStd, v.reward_std);
    set(this.kl, v.kl);
    set(this.clipRatio, v['clip_ratio/region_mean']);
    set(this.completionLength, v.completion_length);
    set(this.rolloutTokensPerSecond, v.rollout_tokens_per_second);
    for (const [name, m] of Object.entries(r.rewards)) {
      if (Number.isFinite(m.mean)) this.rewardByFunction.set({ ...a, reward: name }, m.mean);
      if (Number.isFinite(m.std)) this.rewardStdByFunction.set({ ...a, reward: name }, m.std);
    }
    if (r.rolloutSeconds > 0) this.stepSeconds.observe({ ...a, phase: 'rollout' }, r.rolloutSeconds);
    this.stepSeconds.observe({ ...a, phase: 'training' }, r.trainSeconds);
    this.adapterVersion.set(a, r.adapterVersion);
  }
}
