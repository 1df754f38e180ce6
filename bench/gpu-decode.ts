/**
 * Decode throughput of Tandem on a model directory and backend, against the card's floor.
 *
 * What it measures is what a user gets: the serving Engine itself (scheduler, packed forward,
 * sampling on the device, detokenizing, token events), without HTTP. For each batch size B it
 * adds B requests at once (distinct random prompts of --prompt-len tokens, greedy, ignore_eos,
 * max_tokens = --steps + 1) to an engine with maxNumSeqs = B, after a short warm-up round of the
 * same B (CUDA graphs for that bucket, scratch sizes). It times the window in which all B
 * sequences decode by when their tokens arrive (the engine overlaps a step's output work with
 * the next step, so a token's arrival says little about which step's start came before it):
 * from the moment every sequence has its first token to the moment the first one has its last,
 * each sequence gets one token per step, so the time between its first and last token in the
 * window, over the tokens between them, is the step time (host work that is not hidden included):
 *   ms/step = sum over sequences of that time / sum of those token gaps,  tokens/s = B / step time.
 * Floors (decode-floor.ts): per step, max(weight + K/V bytes / copy bandwidth, FLOPs / GEMM rate),
 * from --bandwidth-gbs and --gemm-tflops measured on the same card in the same run (by
 * bench/peer/hf_generate.py; --peer FILE supplies them when the flags are left out, and the
 * Hugging Face figures, which become each result's "peer").
 * Also: batch 1 through generateTokens (Transformer.forward + backend.sample, no engine), to show
 * the engine's own cost.
 *
 * Usage: node --import tsx bench/gpu-decode.ts --model DIR [--backend cuda|cpu|auto] [--batch 1,64,256]
 *   [--prompt-len 32] [--steps 128] [--warmup-steps 8] [--max-num-batched-tokens 2048] [--bandwidth-gbs X] [--gemm-tflops Y]
 *   [--peer hf.json] [--card NAME] [--deadline-s S] [--out FILE.json] [--cuda-graphs]
 * TANDEM_ENGINE_OVERLAP=0 runs the engine without step overlap (the A/B baseline; config.measured says so).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import type { Backend } from '../src/backend/backend.ts';
import { createBackend, type BackendChoice } from '../src/backend/index.ts';
import { Engine } from '../src/engine/engine.ts';
import { generateTokens } from '../src/engine/generate-one.ts';
import type { GenerationRequest } from '../src/engine/types.ts';
import { loadModel, type LoadedModel } from '../src/model/load.ts';
import { SeededRandom } from '../src/util/random.ts';
import { decodeCosts, stepFloorSeconds, type CardLimits, type DecodeCosts } from './decode-floor.ts';

const { values: v } = parseArgs({
  options: {
    model: { type: 'string' },
    backend: { type: 'string', default: 'cuda' },
    batch: { type: 'string', default: '1,64,256' },
    'prompt-len': { type: 'string', default: '32' },
    steps: { type: 'string', default: '128' },
    'warmup-steps': { type: 'string', default: '8' },
    'max-num-batched-tokens': { type: 'string', default: '2048' },
    'bandwidth-gbs': { type: 'string' },
    'gemm-tflops': { type: 'string' },
    peer: { type: 'string' },
    card: { type: 'string' },
    'deadline-s': { type: 'string' },
    out: { type: 'string' },
    'cuda-graphs': { type: 'boolean' },
  },
});

function int(name: string, raw: string, min: number): number {
  const x = Number(raw);
  if (!Number.isInteger(x) || x < min) throw new Error(`--${name} must be an integer >= ${min}, got '${raw}'`);
  return x;
}
function positive(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const x = Number(raw);
  if (!(Number.isFinite(x) && x > 0)) throw new Error(`--${name} must be a number > 0, got '${raw}'`);
  return x;
}

if (!v.model) throw new Error('--model DIR is required (e.g. a directory from bench/peer/make_qwen_random.py)');
const backendChoice = v.backend as BackendChoice;
if (!['cpu', 'cuda', 'auto'].includes(backendChoice)) throw new Error(`--backend must be cpu, cuda or auto, got '${v.backend}'`);
const batches = v.batch!.split(',').map((s) => int('batch', s.trim(), 1));
const promptLen = int('prompt-len', v['prompt-len']!, 1);
const steps = int('steps', v.steps!, 2);
const warmupSteps = int('warmup-steps', v['warmup-steps']!, 1);
const maxBatchedTokens = int('max-num-batched-tokens', v['max-num-batched-tokens']!, 1);
const deadlineMs = v['deadline-s'] === undefined ? Infinity : positive('deadline-s', v['deadline-s'])! * 1000;
/** TANDEM_ENGINE_OVERLAP=0: the engine's sequential step order (engine option overlapSteps), to A/B the overlap. */
const overlapSteps = process.env.TANDEM_ENGINE_OVERLAP !== '0';
/** TANDEM_ASYNC_SCHEDULING=0: steps wait for the one before to land (engine option asyncScheduling), to A/B it. */
const asyncScheduling = process.env.TANDEM_ASYNC_SCHEDULING !== '0';

