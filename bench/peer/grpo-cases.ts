/**
 * Parity of src/train/grpo.ts with TRL's GRPO math (bench/peer/trl_grpo_loss.py, PyTorch):
 *   node --import tsx bench/peer/grpo-cases.ts write DIR     seeded cases -> DIR/grpo-cases.json
 *   python3 bench/peer/trl_grpo_loss.py DIR                   TRL's loss, autograd grads, advantages
 *   node --import tsx bench/peer/grpo-cases.ts compare DIR    DIR/grpo-results.json vs grpo.ts
 * Compare prints the worst relative error per case and exits 1 above 1e-5.
 * Relative error: |ours - trl| / max(|trl|, 1e-6 * the largest |trl| of that quantity in the case),
 * so values that are 0 in TRL must be 0 (to that floor) here too.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { grpoLoss, groupAdvantages, paddedOffsets, type GrpoLossType, type ScaleRewards } from '../../src/train/grpo.ts';
import { SeededRandom } from '../../src/util/random.ts';

const TOLERANCE = 1e-5;

interface LossCase {
  name: string;
  loss_type: GrpoLossType;
  epsilon: number;
  epsilon_high: number | null;
  beta: number;
  max_completion_length: number;
  gradient_accumulation_steps: number;
  num_items_in_batch: number;
  logp: number[][];
  old: number[][] | null;
  ref: number[][] | null;
  mask: number[][];
  advantages: number[];
}

interface AdvantageCase {
  name: string;
  num_generations: number;
  scale_rewards: ScaleRewards;
  reward_weights: number[];
  func_names: string[];
  /** [completion][function]; null = the function gave no score. */
  rewards_per_func: (number | null)[][];
}

interface Results {
  torch_version: string;
  loss_cases: { name: string; loss: number; grad: number[][]; metrics: Record<string, number | null> }[];
  advantage_cases: { name: string; advantages: number[]; metrics: Record<string, number | null> }[];
}

function makeLossCases(): LossCase[] {
  const cases: LossCase[] = [];
  let seed = 100;
  for (const lossType of ['grpo', 'bnpo', 'dr_grpo', 'dapo'] as const) {
    for (const beta of [0, 0.04]) {
      for (const offPolicy of [false, true]) {
        for (const epsilonHigh of [null, 0.28]) {
          const rng = new SeededRandom(seed++);
          const B = 5;
          const T = 9;
          // Lengths include an empty completion (all mask 0) and a full one.
          const lengths = [T, 1 + Math.floor(rng.uniform() * (T - 1)), 0, 4, 2 + Math.floor(rng.uniform() * (T - 2))];
          const rows = (f: (s: number, t: number) => number): number[][] =>
            Array.from({ length: B }, (_, s) => Array.from({ length: T }, (_, t) => f(s, t)));
          const logp = rows(() => -0.05 - 2 * Math.abs(rng.normal()));
          // Off-policy ratios spread wide enough that about a third of the tokens clip.
          const old = offPolicy ? rows((s, t) => logp[s][t] - 0.4 * rng.normal()) : null;
          const ref = rows((s, t) => logp[s][t] + 0.3 * rng.normal());
          const mask = rows((s, t) => (t < lengths[s] ? 1 : 0));
          const advantages = Array.from({ length: B }, (_, s) => (s === 3 ? 0 : 1.5 * rng.normal()));
          const tokens = lengths.reduce((a, b) => a + b, 0);
          cases.push({
            name: `${lossType} beta=${beta} ${offPolicy ? 'off-policy' : 'on-policy'} epsHigh=${epsilonHigh ?? 'eps'}`,
            loss_type: lossType,
            epsilon: 0.2,
            epsilon_high: epsilonHigh,
            beta,
            max_completion_length: 12,
            gradient_accumulation_steps: 3,
            // As if this micro-batch were one of three of the generation batch.
            num_items_in_batch: 3 * tokens,
            logp,
            old,
            ref: beta !== 0 ? ref : null,
            mask,
            advantages,
          });
        }
      }
    }
  }
  return cases;
}

