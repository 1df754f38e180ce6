import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseModelConfig } from '../../src/model/config.ts';
import { initLoraAdapter, type LoraAdapter } from '../../src/model/lora.ts';
import { PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, loadPeftAdapter } from '../../src/model/lora-peft.ts';
import {
  OPTIMIZER_FILE,
  TRAINER_STATE_FILE,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  loadLatestCheckpoint,
  saveCheckpoint,
  type CheckpointData,
} from '../../src/train/checkpoint.ts';
import { SeededRandom } from '../../src/util/random.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-ckpt-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
const freshDir = (): string => path.join(tmp, `run-${counter++}`);

// Tiny Qwen2 shapes: C=16, 4 heads of 4, 2 KV heads, F=24, 2 layers.
const TINY_JSON = {
  architectures: ['Qwen2ForCausalLM'],
  vocab_size: 64,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
};
const TINY = parseModelConfig(TINY_JSON, 'tiny');
const SPEC = { rank: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'down_proj'] as ('q_proj' | 'v_proj' | 'down_proj')[], useRslora: false };
// rank * (in + out) per target: q 4*(16+16), v 4*(16+8), down 4*(24+16); two layers.
const PARAMS = 2 * (4 * 32 + 4 * 24 + 4 * 40);

/** Checkpoint contents for `step`, with every value distinct and some awkward floats. */
function contents(step: number, seed = step): CheckpointData {
  const adapter = initLoraAdapter(TINY, SPEC, seed);
  const rng = new SeededRandom(seed + 100);
  for (const layer of adapter.layers) for (const w of layer.values()) w.b.set(rng.normals(w.b.length, 0.1));
  const m = rng.normals(PARAMS, 1e-3);
  const v = Float32Array.from(rng.normals(PARAMS, 1e-4), (x) => x * x);
  // Bit patterns a lossy path would change: -0, the smallest subnormal, the largest float.
  m[0] = -0;
  m[1] = 1.401298464324817e-45;
  v[2] = 3.4028234663852886e38;
  return {
    step,
    adapter,
    baseModel: 'tiny-base',
    optimizer: { m, v, step: step * 2 },
    dataPosition: { epoch: 1, index: step },
    rngState: { seed: 7, draws: [step, 3] },
    metrics: Array.from({ length: step }, (_, i) => ({ step: i + 1, loss: 1 / (i + 1), reward: null })),
    config: { kind: 'grpo', name: 'tiny', nested: { list: [1, 'two', true] } },
  };
}

const bits = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

function assertSameAdapter(got: LoraAdapter, want: LoraAdapter): void {
  assert.deepEqual(got.spec.targets, want.spec.targets);
  assert.equal(got.spec.rank, want.spec.rank);
  assert.equal(got.scale, want.scale);
  assert.equal(got.layers.length, want.layers.length);
  want.layers.forEach((layer, l) => {
    for (const [t, w] of layer) {
      const g = got.layers[l].get(t)!;
      assert.deepEqual(bits(g.a), bits(w.a), `layer ${l} ${t} A`);
      assert.deepEqual(bits(g.b), bits(w.b), `layer ${l} ${t} B`);
    }
  });
}

async function rejectsNaming(promise: Promise<unknown>, ...parts: string[]): Promise<void> {
  await assert.rejects(promise, (e: Error) => {
    for (const p of parts) assert.ok(e.message.includes(p), `message should contain ${JSON.stringify(p)}: ${e.message}`);
    return true;
  });
}

const collect = (): { warnings: string[]; onWarning: (m: string) => void } => {
  const warnings: string[] = [];
  return { warnings, onWarning: (m) => warnings.push(m) };
};
const quiet = { onWarning: (): void => undefined };