/** The Hugging Face peer's document (bench/peer/hf_generate.py), by result name. */
const peer = new Map<string, number>();
if (v.peer) {
  const doc = JSON.parse(readFileSync(v.peer, 'utf8')) as { results?: { name: string; value: number }[] };
  if (!Array.isArray(doc.results)) throw new Error(`--peer ${v.peer}: no "results" list (expected bench/peer/hf_generate.py output)`);
  for (const r of doc.results) peer.set(r.name, r.value);
}
const bandwidthGbs = positive('bandwidth-gbs', v['bandwidth-gbs']) ?? peer.get('copy_bandwidth');
const gemmTflops = positive('gemm-tflops', v['gemm-tflops']) ?? peer.get('gemm_bf16_8192');
const limits: CardLimits | null = bandwidthGbs && gemmTflops ? { bandwidthGbs, gemmTflops } : null;

const began = performance.now();
const backend: Backend = createBackend(backendChoice);
const loaded = loadModel(v.model, backend);
const loadSeconds = (performance.now() - began) / 1000;
const weightDtype = loaded.model.weights.layers[0].q.dtype;
const kvDtype = loaded.model.kvCacheSpec(1, 16).dtype;
const costs = decodeCosts(loaded.config, weightDtype, kvDtype);
// Prompts from ids the tokenizer has (the model's vocab may be padded past it, as Qwen's is).
const promptVocab = Math.min(loaded.tokenizer.vocabSize, loaded.config.vocabSize);
const rng = new SeededRandom(7);
const randomPrompt = (): number[] => Array.from({ length: promptLen }, () => Math.floor(rng.uniform() * promptVocab));
const GREEDY = { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1 };

interface RoundTiming {
  /** Arrival time of each sequence's tokens. */
  tokenTimes: number[][];
  added: number;
}

async function round(engine: Engine, batch: number, maxTokens: number, tag: string): Promise<RoundTiming> {
  const added = performance.now();
  const streams = Array.from({ length: batch }, (_, i) => {
    const req: GenerationRequest = {
      requestId: `${tag}-${i}`,
      promptIds: randomPrompt(),
      maxTokens,
      sampling: GREEDY,
      stop: { strings: [], tokenIds: [], ignoreEos: true },
      logprobs: null,
      priority: 0,
      skipSpecialTokens: true,
    };
    return engine.add(req);
  });
  const tokenTimes = await Promise.all(
    streams.map(async (stream) => {
      const times: number[] = [];
      for await (const ev of stream) {
        const now = performance.now();
        for (let k = 0; k < ev.tokenIds.length; k++) times.push(now);
      }
      return times;
    }),
  );
  tokenTimes.forEach((t, i) => {
    if (t.length !== maxTokens) throw new Error(`${tag}: request ${i} got ${t.length} tokens, expected ${maxTokens} (ignore_eos)`);
  });
  return { tokenTimes, added };
}

interface BatchResult {
  batch: number;
  /** Steps of the all-decoding window (mean over sequences) and their time. */
  decodeSteps: number;
  decodeSeconds: number;
  floorSeconds: number | null;
  /** From adding the B requests to the last one's first token (prefill of B * promptLen tokens). */
  allFirstTokenMs: number;
}

