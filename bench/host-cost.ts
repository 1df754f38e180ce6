/**
 * The host side of a CUDA decode step, without a GPU: the CUDA backend drives a stand-in addon
 * whose functions return at once (every kernel "done" when launched, downloads zeros), so an
 * engine step's wall time here is what the host spends on it: scheduling, step inputs, argument
 * checks, the JS side of every launch, sampling's bookkeeping, detokenizing. A real step costs at
 * least this on the host; where it exceeds the GPU's time for the step (eager steps with many
 * small launches, e.g. LoRA rollouts at small batch), the host sets the pace.
 *
 * The model is `make-model --preset small` with --layers layers (default 36, Qwen2.5-3B's count)
 * and head_dim 128 (Qwen2.5-3B's: the same decode attention path); host work scales with launches,
 * not with tensor sizes. It also counts the launches per step (addon calls that queue GPU work,
 * one or more kernels each; queries and allocation not counted): inside a CUDA graph each is a
 * node the GPU still runs.
 * --cuda-graphs replays decode steps as graphs (the stand-in's replay does nothing): what the host
 * spends per step around one graph launch.
 *
 *   node --import tsx bench/host-cost.ts [--layers 36] [--batch 1,6,64] [--steps 200] [--lora] [--async]
 *     [--cuda-graphs] [--out FILE.json]
 *
 * --lora runs every request on a rank-32 adapter over all seven projections (a GRPO rollout's
 * launches); --async turns on async scheduling (on by default with a GPU).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import { Engine } from '../src/engine/engine.ts';
import type { GenerationRequest } from '../src/engine/types.ts';
import { loadModel } from '../src/model/load.ts';
import { makeModel } from '../src/model/make-model.ts';
import { initLoraAdapter, LORA_TARGETS } from '../src/model/lora.ts';
import { uploadLora } from '../src/model/lora-device.ts';
import { calls, standInAddon } from './stand-in-addon.ts';

const { values: v } = parseArgs({
  options: {
    layers: { type: 'string', default: '36' },
    batch: { type: 'string', default: '1,6,64' },
    steps: { type: 'string', default: '200' },
    lora: { type: 'boolean', default: false },
    async: { type: 'boolean', default: false },
    'cuda-graphs': { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const layers = Number(v.layers);
const batches = v.batch!.split(',').map(Number);
const steps = Number(v.steps);
if (!Number.isInteger(layers) || layers < 1 || batches.some((b) => !Number.isInteger(b) || b < 1) || !Number.isInteger(steps) || steps < 10) {
  throw new Error('usage: bench/host-cost.ts [--layers N >= 1] [--batch 1,6,64] [--steps N >= 10] [--lora] [--async] [--cuda-graphs] [--out FILE.json]');
}

/** after - before, per name. */
function diff(after: Map<string, number>, before: Map<string, number>): Map<string, number> {
  return new Map([...after].map(([name, c]) => [name, c - (before.get(name) ?? 0)]));
}

const dir = mkdtempSync(join(tmpdir(), 'tandem-host-cost-'));
const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1 };
const SAMPLED = { ...GREEDY, temperature: 1, seed: 1 };

try {
  // head_dim 128 as Qwen2.5-3B's, so the decode attention takes the path the real model's does.
  makeModel({ preset: 'small', out: dir, seed: 1, numLayers: layers, headDim: 128 });
  const be = new CudaBackend({ native: standInAddon() });
  const loaded = loadModel(dir, be);
  const results: { name: string; value: number; unit: string }[] = [];
  console.log(`host cost of ${v['cuda-graphs'] ? 'a graph' : 'an eager'} decode step: ${layers} layers, ${v.lora ? 'LoRA r32 on all 7 projections, sampled (T 1)' : 'base model, greedy'}, async scheduling ${v.async ? 'on' : 'off'}; ${cpus()[0]?.model ?? '?'}`);
  console.log('  batch   host ms/step   steps   launches/step (the most frequent)');
  for (const batch of batches) {
    const engine = new Engine(loaded, {
      blockSize: 16,
      numBlocks: batch * Math.ceil((64 + steps + 16) / 16),
      maxNumSeqs: batch,
      maxNumBatchedTokens: Math.max(2048, batch * 64),
      maxWaiting: batch,
      maxModelLen: 64 + steps + 16,
      asyncScheduling: v.async === true,
      cudaGraphs: v['cuda-graphs'] === true,
    });
    try {
      let adapter: string | null = null;
      if (v.lora) {
        const lora = initLoraAdapter(loaded.config, { rank: 32, alpha: 64, targets: [...LORA_TARGETS], useRslora: false }, 5);
        engine.adapters.publish('rollout', uploadLora(be, loaded.config, lora));
        adapter = 'rollout';
      }
      // Times of each step's tokens: the steps after every sequence's prefill.
      const times: number[] = [];
      let callsAt: Map<string, number> | null = null; // the counts when the window opens
      const streams = Array.from({ length: batch }, (_, i) => {
        const req: GenerationRequest = {
          requestId: `b${batch}-${i}`,
          promptIds: Array.from({ length: 64 }, (_, j) => (i * 64 + j) % 1000),
          maxTokens: steps,
          sampling: v.lora ? SAMPLED : GREEDY,
          stop: { strings: [], tokenIds: [], ignoreEos: true },
          logprobs: null,
          priority: 0,
          skipSpecialTokens: true,
          adapter,
        };
        return engine.add(req);
      });
      await Promise.all(
        streams.map(async (stream, i) => {
          for await (const ev of stream) {
            if (i !== 0 || ev.tokenIds.length === 0) continue;
            times.push(performance.now());
            if (times.length === 11) callsAt = new Map(calls);
            if (times.length === steps) callsAt = diff(calls, callsAt!); // the window's calls, before close() adds its own
          }
        }),
      );
      // Skip the first 10 steps (prefill, warm-up of the JIT).
      const window = times.slice(10);
      const n = window.length - 1;
      const ms = (window[n] - window[0]) / n;
      const perStep = [...callsAt!].map(([name, c]) => [name, c / n] as const).filter(([, c]) => c > 0).sort((a, b) => b[1] - a[1]);
      const total = perStep.reduce((a, [, c]) => a + c, 0);
      const top = perStep.slice(0, 6).map(([name, c]) => `${name} ${c.toFixed(1)}`).join(', ');
      console.log(`  ${String(batch).padStart(5)}   ${ms.toFixed(3).padStart(12)}   ${String(n).padStart(5)}   ${total.toFixed(1)} (${top})`);
      results.push({ name: `host_ms_per_step_b${batch}`, value: Number(ms.toFixed(4)), unit: 'ms' });
      results.push({ name: `launches_per_step_b${batch}`, value: Number(total.toFixed(2)), unit: 'launches' });
    } finally {
      await engine.close();
    }
  }
  if (v.out) {
    const command = `node --import tsx bench/host-cost.ts ${process.argv.slice(2).join(' ')}`;
    writeFileSync(v.out, JSON.stringify({ card: `none (host only: ${cpus()[0]?.model ?? '?'})`, date: new Date().toISOString().slice(0, 10), command, results }, null, 2) + '\n');
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
