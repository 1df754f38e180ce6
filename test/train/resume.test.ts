/**
 * Resume after kill -9: `tandem train --config` is SIGKILLed right after a checkpoint lands;
 * running the same command again resumes from the newest checkpoint, and in deterministic mode
 * the steps' losses, rewards and gradient norms equal an uninterrupted run's exactly.
 * Also: a bad job file is refused with the field named, before anything loads.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeModel } from '../../src/model/make-model.ts';
import { OutputWatcher, tandem, tandemSpawn } from '../cli/helpers.ts';

interface Logged {
  step: number;
  loss: number;
  reward: number;
  grad_norm: number;
}

function history(outputDir: string, step: number): Logged[] {
  const state = JSON.parse(readFileSync(join(outputDir, `checkpoint-${step}`, 'trainer_state.json'), 'utf8'));
  return state.log_history.map((r: Logged) => ({ step: r.step, loss: r.loss, reward: r.reward, grad_norm: r.grad_norm }));
}

describe('resume after kill -9', () => {
  let root: string;
  let model: string;
  let rewards: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'tandem-resume-'));
    model = join(root, 'model');
    makeModel({ preset: 'tiny', out: model, seed: 9 });
    rewards = join(root, 'rewards.mjs');
    writeFileSync(rewards, "export function share_of_e({ completion }) { return completion.length ? completion.split('e').length / completion.length : 0; }\n");
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const job = (outputDir: string): string => {
    const file = join(root, `job-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        name: 'resume',
        kind: 'grpo',
        deterministic: true,
        data: { source: 'synthetic', limit: 40 },
        max_steps: 8,
        num_generations: 4,
        max_completion_length: 10,
        max_prompt_length: 64,
        optimizer: { learning_rate: 5e-3 },
        lora: { rank: 4, alpha: 8 },
        save_steps: 2,
        logging_steps: 1,
        output_dir: outputDir,
        seed: 11,
        reward_funcs: ['share_of_e'],
      }),
    );
    return file;
  };

  it('a killed run resumes from its last checkpoint and reproduces the uninterrupted run', async () => {
    const whole = join(root, 'whole');
    const r1 = tandem(['train', '--config', job(whole), '--model', model, '--backend', 'cpu', '--rewards', rewards]);
    assert.equal(r1.code, 0, r1.stderr);
    const reference = history(whole, 8);
    assert.equal(reference.length, 8);

    const killed = join(root, 'killed');
    const config = job(killed);
    const child = tandemSpawn(['train', '--config', config, '--model', model, '--backend', 'cpu', '--rewards', rewards]);
    const out = new OutputWatcher(child);
    await out.waitFor(/step 5\/8/, 60_000); // checkpoint-4 is written before step 5 runs
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    assert.ok(existsSync(join(killed, 'checkpoint-4')), 'no checkpoint-4 before the kill');
    assert.ok(!existsSync(join(killed, 'checkpoint-8')), 'the run finished before it was killed');

    const r2 = tandem(['train', '--config', config, '--model', model, '--backend', 'cpu', '--rewards', rewards]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stdout, /resuming from .*checkpoint-(4|6) at step (4|6)/);
    const resumed = history(killed, 8);
    assert.deepEqual(resumed, reference);
    // The numbers move from step to step, so equality is not two flat lines. (GRPO's loss
    // itself sits near 0 with one iteration: advantages are centred and every ratio is 1.)
    assert.ok(new Set(reference.map((r) => r.grad_norm)).size > 4, JSON.stringify(reference));
    assert.ok(new Set(reference.map((r) => r.reward)).size > 1, JSON.stringify(reference));
  });

  it('a bad job file is refused with the field named', () => {
    const file = join(root, 'bad.json');
    writeFileSync(file, JSON.stringify({ name: 'x', kind: 'grpo', data: { source: 'synthetic' }, max_steps: 0 }));
    const r = tandem(['train', '--config', file, '--model', model]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /max_steps/);
  });
});
