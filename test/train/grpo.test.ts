import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  grpoLoss,
  groupAdvantages,
  paddedOffsets,
  type GrpoLossConfig,
  type GrpoLossType,
  type GrpoMicroBatch,
} from '../../src/train/grpo.ts';
import { SeededRandom } from '../../src/util/random.ts';

const LOSS_TYPES: GrpoLossType[] = ['grpo', 'bnpo', 'dr_grpo', 'dapo'];

function close(actual: number, expected: number, tol: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${what}: ${actual} vs ${expected}`);
}

// ---------------------------------------------------------------- advantages

/** The advantage formula written out directly: per group mean, unbiased std by hand. */
function referenceAdvantages(rewards: number[], G: number, scale: 'group' | 'batch' | 'none'): number[] {
  const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
  const sampleStd = (xs: number[]): number => {
    const m = mean(xs);
    return Math.sqrt(xs.reduce((a, x) => a + (x - m) * (x - m), 0) / (xs.length - 1));
  };
  const out: number[] = [];
  for (let p = 0; p < rewards.length / G; p++) {
    const group = rewards.slice(p * G, (p + 1) * G);
    const std = scale === 'batch' ? sampleStd(rewards) : sampleStd(group);
    for (const r of group) out.push(scale === 'none' ? r - mean(group) : (r - mean(group)) / (std + 1e-4));
  }
  return out;
}

describe('groupAdvantages', () => {
  const rewards = [1, 0, 0.5, 2, /* */ 3, 3, 1, 0, /* */ 0, 0, 0, 0];
  for (const scale of ['group', 'batch', 'none'] as const) {
    it(`matches the direct formula with scaleRewards '${scale}'`, () => {
      const { advantages } = groupAdvantages([{ name: 'r', values: rewards }], { numGenerations: 4, scaleRewards: scale });
      const expected = referenceAdvantages(rewards, 4, scale);
      expected.forEach((e, i) => close(advantages[i], e, 1e-12, `advantage ${i}`));
    });
  }

  it("defaults to 'group' scaling", () => {
    const a = groupAdvantages([{ name: 'r', values: rewards }], { numGenerations: 4 }).advantages;
    const b = groupAdvantages([{ name: 'r', values: rewards }], { numGenerations: 4, scaleRewards: 'group' }).advantages;
    assert.deepEqual([...a], [...b]);
  });

  it('gives zero advantages to a group whose rewards are all equal, and counts it in fracRewardZeroStd', () => {
    const r = groupAdvantages([{ name: 'r', values: rewards }], { numGenerations: 4 });
    for (let i = 8; i < 12; i++) assert.equal(r.advantages[i], 0);
    assert.equal(r.metrics.fracRewardZeroStd, 4 / 12);
    // With 'batch' the batch std is not 0, so no completion counts, but the group is still centred to 0.
    const b = groupAdvantages([{ name: 'r', values: rewards }], { numGenerations: 4, scaleRewards: 'batch' });
    for (let i = 8; i < 12; i++) assert.equal(b.advantages[i], 0);
    assert.equal(b.metrics.fracRewardZeroStd, 0);
  });

  it('sums weighted reward columns and reports per-function mean and unbiased std', () => {
    const a = [1, 0, 1, 1];
    const b = [0.5, 0.5, 0, 2];
    const r = groupAdvantages(
      [{ name: 'a', values: a, weight: 2 }, { name: 'b', values: b, weight: -0.5 }],
      { numGenerations: 2, scaleRewards: 'group' },
    );
    const totals = a.map((x, i) => 2 * x - 0.5 * b[i]);
    assert.deepEqual([...r.rewards], totals);
    referenceAdvantages(totals, 2, 'group').forEach((e, i) => close(r.advantages[i], e, 1e-12, `advantage ${i}`));
    close(r.metrics.perFunction.a.mean, 0.75, 1e-12, 'mean a');
    close(r.metrics.perFunction.a.std, Math.sqrt((3 * 0.0625 + 0.5625) / 3), 1e-12, 'std a');
    close(r.metrics.perFunction.b.mean, 0.75, 1e-12, 'mean b');
    close(r.metrics.reward, totals.reduce((x, y) => x + y) / 4, 1e-12, 'reward');
  });

  it('handles NaN scores (None) as TRL: nansum per row, unscored rows out of the statistics and advantage 0', () => {
    // Row 1: only function b scored it. Row 2: no function did.
    const a = [1, NaN, NaN, 4, 2, 6];
    const b = [1, 3, NaN, 1, 1, 1];
    const r = groupAdvantages([{ name: 'a', values: a }, { name: 'b', values: b }], { numGenerations: 3 });
    assert.deepEqual([...r.rewards.slice(0, 2)], [2, 3]);
    assert.ok(Number.isNaN(r.rewards[2]));
    assert.equal(r.advantages[2], 0);
    // Group 0's statistics come from rows 0 and 1 only: mean 2.5, std sqrt(0.5).
    close(r.advantages[0], -0.5 / (Math.sqrt(0.5) + 1e-4), 1e-12, 'row 0');
    close(r.advantages[1], 0.5 / (Math.sqrt(0.5) + 1e-4), 1e-12, 'row 1');
    referenceAdvantages([5, 3, 7], 3, 'group').forEach((e, i) => close(r.advantages[3 + i], e, 1e-12, `row ${3 + i}`));
    close(r.metrics.perFunction.a.mean, (1 + 4 + 2 + 6) / 4, 1e-12, 'mean of a skips NaN');
    close(r.metrics.reward, (2 + 3 + 5 + 3 + 7) / 5, 1e-12, 'reward skips the unscored row');
  });

  it('gives 0 where a group has a single scored completion (no sample std), in every mode', () => {
    for (const scale of ['group', 'batch', 'none'] as const) {
      const r = groupAdvantages([{ name: 'r', values: [NaN, 5, 1, 2] }], { numGenerations: 2, scaleRewards: scale });
      assert.equal(r.advantages[0], 0, scale);
      assert.equal(r.advantages[1], 0, scale);
      assert.notEqual(r.advantages[2], 0, scale);
    }
  });

  it('rejects bad shapes and options with the argument named', () => {
    assert.throws(() => groupAdvantages([{ name: 'r', values: [1, 2, 3] }], { numGenerations: 2 }), /numGenerations 2/);
    assert.throws(() => groupAdvantages([], { numGenerations: 2 }), /columns is empty/);
    assert.throws(
      () => groupAdvantages([{ name: 'a', values: [1, 2] }, { name: 'b', values: [1] }], { numGenerations: 2 }),
      /reward "b" has 1 values/,
    );
    assert.throws(
      () => groupAdvantages([{ name: 'a', values: [1, 2] }], { numGenerations: 2, scaleRewards: 'x' as 'none' }),
      /scaleRewards/,
    );
  });
});

// ---------------------------------------------------------------- loss: hand-computed cases

describe('grpoLoss normalisation, by hand (2 sequences of 3 tokens, ratio 1)', () => {
  // A = [2, -1]; sequence 0 has 2 tokens in the mask, sequence 1 has 3. Without oldLogp each
  // token's loss is -A and its gradient -A times the sequence's weight.
  const batch: GrpoMicroBatch = {
    offsets: paddedOffsets(2, 3),
    logp: [-1, -2, -3, -0.5, -0.25, -4],
    mask: [1, 1, 0, 1, 1, 1],
    advantages: [2, -1],
    numItemsInBatch: 10,
  };
  const cases: { type: GrpoLossType; ga?: number; loss: number; g0: number; g1: number }[] = [
    // grpo: mean over sequences of per-sequence means: (-2 + 1) / 2
    { type: 'grpo', loss: -0.5, g0: -2 / (2 * 2), g1: 1 / (2 * 3) },
    { type: 'grpo', ga: 2, loss: -0.25, g0: -2 / (2 * 2 * 2), g1: 1 / (2 * 3 * 2) },
    // bnpo: (-4 + 3) / 5 tokens
    { type: 'bnpo', loss: -0.2, g0: -2 / 5, g1: 1 / 5 },
    // dr_grpo: (-4 + 3) / (2 sequences * 4)
    { type: 'dr_grpo', loss: -0.125, g0: -2 / 8, g1: 1 / 8 },
    { type: 'dr_grpo', ga: 4, loss: -0.125 / 4, g0: -2 / 32, g1: 1 / 32 },
    // dapo: (-4 + 3) / 10 tokens in the generation batch; not divided by GA
    { type: 'dapo', loss: -0.1, g0: -0.2, g1: 0.1 },
    { type: 'dapo', ga: 3, loss: -0.1, g0: -0.2, g1: 0.1 },
  ];
  for (const c of cases) {
    it(`${c.type}${c.ga ? ` with ${c.ga} accumulation steps` : ''}`, () => {
      const r = grpoLoss(batch, { lossType: c.type, epsilon: 0.2, beta: 0, maxCompletionLength: 4, gradientAccumulationSteps: c.ga });
      close(r.loss, c.loss, 1e-12, 'loss');
      const expected = [c.g0, c.g0, 0, c.g1, c.g1, c.g1];
      expected.forEach((e, t) => close(r.dLogp[t], e, 1e-7, `dLogp[${t}]`));
      assert.equal(r.metrics.ratioMean, 1);
      assert.equal(r.metrics.clipRegionMean, 0);
    });
  }
});

describe('grpoLoss clipping and KL, by hand', () => {
  it('clips high for A > 0, low for A < 0, and passes the unclipped branch otherwise', () => {
    // Sequence 0 (A = 1): ratios 1.5 (clipped high), 0.5 (unclipped: 0.5 < 0.8 is the min), 1.1.
    // Sequence 1 (A = -1): ratios 0.5 (clipped low), 1.5 (unclipped: -1.5 < -1.2), 1.
    const ratios = [1.5, 0.5, 1.1, 0.5, 1.5, 1];
    const old = [-1, -2, -3, -1, -2, -3];
    const batch: GrpoMicroBatch = {
      offsets: paddedOffsets(2, 3),
      logp: old.map((o, t) => o + Math.log(ratios[t])),
      oldLogp: old,
      mask: [1, 1, 1, 1, 1, 1],
      advantages: [1, -1],
    };
    const r = grpoLoss(batch, { lossType: 'bnpo', epsilon: 0.2, beta: 0 });
    const tokenLoss = [-1.2, -0.5, -1.1, 0.8, 1.5, 1];
    close(r.loss, tokenLoss.reduce((a, b) => a + b) / 6, 1e-12, 'loss');
    const tokenGrad = [0, -0.5, -1.1, 0, 1.5, 1]; // -A * ratio where unclipped
    tokenGrad.forEach((g, t) => close(r.dLogp[t], g / 6, 1e-7, `dLogp[${t}]`));
    close(r.metrics.clipHighMean, 1 / 6, 1e-12, 'high');
    close(r.metrics.clipLowMean, 1 / 6, 1e-12, 'low');
    close(r.metrics.clipRegionMean, 2 / 6, 1e-12, 'region');
    close(r.metrics.clipLowMin, 0, 1e-12, 'low min over sequences');
    close(r.metrics.clipHighMax, 1 / 3, 1e-12, 'high max over sequences');
    close(r.metrics.ratioMean, ratios.reduce((a, b) => a + b) / 6, 1e-12, 'ratio mean');
  });

  it('uses epsilonHigh for the upper bound only', () => {
    const batch: GrpoMicroBatch = {
      offsets: [0, 2],
      logp: [Math.log(1.25), Math.log(0.75)],
      oldLogp: [0, 0],
      mask: [1, 1],
      advantages: [2],
    };
    // 1.25 is inside [0.8, 1.28]; 0.75 < 0.8 but A > 0 so the unclipped branch is the min.
    const r = grpoLoss(batch, { lossType: 'bnpo', epsilon: 0.2, epsilonHigh: 0.28, beta: 0 });
    close(r.loss, -(1.25 * 2 + 0.75 * 2) / 2, 1e-12, 'loss');
    close(r.dLogp[0], (-2 * 1.25) / 2, 1e-7, 'dLogp[0]');
    const tight = grpoLoss(batch, { lossType: 'bnpo', epsilon: 0.2, beta: 0 });
    close(tight.loss, -(1.2 * 2 + 0.75 * 2) / 2, 1e-12, 'loss with epsilonHigh = epsilon');
    assert.equal(tight.dLogp[0], 0);
  });

  it('adds beta times the k3 KL, with its gradient', () => {
    const d = [0.3, -0.2]; // ref - logp
    const logp = [-1, -2];
    const batch: GrpoMicroBatch = {
      offsets: [0, 2],
      logp,
      refLogp: logp.map((l, t) => l + d[t]),
      mask: [1, 1],
      advantages: [0.5],
    };
    const beta = 0.04;
    const r = grpoLoss(batch, { lossType: 'grpo', epsilon: 0.2, beta });
    const kl = d.map((x) => Math.exp(x) - x - 1);
    close(r.loss, (-0.5 * 2 + beta * (kl[0] + kl[1])) / 2, 1e-12, 'loss');
    d.forEach((x, t) => close(r.dLogp[t], (-0.5 + beta * (1 - Math.exp(x))) / 2, 1e-7, `dLogp[${t}]`));
    close(r.metrics.klMean, (kl[0] + kl[1]) / 2, 1e-12, 'kl mean');
    const noKl = grpoLoss(batch, { lossType: 'grpo', epsilon: 0.2, beta: 0 });
    close(noKl.metrics.klMean, (kl[0] + kl[1]) / 2, 1e-12, 'kl is reported whenever refLogp is given');
    assert.ok(Number.isNaN(grpoLoss({ ...batch, refLogp: undefined }, { lossType: 'grpo', epsilon: 0.2, beta: 0 }).metrics.klMean));
  });
});

// ---------------------------------------------------------------- loss: random batches

interface Padded {
  B: number;
  T: number;
  logp: Float64Array;
  old: Float64Array;
  ref: Float64Array;
  mask: Uint8Array;
  adv: Float64Array;
}

/** Random padded batch; old log-probs spread so that some tokens clip. Ratios stay 0.01 away from the clip edges. */
function randomBatch(seed: number, eps: number, epsHigh: number): Padded {
  const rng = new SeededRandom(seed);
  const B = 4;
  const T = 6;
  const logp = new Float64Array(B * T);
  const old = new Float64Array(B * T);
  const ref = new Float64Array(B * T);
  const mask = new Uint8Array(B * T);
  const lengths = [6, 3, 1, 5];
  for (let s = 0; s < B; s++) {
    for (let t = 0; t < T; t++) {
      const i = s * T + t;
      logp[i] = -Math.abs(rng.normal()) - 0.1;
      let ratio: number;
      do ratio = Math.exp(0.35 * rng.normal());
      while (Math.abs(ratio - (1 - eps)) < 0.01 || Math.abs(ratio - (1 + epsHigh)) < 0.01);
      old[i] = logp[i] - Math.log(ratio);
      ref[i] = logp[i] + 0.3 * rng.normal();
      mask[i] = t < lengths[s] ? 1 : 0;
    }
  }
  const adv = Float64Array.from([1.3, -0.7, 0.4, -1.1]);
  return { B, T, logp, old, ref, mask, adv };
}

/** TRL's loss written out over a padded [B, T] batch, independently of src/train/grpo.ts. */
function referenceLoss(p: Padded, logp: Float64Array, cfg: GrpoLossConfig, numItems: number): number {
  const epsHigh = cfg.epsilonHigh ?? cfg.epsilon;
  const ga = cfg.gradientAccumulationSteps ?? 1;
  const perToken = (s: number, t: number): number => {
    const i = s * p.T + t;
    const r = Math.exp(logp[i] - p.old[i]);
    const rc = Math.min(1 + epsHigh, Math.max(1 - cfg.epsilon, r));
    const kl = Math.exp(p.ref[i] - logp[i]) - (p.ref[i] - logp[i]) - 1;
    return -Math.min(r * p.adv[s], rc * p.adv[s]) + cfg.beta * kl;
  };
  let total = 0;
  let tokens = 0;
  let meanOfSeqMeans = 0;
  for (let s = 0; s < p.B; s++) {
    let seq = 0;
    let n = 0;
    for (let t = 0; t < p.T; t++) {
      if (p.mask[s * p.T + t]) {
        seq += perToken(s, t);
        n++;
      }
    }
    total += seq;
    tokens += n;
    meanOfSeqMeans += seq / Math.max(n, 1) / p.B;
  }
  if (cfg.lossType === 'grpo') return meanOfSeqMeans / ga;
  if (cfg.lossType === 'bnpo') return total / Math.max(tokens, 1) / ga;
  if (cfg.lossType === 'dr_grpo') return total / (p.B * cfg.maxCompletionLength!) / ga;
  return total / numItems;
}

function run(p: Padded, logp: Float64Array, cfg: GrpoLossConfig, numItems: number, withOld = true) {
  return grpoLoss(
    {
      offsets: paddedOffsets(p.B, p.T),
      logp,
      ...(withOld ? { oldLogp: p.old } : {}),
      refLogp: p.ref,
      mask: p.mask,
      advantages: p.adv,
      numItemsInBatch: numItems,
    },
    cfg,
  );
}

describe('grpoLoss on random batches with clipping', () => {
  for (const lossType of LOSS_TYPES) {
    for (const beta of [0, 0.04]) {
      const cfg: GrpoLossConfig = { lossType, epsilon: 0.2, epsilonHigh: 0.28, beta, maxCompletionLength: 8, gradientAccumulationSteps: 2 };
      const p = randomBatch(lossType.length * 31 + beta * 1000, 0.2, 0.28);
      const numItems = 40;

      it(`${lossType}, beta ${beta}: loss matches the written-out formula`, () => {
        const r = run(p, p.logp, cfg, numItems);
        close(r.loss, referenceLoss(p, p.logp, cfg, numItems), 1e-12, 'loss');
        assert.ok(r.metrics.clipRegionMean > 0, 'some tokens must clip for this test to mean anything');
        assert.ok(r.metrics.clipRegionMean < 1, 'some tokens must not clip');
      });

      it(`${lossType}, beta ${beta}: dLogp matches central finite differences`, () => {
        const r = run(p, p.logp, cfg, numItems);
        const h = 1e-6;
        for (let i = 0; i < p.logp.length; i++) {
          const plus = Float64Array.from(p.logp);
          const minus = Float64Array.from(p.logp);
          plus[i] += h;
          minus[i] -= h;
          const fd = (run(p, plus, cfg, numItems).loss - run(p, minus, cfg, numItems).loss) / (2 * h);
          assert.ok(Math.abs(r.dLogp[i] - fd) <= 1e-6 * Math.max(1e-3, Math.abs(fd)) + 1e-9, `token ${i}: ${r.dLogp[i]} vs fd ${fd}`);
          if (!p.mask[i]) assert.equal(r.dLogp[i], 0);
        }
      });

      it(`${lossType}, beta ${beta}: without oldLogp, ratio is 1 and the gradient is that at oldLogp = logp`, () => {
        const without = run(p, p.logp, cfg, numItems, false);
        const atSelf = run({ ...p, old: p.logp }, p.logp, cfg, numItems);
        close(without.loss, atSelf.loss, 1e-12, 'loss');
        assert.deepEqual([...without.dLogp], [...atSelf.dLogp]);
        assert.equal(without.metrics.ratioMean, 1);
        assert.equal(without.metrics.clipRegionMean, 0);
        assert.ok(without.dLogp.some((g) => g !== 0));
      });
    }
  }

  it('dapo over micro-batches adds up to the token mean over the whole generation batch', () => {
    const p = randomBatch(5, 0.2, 0.2);
    const cfg: GrpoLossConfig = { lossType: 'dapo', epsilon: 0.2, beta: 0.04 };
    const half = (from: number): GrpoMicroBatch => {
      const span = (a: ArrayLike<number>) => Array.from(a).slice(from * p.T, (from + 2) * p.T);
      return {
        offsets: paddedOffsets(2, p.T),
        logp: span(p.logp),
        oldLogp: span(p.old),
        refLogp: span(p.ref),
        mask: span(p.mask),
        advantages: [p.adv[from], p.adv[from + 1]],
        numItemsInBatch: p.mask.reduce((a, b) => a + b, 0),
      };
    };
    const whole = run(p, p.logp, { ...cfg, lossType: 'bnpo' }, 0);
    close(grpoLoss(half(0), cfg).loss + grpoLoss(half(2), cfg).loss, whole.loss, 1e-12, 'sum of micro-batch losses');
  });
});

describe('grpoLoss input checks', () => {
  const ok: GrpoMicroBatch = { offsets: [0, 2], logp: [-1, -1], mask: [1, 1], advantages: [1] };
  const cfg: GrpoLossConfig = { lossType: 'grpo', epsilon: 0.2, beta: 0 };
  it('names the missing or malformed argument', () => {
    assert.throws(() => grpoLoss(ok, { ...cfg, lossType: 'dapo' }), /numItemsInBatch is required/);
    assert.throws(() => grpoLoss({ ...ok, numItemsInBatch: 1 }, { ...cfg, lossType: 'dapo' }), /numItemsInBatch 1 is less/);
    assert.throws(() => grpoLoss(ok, { ...cfg, lossType: 'dr_grpo' }), /maxCompletionLength/);
    assert.throws(() => grpoLoss(ok, { ...cfg, beta: 0.1 }), /refLogp is required/);
    assert.throws(() => grpoLoss({ ...ok, mask: [1, 2] }, cfg), /mask\[1\] is 2/);
    assert.throws(() => grpoLoss({ ...ok, oldLogp: [0] }, cfg), /oldLogp has 1 entries/);
    assert.throws(() => grpoLoss({ ...ok, advantages: [1, 2] }, cfg), /advantages has 2 entries/);
    assert.throws(() => grpoLoss({ ...ok, offsets: [0, 1] }, cfg), /offsets must run from 0 to logp.length/);
    assert.throws(() => grpoLoss(ok, { ...cfg, lossType: 'ppo' as GrpoLossType }), /lossType/);
    assert.throws(() => grpoLoss(ok, { ...cfg, epsilon: -1 }), /epsilon must be/);
  });
});
