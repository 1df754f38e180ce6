/**
 * CPU speed of the embedded model: prefill tokens/s and batch-1 decode tokens/s.
 * Usage: node --import tsx bench/cpu-decode.ts [--model DIR] [--out FILE.json]
 * Writes {"card","date","command","results":[...]} (card = the CPU model) and prints a table.
 */
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { CpuBackend, cpuThreadsDefault } from '../src/backend/cpu/cpu-backend.ts';
import { generateTokens } from '../src/engine/generate-one.ts';
import { loadModel } from '../src/model/load.ts';
import { DEFAULT_MODEL_DIR } from '../src/paths.ts';
import { SeededRandom } from '../src/util/random.ts';

const { values } = parseArgs({ options: { model: { type: 'string' }, out: { type: 'string' } } });
const modelDir = values.model ?? DEFAULT_MODEL_DIR;
const loaded = loadModel(modelDir, new CpuBackend());
const vocab = loaded.config.vocabSize;
const rng = new SeededRandom(1);
const ids = (n: number): number[] => Array.from({ length: n }, () => Math.floor(rng.uniform() * (vocab - 16)));

async function timeRun(promptLen: number, genTokens: number): Promise<{ prefillMs: number; decodeTps: number }> {
  const start = performance.now();
  let first = 0;
  let n = 0;
  for await (const _ of generateTokens(loaded.model, ids(promptLen), {
    maxTokens: genTokens,
    sampling: { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0 },
    stopTokenIds: [],
  })) {
    if (n++ === 0) first = performance.now();
  }
  const end = performance.now();
  return { prefillMs: first - start, decodeTps: ((n - 1) / (end - first)) * 1000 };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
await timeRun(16, 16); // warm-up: JIT and scratch arena
const decode: number[] = [];
const prefill: number[] = [];
for (let i = 0; i < 5; i++) decode.push((await timeRun(16, 256)).decodeTps);
for (let i = 0; i < 5; i++) prefill.push((512 / (await timeRun(512, 1)).prefillMs) * 1000);

const cpu = cpus()[0]?.model ?? 'unknown CPU';
const doc = {
  card: `${cpu} (${cpus().length} cores; CPU backend, ${cpuThreadsDefault()} thread(s), TANDEM_CPU_THREADS to change)`,
  date: new Date().toISOString().slice(0, 10),
  command: `node --import tsx bench/cpu-decode.ts${values.model ? ` --model ${values.model}` : ''}`,
  model: modelDir,
  results: [
    { name: 'decode_batch1_tokens_per_s', value: Number(median(decode).toFixed(1)), unit: 'tokens/s' },
    { name: 'prefill_512_tokens_per_s', value: Number(median(prefill).toFixed(1)), unit: 'tokens/s' },
  ],
};
if (values.out) writeFileSync(values.out, JSON.stringify(doc, null, 2) + '\n');
console.log(`${doc.card}\n  decode (batch 1, 256 tokens after a 16-token prompt): ${doc.results[0].value} tokens/s (median of 5)`);
console.log(`  prefill (512-token prompt): ${doc.results[1].value} tokens/s (median of 5)`);