/** The window in which every sequence decodes, timed by token arrival, and the floor of its steps. */
function analyse(t: RoundTiming, batch: number): BatchResult {
  const from = Math.max(...t.tokenTimes.map((times) => times[0]));
  const to = Math.min(...t.tokenTimes.map((times) => times[times.length - 1]));
  // Per sequence: its first and last token inside [from, to], and the steps between them.
  const spans = t.tokenTimes.map((times) => {
    const first = times.findIndex((time) => time >= from);
    let last = times.length - 1;
    while (last > first && times[last] > to) last--;
    return { first, steps: last - first, seconds: (times[last] - times[first]) / 1000 };
  });
  const steps = spans.map((s) => s.steps);
  if (Math.min(...steps) < 1) throw new Error(`batch ${batch}: no two steps had all ${batch} sequences decoding`);
  // Tokens of one step reach the readers one after the other, so the window's edges may cut
  // between them: a sequence may count one step more or fewer than another, never more.
  if (Math.max(...steps) - Math.min(...steps) > 2) throw new Error(`batch ${batch}: sequences got ${Math.min(...steps)} to ${Math.max(...steps)} tokens in the window, expected one per step`);
  const decodeSteps = steps.reduce((a, b) => a + b, 0) / batch;
  const decodeSeconds = spans.reduce((a, s) => a + s.seconds, 0) / batch;
  let floorSeconds: number | null = null;
  if (limits) {
    // Step j of the window writes sequence i's token (first + 1 + j); the cache then holds its
    // prompt and that many tokens (as for the first token, whose step held the prompt).
    const whole = Math.floor(decodeSteps);
    let floor = 0;
    for (let j = 0; j < whole; j++) floor += stepFloorSeconds(costs, limits, spans.map((s) => promptLen + s.first + 1 + j));
    floorSeconds = (floor / whole) * decodeSteps;
  }
  return { batch, decodeSteps, decodeSeconds, floorSeconds, allFirstTokenMs: from - t.added };
}

async function measureBatch(batch: number): Promise<BatchResult> {
  const blockSize = 16;
  const perSeq = promptLen + steps + 1;
  const engine = new Engine(loaded, {
    blockSize,
    numBlocks: batch * Math.ceil(perSeq / blockSize),
    maxNumSeqs: batch,
    // The serving default: a large batch prefills over several steps, as it would in `tandem serve`
    // (and within the scratch the backend sizes for it); analyse() counts only the steps after.
    maxNumBatchedTokens: maxBatchedTokens,
    maxWaiting: batch,
    maxModelLen: Math.min(loaded.config.maxPositionEmbeddings, perSeq),
    cudaGraphs: v['cuda-graphs'] === true,
    overlapSteps,
    asyncScheduling,
  });
  try {
    await round(engine, batch, warmupSteps, `warm${batch}`);
    return analyse(await round(engine, batch, steps + 1, `b${batch}`), batch);
  } finally {
    await engine.close();
  }
}

/** Batch 1 without the engine: generateTokens' prefill + decode loop. */
async function forwardOnlyBatch1(): Promise<number> {
  const run = async (n: number): Promise<number> => {
    let first = 0;
    let count = 0;
    for await (const _ of generateTokens(loaded.model, randomPrompt(), { maxTokens: n, sampling: GREEDY, stopTokenIds: [] })) {
      if (count++ === 0) first = performance.now();
    }
    return ((count - 1) / (performance.now() - first)) * 1000;
  };
  await run(warmupSteps);
  return run(steps + 1);
}

const measured: BatchResult[] = [];
let forwardOnly: number | null = null;

