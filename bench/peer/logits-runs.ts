/**
 * Tandem's logits for every prompt of a file, three ways, from one model load (a 3B model takes
 * seconds to load; `tandem logits` would load it once per prompt):
 *   <prefix>.<i>.npy         one prefill of the whole prompt (what `tandem logits` does)
 *   <prefix>.<i>.step.npy    the first half as a prefill, then one token per forward reading the
 *                            cached blocks (the serving decode path: paged, split-K attention)
 *   <prefix>.<i>.packed.npy  every prompt packed into one forward (variable-length batch)
 * Each is float32 [tokens, vocab]; all three should equal transformers' logits of the prompt.
 *
 *   node --import tsx bench/peer/logits-runs.ts --model DIR --prompts FILE --prefix PATH [--backend cuda]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createBackend } from '../../src/backend/index.ts';
import type { KvCache } from '../../src/backend/backend.ts';
import { choiceOption } from '../../src/cli/args.ts';
import { BlockPool } from '../../src/engine/block-pool.ts';
import { loadModel } from '../../src/model/load.ts';
import { packBatch, type SequenceSlice } from '../../src/model/transformer.ts';
import { writeNpyF32 } from '../../src/util/npy.ts';

const BLOCK = 16;

const { values } = parseArgs({
  options: { model: { type: 'string' }, prompts: { type: 'string' }, prefix: { type: 'string' }, backend: { type: 'string' } },
});
if (!values.model || !values.prompts || !values.prefix) throw new Error('--model DIR, --prompts FILE and --prefix PATH are required');
const backend = createBackend(choiceOption('backend', values.backend, ['cpu', 'cuda', 'auto'] as const, 'auto'));
const t0 = performance.now();
const { model, config } = loadModel(values.model, backend);
const V = config.vocabSize;
const prompts = readFileSync(values.prompts, 'utf8')
  .split('\n')
  .filter((l) => l.trim() !== '')
  .map((l, i) =>
    l.split(',').map((s) => {
      const id = Number(s);
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`--prompts line ${i + 1}: '${s}' is not a token id below ${V}`);
      return id;
    }),
  );
const loaded = performance.now();

const blocksFor = (n: number): number => Math.ceil(n / BLOCK);
const totalBlocks = prompts.reduce((a, p) => a + blocksFor(p.length), 0);
const pool = new BlockPool(totalBlocks, BLOCK);
const cache: KvCache = backend.allocKvCache(model.kvCacheSpec(totalBlocks, BLOCK));

/** Forward `slices` (all positions' logits) and return the rows as one host array. */
async function run(slices: SequenceSlice[]): Promise<Float32Array> {
  const logits = model.forward(packBatch(slices, BLOCK), cache);
  const host = (await backend.download(logits)) as Float32Array;
  backend.resetScratch();
  return host;
}

for (const [i, ids] of prompts.entries()) {
  const table = pool.allocate(blocksFor(ids.length));
  writeNpyF32(`${values.prefix}.${i}.npy`, await run([{ newTokens: ids, numCached: 0, blockTable: table, allLogits: true }]), [ids.length, V]);

  // Same blocks again: the prefill of the first half overwrites them, then each decode step
  // appends one token and reads everything before it from the cache.
  const steps = new Float32Array(ids.length * V);
  const half = Math.ceil(ids.length / 2);
  steps.set(await run([{ newTokens: ids.slice(0, half), numCached: 0, blockTable: table, allLogits: true }]), 0);
  for (let p = half; p < ids.length; p++) steps.set(await run([{ newTokens: [ids[p]], numCached: p, blockTable: table }]), p * V);
  writeNpyF32(`${values.prefix}.${i}.step.npy`, steps, [ids.length, V]);
  pool.release(table);
}

const tables = prompts.map((p) => pool.allocate(blocksFor(p.length)));
const packed = await run(prompts.map((ids, i) => ({ newTokens: ids, numCached: 0, blockTable: tables[i], allLogits: true })));
let row = 0;
for (const [i, ids] of prompts.entries()) {
  writeNpyF32(`${values.prefix}.${i}.packed.npy`, packed.subarray(row * V, (row + ids.length) * V), [ids.length, V]);
  row += ids.length;
}
backend.freeKvCache(cache);
process.stdout.write(
  `${values.model}: ${prompts.length} prompts on ${backend.name} (load ${((loaded - t0) / 1000).toFixed(1)} s, ` +
    `logits ${((performance.now() - loaded) / 1000).toFixed(1)} s)\n`,
);
