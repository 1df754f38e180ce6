/**
 * CPU backend op speed at the embedded model's shapes (models/tandem-small: hidden 256, 8 query
 * heads / 2 KV heads of 32, MLP 704, vocab 2048): `linear` and `attention` for a 512-token
 * prefill, a batch-1 decode step and a 32-sequence decode step (contexts of 256), and linear's
 * two backward products (dx = dy w, dw += dy^T x) beside the forward of the same shape, each
 * with 1 thread and with N threads (N = TANDEM_CPU_THREADS, else os.availableParallelism()).
 *
 * Usage: node --import tsx bench/cpu-ops.ts [--threads N] [--filter TEXT] [--ms MS]
 * Prints one line per case: median time per call and GFLOP/s (multiply-adds count 2).
 * Attention FLOPs count the causal work only: 4 * D per (query row, head, visible key).
 */
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import type { AttnMeta, Backend, KvCache, Tensor } from '../src/backend/backend.ts';
import { CpuBackend, cpuThreadsDefault } from '../src/backend/cpu/cpu-backend.ts';
import { SeededRandom } from '../src/util/random.ts';

const { values } = parseArgs({
  options: { threads: { type: 'string' }, filter: { type: 'string' }, ms: { type: 'string' } },
});
const nThreads = values.threads !== undefined ? Number(values.threads) : cpuThreadsDefault();
const budgetMs = values.ms !== undefined ? Number(values.ms) : 300;

const C = 256;
const H = 8;
const Hkv = 2;
const D = 32;
const F = 704;
const V = 2048;
const BLOCK = 16;

interface Case {
  name: string;
  flops: number;
  /** Runs the op once; returns after the output exists (ops are synchronous on the CPU). */
  setup(be: Backend): () => void;
}

const rand = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);

function linearCase(label: string, T: number, K: number, N: number): Case {
  return {
    name: `linear ${label} T=${T} K=${K} N=${N}`,
    flops: 2 * T * K * N,
    setup(be) {
      const w = be.upload(rand(N * K, 1, 0.05), [N, K], 'f32');
      const b = be.upload(rand(N, 2, 0.05), [N], 'f32');
      const xData = rand(T * K, 3);
      return () => {
        const x = be.upload(xData, [T, K], 'f32', 'scratch');
        be.linear(x, w, b);
        be.resetScratch();
      };
    },
  };
}

/** linearBackwardInput (dx = dy @ w) or linearBackwardWeight (dw += dy^T @ x) of a [T, K] x [N, K] linear. */
function linearBackwardCase(kind: 'dx' | 'dw', label: string, T: number, K: number, N: number): Case {
  return {
    name: `linear ${kind} ${label} T=${T} K=${K} N=${N}`,
    flops: 2 * T * K * N,
    setup(be) {
      const w = be.upload(rand(N * K, 1, 0.05), [N, K], 'f32');
      const dw = be.alloc([N, K], 'f32', 'persistent');
      const xData = rand(T * K, 3);
      const dyData = rand(T * N, 4);
      return () => {
        const dy = be.upload(dyData, [T, N], 'f32', 'scratch');
        if (kind === 'dx') be.linearBackwardInput(dy, w);
        else be.linearBackwardWeight(dy, be.upload(xData, [T, K], 'f32', 'scratch'), dw, 1e-3);
        be.resetScratch();
      };
    },
  };
}

/** A linear's forward and both backward products, one shape. */
const linearTraining = (label: string, T: number, K: number, N: number): Case[] => [
  linearCase(label, T, K, N),
  linearBackwardCase('dx', label, T, K, N),
  linearBackwardCase('dw', label, T, K, N),
];