describe('saveCheckpoint / loadCheckpoint', () => {
  it('round-trips adapter, m, v and state bit for bit', async () => {
    const out = freshDir();
    const data = contents(3);
    const dir = await saveCheckpoint(out, data);
    assert.equal(dir, path.join(out, 'checkpoint-3'));
    assert.deepEqual(fs.readdirSync(out), ['checkpoint-3'], 'no temp directory is left behind');
    assert.deepEqual(fs.readdirSync(dir).sort(), [PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE].sort());

    const back = await loadCheckpoint(dir, TINY);
    assert.equal(back.step, 3);
    assertSameAdapter(back.adapter, data.adapter);
    assert.deepEqual(bits(back.optimizer.m), bits(data.optimizer.m));
    assert.deepEqual(bits(back.optimizer.v), bits(data.optimizer.v));
    assert.equal(back.optimizer.step, 6);
    assert.deepEqual(back.dataPosition, data.dataPosition);
    assert.deepEqual(back.rngState, data.rngState);
    assert.deepEqual(back.metrics, data.metrics);
    assert.deepEqual(back.config, data.config);
    const pkg = JSON.parse(fs.readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { version: string };
    assert.equal(back.tandemVersion, pkg.version);
    assert.ok(Math.abs(Date.parse(back.created) - Date.now()) < 60_000, back.created);
  });

  it('leaves a plain peft adapter in the checkpoint', async () => {
    const data = contents(1);
    const dir = await saveCheckpoint(freshDir(), data);
    assertSameAdapter(loadPeftAdapter(dir, TINY), data.adapter);
    const peftConfig = JSON.parse(fs.readFileSync(path.join(dir, PEFT_CONFIG_FILE), 'utf8')) as Record<string, unknown>;
    assert.equal(peftConfig.base_model_name_or_path, 'tiny-base');
  });

  it('refuses bad input before writing anything', async () => {
    const out = freshDir();
    const short = contents(1);
    short.optimizer.m = short.optimizer.m.subarray(1);
    await rejectsNaming(saveCheckpoint(out, short), 'optimizer.m', String(PARAMS));
    await rejectsNaming(saveCheckpoint(out, { ...contents(1), rngState: { x: Number.NaN } }), 'rngState');
    await rejectsNaming(saveCheckpoint(out, { ...contents(1), dataPosition: undefined as never }), 'dataPosition');
    await rejectsNaming(saveCheckpoint(out, { ...contents(1), step: -1 }), 'step');
    await rejectsNaming(saveCheckpoint(out, contents(1), { totalLimit: 0 }), 'totalLimit');
    assert.equal(fs.existsSync(out), false);
  });

  it('replaces a checkpoint of the same step and drops later ones from an abandoned run', async () => {
    const out = freshDir();
    for (const step of [1, 2, 3]) await saveCheckpoint(out, contents(step));
    const { warnings, onWarning } = collect();
    // Resumed from 1, the run reaches step 2 again with different weights.
    const redo = contents(2, 99);
    await saveCheckpoint(out, redo, { onWarning });
    assert.deepEqual((await listCheckpoints(out)).map((c) => c.step), [1, 2]);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /checkpoint-3/);
    assertSameAdapter((await loadCheckpoint(path.join(out, 'checkpoint-2'), TINY)).adapter, redo.adapter);
    assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoint-1', 'checkpoint-2']);
  });

  it('keeps only the newest save_total_limit checkpoints', async () => {
    const out = freshDir();
    for (let step = 1; step <= 5; step++) await saveCheckpoint(out, contents(step), { totalLimit: 2 });
    assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoint-4', 'checkpoint-5']);
    // Steps sort as numbers, not strings: 10 is newer than 9.
    await saveCheckpoint(out, contents(9), { totalLimit: 2 });
    await saveCheckpoint(out, contents(10), { totalLimit: 2 });
    assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoint-10', 'checkpoint-9']);
    const all = freshDir();
    for (let step = 1; step <= 3; step++) await saveCheckpoint(all, contents(step));
    assert.equal(fs.readdirSync(all).length, 3, 'no limit keeps every checkpoint');
  });
});

