/**
 * Training actually learns, on the CPU, in seconds (the correctness ladder's last rung):
 * - GRPO on a random tiny model with a reward it can learn (the share of the letter "e" in the
 *   completion text) lifts the mean reward far above its starting spread;
 * - SFT on synthetic arithmetic conversations lowers the held-out loss (assistant tokens of
 *   conversations never trained on) well below where the fresh adapter starts.
 * Both run the real job path: TrainingJob with rollouts through the serving engine, the
 * device queue, checkpoints and publishing.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { Engine } from '../../src/engine/engine.ts';
import { loadModel, type LoadedModel } from '../../src/model/load.ts';
import { uploadLora } from '../../src/model/lora-device.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { packTrainBatch } from '../../src/model/train-batch.ts';
import { TrainableModel } from '../../src/model/train-forward.ts';
import { loadLatestCheckpoint } from '../../src/train/checkpoint.ts';
import { parseJobConfig } from '../../src/train/job-config.ts';
import { createRewardRegistry } from '../../src/train/reward-registry.ts';
import { prepareSftDataset, type SftSequence } from '../../src/train/sft-data.ts';
import { syntheticExamples } from '../../src/train/synthetic.ts';
import { TrainingJob } from '../../src/train/trainer.ts';
import { LORA_TARGETS, initLoraAdapter, type LoraAdapter } from '../../src/model/lora.ts';

function shareOfE(text: string): number {
  if (text.length === 0) return 0;
  let n = 0;
  for (const ch of text) if (ch === 'e') n++;
  return n / text.length;
}

/** Mean NLL per assistant token of `data` under the base model plus `adapter`. */
async function heldOutLoss(m: LoadedModel, adapter: LoraAdapter, data: SftSequence[]): Promise<number> {
  const be = m.model.backend;
  const dev = uploadLora(be, m.config, adapter);
  const trainable = new TrainableModel(m.model);
  const batch = packTrainBatch(data.map((s) => ({ tokens: Array.from(s.tokens), targets: s.lossMask })), m.config.vocabSize);
  const logp = await trainable.forward(batch, dev, { temperature: 1, forBackward: false });
  trainable.free();
  be.free(dev.params);
  let nll = 0;
  for (const x of logp) nll -= x;
  return nll / logp.length;
}

describe('training learns (CPU)', () => {
  let root: string;
  let loaded: LoadedModel;
  let engine: Engine;

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'tandem-learn-'));
    makeModel({ preset: 'tiny', out: join(root, 'model'), seed: 7 });
    loaded = loadModel(join(root, 'model'), new CpuBackend({ threads: 1 }));
    engine = new Engine(loaded, { blockSize: 16, numBlocks: 256, maxNumSeqs: 64, maxNumBatchedTokens: 2048, maxWaiting: 100 });
  });
  after(async () => {
    await engine.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('GRPO raises a learnable reward far beyond its starting spread', async () => {
    const rewards = createRewardRegistry();
    rewards.register('share_of_e', ({ completion }) => shareOfE(completion));
    const config = parseJobConfig({
      name: 'learn-e',
      kind: 'grpo',
      data: { source: 'synthetic', limit: 100 },
      max_steps: 24,
      num_generations: 8,
      max_completion_length: 12,
      max_prompt_length: 64,
      reward_funcs: ['share_of_e'],
      lora: { rank: 8, alpha: 16 },
      optimizer: { learning_rate: 5e-3, lr_scheduler_type: 'constant' },
      output_dir: join(root, 'grpo-runs'),
      logging_steps: 1000,
      save_steps: 1000,
      seed: 3,
    });
    const job = new TrainingJob(config, { loaded, engine, queue: engine.deviceQueue, rewards });
    await job.start();
    assert.equal(job.status, 'completed', job.error ?? '');
    const reward = job.history.map((r) => r.reward as number);
    const spread = job.history[0].reward_std as number;
    const start = reward[0];
    const end = (reward.at(-1)! + reward.at(-2)! + reward.at(-3)!) / 3;
    console.log(`GRPO: reward ${start.toFixed(3)} ± ${spread.toFixed(3)} at step 1 -> ${end.toFixed(3)} over the last 3 steps`);
    assert.ok(end > start + 3 * spread, `reward ${start} ± ${spread} -> ${end}: not beyond the starting spread`);
    assert.equal(job.skippedSteps, 0);
    // Every step published a new version for rollouts; the public name holds the last.
    assert.ok((engine.adapters.get('learn-e')?.version ?? 0) >= 2);
  });

  it('SFT lowers the held-out loss on assistant tokens', async () => {
    const toChat = (seed: number, count: number) =>
      syntheticExamples({ count, seed, difficulty: 'single-digit-add' }).map((e) => ({
        messages: [
          { role: 'user', content: typeof e.prompt === 'string' ? e.prompt : e.prompt.at(-1)!.content },
          { role: 'assistant', content: `The answer is ${e.answer}.` },
        ],
      }));
    const trainFile = join(root, 'sft-train.jsonl');
    writeFileSync(trainFile, toChat(1, 200).map((r) => JSON.stringify(r)).join('\n') + '\n');
    const heldOut = prepareSftDataset(
      toChat(2, 24).map((r, i) => ({ id: `held:${i}`, prompt: r.messages as never })),
      loaded.tokenizer,
    ).sequences;
    const config = parseJobConfig({
      name: 'learn-sft',
      kind: 'sft',
      data: { source: 'chat', path: trainFile },
      max_steps: 30,
      per_device_train_batch_size: 8,
      lora: { rank: 8, alpha: 16 },
      optimizer: { learning_rate: 3e-3, lr_scheduler_type: 'constant' },
      output_dir: join(root, 'sft-runs'),
      logging_steps: 1000,
      save_steps: 1000,
      seed: 5,
    });
    const job = new TrainingJob(config, { loaded, engine, queue: engine.deviceQueue, rewards: createRewardRegistry() });
    // The job's starting adapter: peft's init (B = 0), so exactly the base model.
    const fresh = initLoraAdapter(loaded.config, { rank: 8, alpha: 16, targets: [...LORA_TARGETS], useRslora: false }, 5);
    const before = await heldOutLoss(loaded, fresh, heldOut);
    await job.start();
    assert.equal(job.status, 'completed', job.error ?? '');
    const ckpt = await loadLatestCheckpoint(config.output_dir, loaded.config);
    assert.ok(ckpt, 'no checkpoint written');
    const afterLoss = await heldOutLoss(loaded, ckpt.adapter, heldOut);
    console.log(`SFT: held-out loss ${before.toFixed(3)} -> ${afterLoss.toFixed(3)}; train loss ${job.history[0].loss.toFixed(3)} -> ${job.history.at(-1)!.loss.toFixed(3)}`);
    assert.ok(afterLoss < 0.5 * before, `held-out loss ${before} -> ${afterLoss}`);
  });
});