/** S sequences, each with `qlen` new tokens at the end of a context of `ctx`. */
function attentionCase(label: string, S: number, qlen: number, ctx: number): Case {
  let flops = 0;
  for (let i = 0; i < qlen; i++) flops += S * H * 4 * D * (ctx - qlen + i + 1);
  return {
    name: `attention ${label} S=${S} qlen=${qlen} ctx=${ctx}`,
    flops,
    setup(be) {
      const perSeq = Math.ceil(ctx / BLOCK);
      const numBlocks = S * perSeq;
      const cache: KvCache = be.allocKvCache({ numLayers: 1, numBlocks, blockSize: BLOCK, numKvHeads: Hkv, headDim: D, dtype: 'f32' });
      // Blocks interleaved across sequences, as a busy block pool hands them out.
      const tables = new Int32Array(S * perSeq);
      for (let s = 0; s < S; s++) for (let b = 0; b < perSeq; b++) tables[s * perSeq + b] = b * S + s;
      const slots = new Int32Array(S * ctx);
      for (let s = 0; s < S; s++) {
        for (let p = 0; p < ctx; p++) slots[s * ctx + p] = tables[s * perSeq + Math.floor(p / BLOCK)] * BLOCK + (p % BLOCK);
      }
      const kv = [S * ctx, Hkv, D];
      be.writeKv(cache, 0, be.upload(rand(S * ctx * Hkv * D, 4), kv, 'f32', 'scratch'), be.upload(rand(S * ctx * Hkv * D, 5), kv, 'f32', 'scratch'), be.upload(slots, [S * ctx], 'i32', 'scratch'));
      be.resetScratch();
      const qData = rand(S * qlen * H * D, 6);
      const cu = Int32Array.from({ length: S + 1 }, (_, s) => s * qlen);
      const lens = new Int32Array(S).fill(ctx);
      return () => {
        const meta: AttnMeta = {
          cuSeqlensQ: be.upload(cu, [S + 1], 'i32', 'scratch'),
          contextLens: be.upload(lens, [S], 'i32', 'scratch'),
          blockTables: be.upload(tables, [S, perSeq], 'i32', 'scratch'),
          maxSeqlenQ: qlen,
          maxContextLen: ctx,
        };
        const q: Tensor = be.upload(qData, [S * qlen, H, D], 'f32', 'scratch');
        be.attention(q, cache, 0, meta, 1 / Math.sqrt(D));
        be.resetScratch();
      };
    },
  };
}

const linears = (T: number, label: string): Case[] => [
  linearCase(`${label} q/o`, T, C, C),
  linearCase(`${label} k/v`, T, C, Hkv * D),
  linearCase(`${label} gate/up`, T, C, F),
  linearCase(`${label} down`, T, F, C),
  ...(T <= 32 ? [linearCase(`${label} lm_head`, T, C, V)] : []),
];

const cases: Case[] = [
  ...linears(512, 'prefill'),
  attentionCase('prefill', 1, 512, 512),
  ...linears(1, 'decode'),
  attentionCase('decode', 1, 1, 256),
  ...linears(32, 'decode x32'),
  attentionCase('decode x32', 32, 1, 256),
  ...linearTraining('train', 256, 256, 1024),
  ...linearTraining('train gate/up', 512, C, F),
  ...linearTraining('train down', 512, F, C),
].filter((c) => values.filter === undefined || c.name.includes(values.filter));

/**
 * Median ms per call of each runner. Samples (batches of about 20 ms) alternate between the
 * runners, so that a machine whose load changes from second to second (other processes on
 * the other core) weighs on all of them alike.
 */
function time(runs: (() => void)[]): number[] {
  const per = runs.map((run) => {
    const t0 = performance.now();
    let calls = 0;
    while (performance.now() - t0 < 50 || calls < 3) {
      run();
      calls++;
    }
    return (performance.now() - t0) / calls;
  });
  const batch = per.map((ms) => Math.max(1, Math.ceil(20 / ms)));
  const samples: number[][] = runs.map(() => []);
  const start = performance.now();
  while (performance.now() - start < budgetMs * runs.length || samples[0].length < 5) {
    runs.forEach((run, i) => {
      const s = performance.now();
      for (let j = 0; j < batch[i]; j++) run();
      samples[i].push((performance.now() - s) / batch[i]);
    });
  }
  return samples.map((xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]);
}

const threadCounts = nThreads > 1 ? [1, nThreads] : [1];
const backends = threadCounts.map((threads) => new CpuBackend({ threads }));
await Promise.all(backends.map((be) => be.startThreads()));
console.log(`${cpus()[0]?.model ?? 'unknown CPU'} (${cpus().length} cores); threads: ${threadCounts.join(' vs ')}`);
const pad = Math.max(...cases.map((c) => c.name.length));
console.log(`${'case'.padEnd(pad)}  ${threadCounts.map((n) => `${`${n} thr ms`.padStart(10)} ${'GFLOP/s'.padStart(8)}`).join('  ')}`);
for (const c of cases) {
  const ms = time(backends.map((be) => c.setup(be)));
  const cols = ms.map((m) => `${m.toFixed(3).padStart(10)} ${(c.flops / m / 1e6).toFixed(2).padStart(8)}`);
  console.log(`${c.name.padEnd(pad)}  ${cols.join('  ')}`);
}
for (const be of backends) be.dispose();