function makeAdvantageCases(): AdvantageCase[] {
  const cases: AdvantageCase[] = [];
  let seed = 500;
  for (const scale of ['group', 'batch', 'none'] as const) {
    for (const withNone of [false, true]) {
      const rng = new SeededRandom(seed++);
      const G = 4;
      const N = 4 * G;
      const funcNames = ['correct', 'format', 'length'];
      const rows: (number | null)[][] = [];
      for (let i = 0; i < N; i++) {
        const p = Math.floor(i / G);
        rows.push([
          p === 1 ? 2 : rng.uniform() < 0.5 ? 2 : 0, // prompt 1: every completion correct (zero std if alone)
          Math.round(rng.uniform() * 4) / 8,
          rng.normal(),
        ]);
      }
      if (withNone) {
        rows[0][2] = null; // one function gave no score
        rows[5] = [null, null, null]; // no function did: unscorable
        for (let i = 9; i < 12; i++) rows[i] = [null, null, null]; // prompt 2 keeps one scored completion
      }
      cases.push({
        name: `scale=${scale}${withNone ? ' with None scores' : ''}`,
        num_generations: G,
        scale_rewards: scale,
        reward_weights: [1, 0.5, -0.25],
        func_names: funcNames,
        rewards_per_func: rows,
      });
    }
    // A single reward function with a zero-std group.
    const rng = new SeededRandom(seed++);
    cases.push({
      name: `scale=${scale} one function, zero-std group`,
      num_generations: 3,
      scale_rewards: scale,
      reward_weights: [1],
      func_names: ['r'],
      rewards_per_func: Array.from({ length: 9 }, (_, i) => [i < 3 ? 1 : Math.round(rng.uniform() * 3)]),
    });
  }
  return cases;
}

/** Worst relative error over a list of (ours, theirs) pairs; null in theirs means NaN. */
function worstRelErr(ours: ArrayLike<number>, theirs: readonly (number | null)[]): number {
  let scale = 0;
  for (const v of theirs) if (v !== null) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < theirs.length; i++) {
    const t = theirs[i];
    if (t === null || Number.isNaN(ours[i])) {
      if (!(t === null && Number.isNaN(ours[i]))) return Infinity;
      continue;
    }
    worst = Math.max(worst, Math.abs(ours[i] - t) / Math.max(Math.abs(t), 1e-6 * scale, 1e-300));
  }
  return worst;
}

interface ResultLine {
  name: string;
  value: number;
  unit: string;
  /** What the figure compares against (the results format keeps "peer" for a peer's number). */
  compared_with: string;
}

