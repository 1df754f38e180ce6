/**
 * Timings of the CUDA training ops at Qwen2.5-3B shapes (T = 1200 tokens, K = 2048 hidden,
 * N = 11008 MLP width, bf16): linear forward vs its two backward products, a rank-32 LoRA
 * backward on f32 views, packed attention forward / backward (6 sequences of 456 tokens,
 * H 16 / Hkv 2, D 128), sumSquares and AdamW over 59.9 M parameters, token logprobs over a Qwen
 * vocabulary. Each line: mean milliseconds per call after 3 warm-up calls (and TFLOP/s where a
 * FLOP count is meaningful).
 *
 *   node --import tsx bench/train-ops.ts        (needs the CUDA addon and a GPU)
 */
import { CudaBackend } from '../src/backend/cuda/cuda-backend.ts';
import type { Tensor } from '../src/backend/backend.ts';
import { SeededRandom } from '../src/util/random.ts';

const be = new CudaBackend();
const rnd = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);
const up = (n: number, shape: number[], dt: 'bf16' | 'f32', seed: number, std = 1): Tensor => be.upload(rnd(n, seed, std), shape, dt);
async function time(name: string, iters: number, fn: () => void, flop = 0): Promise<void> {
  for (let i = 0; i < 3; i++) fn();
  await be.synchronize();
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) fn();
  await be.synchronize();
  const ms = (performance.now() - t0) / iters;
  console.log(`${name.padEnd(64)} ${ms.toFixed(3).padStart(9)} ms${flop ? `  ${(flop / ms / 1e9).toFixed(0).padStart(5)} TFLOP/s` : ''}`);
}
console.log(`device: ${be.device.name}`);
const [T, K, N] = [1200, 2048, 11008];
const x = up(T * K, [T, K], 'bf16', 1);
const w = up(N * K, [N, K], 'bf16', 2, 0.02);
const dy = up(T * N, [T, N], 'bf16', 3);
const dw = be.alloc([N, K], 'f32', 'persistent');
const dwb = be.alloc([N, K], 'bf16', 'persistent');
const f = 2 * T * K * N;
await time(`linear fwd x[${T},${K}] w[${N},${K}] bf16`, 20, () => { be.linear(x, w); be.resetScratch(); }, f);
await time(`linearBackwardInput dy[${T},${N}] @ w -> [${T},${K}] bf16`, 20, () => { be.linearBackwardInput(dy, w); be.resetScratch(); }, f);
await time(`linearBackwardWeight dw[${N},${K}] f32 += dy^T x`, 20, () => be.linearBackwardWeight(dy, x, dw, 1), f);
await time(`linearBackwardWeight dw[${N},${K}] bf16 += dy^T x`, 20, () => be.linearBackwardWeight(dy, x, dwb, 1), f);
const dyF = up(T * N, [T, N], 'f32', 4);
await time(`linearBackwardInput dy f32 (cast to bf16) @ w bf16 -> f32`, 20, () => { be.linearBackwardInput(dyF, w); be.resetScratch(); }, f);
// LoRA rank 32 on the same layer: A [32, K], B [N, 32] as f32 views of a flat buffer.
const flat = be.upload(rnd(32 * K + N * 32 + 3, 5, 0.02), [32 * K + N * 32 + 3], 'f32');
const A = be.viewAt(flat, 1, [32, K]);
const B = be.viewAt(flat, 1 + 32 * K, [N, 32]);
const g = be.alloc([32 * K + N * 32 + 3], 'f32', 'persistent');
const dA = be.viewAt(g, 1, [32, K]);
const dB = be.viewAt(g, 1 + 32 * K, [N, 32]);
const u = up(T * 32, [T, 32], 'bf16', 6);
await time('LoRA backward (dB, du, dA, dx += du A) rank 32, f32 views', 20, () => {
  be.linearBackwardWeight(dy, u, dB, 2);
  const du = be.linearBackwardInput(dy, B);
  be.linearBackwardWeight(du, x, dA, 2);
  be.linearBackwardInput(du, A);
  be.resetScratch();
});
// Attention: 6 sequences of 456 tokens, H 16, Hkv 2, D 128.
const lens = Array(6).fill(456);
const cu = lens.reduce((a: number[], n: number) => [...a, a[a.length - 1] + n], [0]);
const TT = cu[6];
const q = up(TT * 16 * 128, [TT, 16, 128], 'bf16', 7);
const k = up(TT * 2 * 128, [TT, 2, 128], 'bf16', 8);
const v = up(TT * 2 * 128, [TT, 2, 128], 'bf16', 9);
const dout = up(TT * 16 * 128, [TT, 16, 128], 'bf16', 10);
const cuT = be.upload(Int32Array.from(cu), [7], 'i32');
const af = 6 * 2 * 2 * 16 * 128 * (456 * 457) / 2;
await time(`attentionPacked fwd T=${TT} (6 x 456) H16/2 D128`, 10, () => { be.attentionPacked(q, k, v, cuT, 0.088); be.resetScratch(); }, af);
await time(`attentionPacked fwd + bwd`, 5, () => {
  const { out, lse } = be.attentionPacked(q, k, v, cuT, 0.088);
  be.attentionPackedBackward(dout, q, k, v, out, lse, cuT, 0.088);
  be.resetScratch();
}, af * 3.5);
const n = 59_900_000;
const p = up(n, [n], 'f32', 11, 0.01);
const gr = up(n, [n], 'f32', 12, 0.01);
const m = be.alloc([n], 'f32', 'persistent');
const vv = be.alloc([n], 'f32', 'persistent');
await time('sumSquares 59.9 M f32', 10, () => { be.sumSquares(gr); be.resetScratch(); });
await time('adamw 59.9 M f32', 10, () => be.adamw(p, gr, m, vv, { lr: 1e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1, gradScale: 0.5 }));
const lg = up(64 * 151936, [64, 151936], 'bf16', 13, 3);
const tg = be.upload(Int32Array.from({ length: 64 }, (_, i) => i * 999), [64], 'i32');
const dl = be.upload(new Float32Array(64).fill(0.1), [64], 'f32');
await time('tokenLogprobs fwd + bwd [64, 151936] bf16', 10, () => { be.tokenLogprobs(lg, tg, 1); be.tokenLogprobsBackward(lg, tg, 1, dl); be.resetScratch(); });