describe('latestCheckpoint and damaged checkpoints', () => {
  async function twoCheckpoints(): Promise<{ out: string; first: string; second: string }> {
    const out = freshDir();
    const first = await saveCheckpoint(out, contents(1));
    const second = await saveCheckpoint(out, contents(2));
    return { out, first, second };
  }

  it('finds the newest checkpoint, or null', async () => {
    assert.equal(await latestCheckpoint(freshDir()), null);
    const { out, second } = await twoCheckpoints();
    assert.equal(await latestCheckpoint(out), second);
    assert.equal((await loadLatestCheckpoint(out, TINY))?.step, 2);
  });

  it('ignores a leftover temp directory, and the next save removes it', async () => {
    const { out, first, second } = await twoCheckpoints();
    // A complete checkpoint that was never renamed into place looks exactly like this.
    fs.renameSync(second, path.join(out, '.checkpoint-2.tmp-AbC123'));
    const { warnings, onWarning } = collect();
    assert.equal(await latestCheckpoint(out, { onWarning }), first);
    assert.deepEqual(warnings, []);
    await saveCheckpoint(out, contents(2));
    assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoint-1', 'checkpoint-2']);
  });

  for (const file of [OPTIMIZER_FILE, PEFT_WEIGHTS_FILE]) {
    it(`falls back past a truncated ${file}, naming it`, async () => {
      const { out, first, second } = await twoCheckpoints();
      const damaged = path.join(second, file);
      fs.truncateSync(damaged, fs.statSync(damaged).size - 100);
      await rejectsNaming(loadCheckpoint(second, TINY), damaged, 'truncated');
      const { warnings, onWarning } = collect();
      assert.equal(await latestCheckpoint(out, { onWarning }), first);
      assert.equal(warnings.length, 1);
      assert.ok(warnings[0].includes(damaged), warnings[0]);
      assert.equal((await loadLatestCheckpoint(out, TINY, quiet))?.step, 1);
    });
  }

  it('falls back past a garbled trainer_state.json, naming it', async () => {
    const { out, first, second } = await twoCheckpoints();
    const state = path.join(second, TRAINER_STATE_FILE);
    const text = fs.readFileSync(state, 'utf8');
    fs.writeFileSync(state, text.slice(0, text.length / 2));
    await rejectsNaming(loadCheckpoint(second, TINY), state, 'not valid JSON');
    const { warnings, onWarning } = collect();
    assert.equal(await latestCheckpoint(out, { onWarning }), first);
    assert.ok(warnings[0].includes(state), warnings[0]);
    // Valid JSON that is not a trainer state is caught too.
    fs.writeFileSync(state, JSON.stringify({ global_step: 2 }));
    await rejectsNaming(loadCheckpoint(second, TINY), state, 'not a Tandem trainer state');
    fs.rmSync(state);
    await rejectsNaming(loadCheckpoint(second, TINY), state, 'missing');
    assert.equal(await latestCheckpoint(out, quiet), first);
  });

  it('catches a flipped byte that keeps the size: loading falls back, naming the file', async () => {
    const { out, second } = await twoCheckpoints();
    const damaged = path.join(second, PEFT_WEIGHTS_FILE);
    const bytes = fs.readFileSync(damaged);
    bytes[bytes.length - 3] ^= 0x10; // inside the last tensor's data
    fs.writeFileSync(damaged, bytes);
    await rejectsNaming(loadCheckpoint(second, TINY), damaged, 'SHA-256');
    const { warnings, onWarning } = collect();
    const loaded = await loadLatestCheckpoint(out, TINY, { onWarning });
    assert.equal(loaded?.step, 1);
    assert.ok(warnings[0].includes(damaged), warnings[0]);
  });

  it('skips a checkpoint whose directory name and recorded step disagree', async () => {
    const { out, first, second } = await twoCheckpoints();
    fs.renameSync(second, path.join(out, 'checkpoint-7'));
    const { warnings, onWarning } = collect();
    assert.equal(await latestCheckpoint(out, { onWarning }), first);
    assert.match(warnings[0], /global_step is 2 but the directory is for step 7/);
  });
});

describe('a crash between writing and renaming', () => {
  it('leaves the previous checkpoint as the one to resume from', async () => {
    const out = freshDir();
    await saveCheckpoint(out, contents(1));
    // A separate process saves step 2 and dies (SIGKILL: no cleanup runs) just before the rename.
    const child = `
      import { saveCheckpoint } from ${JSON.stringify(new URL('../../src/train/checkpoint.ts', import.meta.url).href)};
      import { initLoraAdapter } from ${JSON.stringify(new URL('../../src/model/lora.ts', import.meta.url).href)};
      import { parseModelConfig } from ${JSON.stringify(new URL('../../src/model/config.ts', import.meta.url).href)};
      const cfg = parseModelConfig(${JSON.stringify(TINY_JSON)}, 'tiny');
      const adapter = initLoraAdapter(cfg, ${JSON.stringify(SPEC)}, 2);
      const m = new Float32Array(${PARAMS}), v = new Float32Array(${PARAMS});
      await saveCheckpoint(${JSON.stringify(out)}, {
        step: 2, adapter, baseModel: 'b', optimizer: { m, v, step: 2 },
        dataPosition: null, rngState: null, metrics: [], config: {},
      }, { beforeRename: () => process.kill(process.pid, 'SIGKILL') });
      console.log('renamed: the crash did not happen');
    `;
    const result = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], { encoding: 'utf8' });
    assert.equal(result.signal, 'SIGKILL', `child: ${result.stdout}${result.stderr}`);

    const leftovers = fs.readdirSync(out).filter((n) => n.startsWith('.checkpoint-2.tmp-'));
    assert.equal(leftovers.length, 1, 'the dead save left its temp directory');
    assert.ok(fs.existsSync(path.join(out, leftovers[0], TRAINER_STATE_FILE)), 'and it was complete');
    assert.equal(await latestCheckpoint(out), path.join(out, 'checkpoint-1'));
    const resumed = await loadLatestCheckpoint(out, TINY);
    assert.equal(resumed?.step, 1);

    // The resumed run saves step 2 for real; the dead save's leftovers go.
    await saveCheckpoint(out, contents(2));
    assert.deepEqual(fs.readdirSync(out).sort(), ['checkpoint-1', 'checkpoint-2']);
  });
});