function compare(dir: string, out: { file: string; card: string } | null): boolean {
  const lines: ResultLine[] = [];
  const cases = JSON.parse(readFileSync(join(dir, 'grpo-cases.json'), 'utf8')) as { loss_cases: LossCase[]; advantage_cases: AdvantageCase[] };
  const results = JSON.parse(readFileSync(join(dir, 'grpo-results.json'), 'utf8')) as Results;
  console.log(`TRL peer: torch ${results.torch_version}`);
  let worstOverall = 0;
  const report = (name: string, parts: Record<string, number>): void => {
    const worst = Math.max(...Object.values(parts));
    worstOverall = Math.max(worstOverall, worst);
    lines.push({ name: `${name}: max relative error`, value: worst, unit: 'relative', compared_with: `TRL GRPOTrainer loss (torch ${results.torch_version})` });
    const detail = Object.entries(parts).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(', ');
    console.log(`${worst <= TOLERANCE ? 'ok  ' : 'FAIL'} ${name}: max rel err ${worst.toExponential(2)} (${detail})`);
  };

  cases.loss_cases.forEach((c, i) => {
    const trl = results.loss_cases[i];
    if (trl?.name !== c.name) throw new Error(`result ${i} is "${trl?.name}", expected "${c.name}"`);
    const B = c.logp.length;
    const T = c.logp[0].length;
    const ours = grpoLoss(
      {
        offsets: paddedOffsets(B, T),
        logp: c.logp.flat(),
        ...(c.old ? { oldLogp: c.old.flat() } : {}),
        ...(c.ref ? { refLogp: c.ref.flat() } : {}),
        mask: c.mask.flat(),
        advantages: c.advantages,
        numItemsInBatch: c.num_items_in_batch,
      },
      {
        lossType: c.loss_type,
        epsilon: c.epsilon,
        ...(c.epsilon_high !== null ? { epsilonHigh: c.epsilon_high } : {}),
        beta: c.beta,
        maxCompletionLength: c.max_completion_length,
        gradientAccumulationSteps: c.gradient_accumulation_steps,
      },
    );
    const m = ours.metrics;
    const names = ['clip_ratio/low_mean', 'clip_ratio/high_mean', 'clip_ratio/region_mean', 'clip_ratio/low_min', 'clip_ratio/high_max'];
    const oursMetrics = [m.clipLowMean, m.clipHighMean, m.clipRegionMean, m.clipLowMin, m.clipHighMax];
    if (c.beta !== 0) {
      names.push('kl');
      oursMetrics.push(m.klMean);
    }
    report(c.name, {
      loss: worstRelErr([ours.loss], [trl.loss]),
      grad: worstRelErr(ours.dLogp, trl.grad.flat()),
      metrics: worstRelErr(oursMetrics, names.map((k) => trl.metrics[k] ?? null)),
    });
  });

  cases.advantage_cases.forEach((c, i) => {
    const trl = results.advantage_cases[i];
    if (trl?.name !== c.name) throw new Error(`advantage result ${i} is "${trl?.name}", expected "${c.name}"`);
    const columns = c.func_names.map((name, k) => ({
      name,
      weight: c.reward_weights[k],
      values: c.rewards_per_func.map((row) => row[k] ?? NaN),
    }));
    const ours = groupAdvantages(columns, { numGenerations: c.num_generations, scaleRewards: c.scale_rewards });
    const m = ours.metrics;
    const names = ['reward', 'reward_std', 'frac_reward_zero_std'];
    const oursMetrics = [m.reward, m.rewardStd, m.fracRewardZeroStd];
    for (const name of c.func_names) {
      names.push(`rewards/${name}/mean`, `rewards/${name}/std`);
      oursMetrics.push(m.perFunction[name].mean, m.perFunction[name].std);
    }
    report(`advantages ${c.name}`, {
      advantages: worstRelErr(ours.advantages, trl.advantages),
      metrics: worstRelErr(oursMetrics, names.map((k) => trl.metrics[k] ?? null)),
    });
  });
  const pass = worstOverall <= TOLERANCE;
  if (out) {
    const doc = {
      card: out.card,
      date: new Date().toISOString().slice(0, 10),
      command: `node --import tsx bench/peer/grpo-cases.ts write DIR && python3 bench/peer/trl_grpo_loss.py DIR && node --import tsx bench/peer/grpo-cases.ts compare DIR --out ${out.file}`,
      results: [{ name: 'worst relative error over all cases', value: worstOverall, unit: 'relative', compared_with: 'TRL 1.10.0.dev0 (f2cd577) compute_loss / advantages' }, ...lines],
    };
    writeFileSync(out.file, JSON.stringify(doc, null, 2) + '\n');
  }
  console.log(`${pass ? 'PASS' : 'FAIL'}: worst relative error ${worstOverall.toExponential(2)} over ${cases.loss_cases.length} loss and ${cases.advantage_cases.length} advantage cases (tolerance ${TOLERANCE})`);
  return pass;
}

const [mode, dir, ...rest] = process.argv.slice(2);
const outAt = rest.indexOf('--out');
const cardAt = rest.indexOf('--card');
if (mode === 'write' && dir) {
  mkdirSync(dir, { recursive: true });
  const cases = { loss_cases: makeLossCases(), advantage_cases: makeAdvantageCases() };
  writeFileSync(join(dir, 'grpo-cases.json'), JSON.stringify(cases));
  console.log(`wrote ${join(dir, 'grpo-cases.json')}: ${cases.loss_cases.length} loss cases, ${cases.advantage_cases.length} advantage cases`);
} else if (mode === 'compare' && dir) {
  const out = outAt >= 0 ? { file: rest[outAt + 1], card: cardAt >= 0 ? rest[cardAt + 1] : 'unknown' } : null;
  process.exit(compare(dir, out) ? 0 : 1);
} else {
  console.error('usage: grpo-cases.ts write DIR | compare DIR [--out FILE --card NAME]');
  process.exit(2);
}