async function main(): Promise<void> {
  for (const b of batches) {
    if (performance.now() - began > deadlineMs) {
      process.stderr.write(`deadline (--deadline-s): batch ${b} skipped\n`);
      continue;
    }
    const r = await measureBatch(b);
    measured.push(r);
    process.stderr.write(`batch ${b}: ${((b * r.decodeSteps) / r.decodeSeconds).toFixed(1)} tokens/s over ${r.decodeSteps.toFixed(1)} steps\n`);
  }
  if (performance.now() - began <= deadlineMs) forwardOnly = await forwardOnlyBatch1();

  const results: Result[] = [];
  for (const r of measured) {
    const tps: Result = { name: `decode_b${r.batch}_tokens_per_s`, value: round2((r.batch * r.decodeSteps) / r.decodeSeconds), unit: 'tokens/s' };
    const ms: Result = { name: `decode_b${r.batch}_ms_per_step`, value: round2((r.decodeSeconds / r.decodeSteps) * 1000, 3), unit: 'ms' };
    if (r.floorSeconds !== null) {
      tps.floor = round2((r.batch * r.decodeSteps) / r.floorSeconds);
      ms.floor = round2((r.floorSeconds / r.decodeSteps) * 1000, 3);
    }
    const hf = peer.get(`hf_generate_b${r.batch}_tokens_per_s`);
    if (hf !== undefined) tps.peer = hf;
    results.push(tps, ms, { name: `first_token_all_b${r.batch}_ms`, value: round2(r.allFirstTokenMs, 1), unit: 'ms' });
  }
  if (forwardOnly !== null) results.push({ name: 'decode_b1_forward_only_tokens_per_s', value: round2(forwardOnly), unit: 'tokens/s' });

  const card =
    v.card ?? (backend.name === 'cpu' ? `${cpus()[0]?.model ?? 'unknown CPU'} (${cpus().length} cores; CPU backend)` : `unknown (${backend.name}; pass --card)`);
  const doc = {
    card,
    date: new Date().toISOString().slice(0, 10),
    command: `node --import tsx bench/gpu-decode.ts ${process.argv.slice(2).join(' ')}`.trim(),
    model: v.model,
    config: {
      backend: backend.name,
      measured: `Engine (scheduler + forward + device sampling + detokenizer), greedy, ignore_eos; no HTTP${overlapSteps ? '' : '; step overlap off (TANDEM_ENGINE_OVERLAP=0)'}${asyncScheduling ? '' : '; async scheduling off (TANDEM_ASYNC_SCHEDULING=0)'}`,
      batch: batches,
      prompt_len: promptLen,
      steps,
      warmup_steps: warmupSteps,
      max_num_batched_tokens: maxBatchedTokens,
      weight_dtype: weightDtype,
      kv_dtype: kvDtype,
      load_s: round2(loadSeconds, 1),
    },
    floors: {
      bandwidth_gbs: bandwidthGbs ?? null,
      gemm_tflops: gemmTflops ?? null,
      weight_bytes_per_step: costs.weightBytesPerStep,
      kv_bytes_per_position: costs.kvBytesPerPosition,
      linear_flops_per_token: costs.linearFlopsPerToken,
    },
    results,
  };
  if (v.out) writeFileSync(v.out, JSON.stringify(doc, null, 2) + '\n');
  printTable(doc.card, results, costs, limits);
}

const round2 = (x: number, d = 2): number => Number(x.toFixed(d));
type Result = { name: string; value: number; unit: string; floor?: number; peer?: number };

// process.exit either way: the CUDA backend's native threads would keep the process alive.
main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`gpu-decode failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);

function printTable(cardName: string, rs: Result[], c: DecodeCosts, l: CardLimits | null): void {
  const out: string[] = [`${cardName}: ${v.model}, weights ${(c.weightBytesPerStep / 1e9).toFixed(3)} GB ${weightDtype}, KV ${kvDtype}`];
  if (l) out.push(`floors from copy ${l.bandwidthGbs} GB/s and bf16 GEMM ${l.gemmTflops} TFLOP/s`);
  out.push('  batch  tokens/s     ms/step   floor tok/s  % of floor   HF tok/s   x HF');
  for (const r of measured) {
    const tps = rs.find((x) => x.name === `decode_b${r.batch}_tokens_per_s`)!;
    const ms = rs.find((x) => x.name === `decode_b${r.batch}_ms_per_step`)!;
    const pct = tps.floor ? `${((100 * tps.value) / tps.floor).toFixed(1)}%` : '-';
    const x = tps.peer ? `${(tps.value / tps.peer).toFixed(1)}x` : '-';
    out.push(
      `  ${String(r.batch).padStart(5)}  ${tps.value.toFixed(1).padStart(9)}  ${ms.value.toFixed(3).padStart(9)}  ${(tps.floor?.toFixed(1) ?? '-').padStart(11)}  ` +
        `${pct.padStart(10)}  ${(tps.peer?.toFixed(1) ?? '-').padStart(9)}  ${x.padStart(5)}`,
    );
  }
  if (forwardOnly !== null) out.push(`  batch 1 without the engine (generateTokens): ${forwardOnly.toFixed(1)} tokens/s`);
  process.stdout.write(out.join('\n') + '\n');
}
