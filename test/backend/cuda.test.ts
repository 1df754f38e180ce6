/**
 * The conformance suite on the CUDA backend, plus what only the CUDA backend promises.
 *
 * Runs where the addon is built (bash kernels/build.sh) and a GPU is visible; elsewhere (CI has
 * no GPU) every case is skipped with the reason on one line.
 *
 * Tolerances: inputs are bf16 and the references are computed from the values the GPU holds, so
 * what is left is fp32 accumulation plus one bf16 rounding of each output (relative 2^-9 = 0.002);
 * 1e-2 absolute and relative leaves room for sums of a few hundred terms without hiding a wrong
 * index (those are off by O(1)).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AttnMeta, Tensor } from '../../src/backend/backend.ts';
import { cudaUnavailableReason } from '../../src/backend/cuda/available.ts';
import { CudaBackend } from '../../src/backend/cuda/cuda-backend.ts';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/model/load.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { packBatch } from '../../src/model/transformer.ts';
import { SeededRandom } from '../../src/util/random.ts';
import { expectClose, runBackendConformance } from './conformance.ts';
import { runSamplingExtrasConformance } from './conformance-sampling-extras.ts';
import { linearRef, logSoftmaxRef } from './reference.ts';

const skipReason = cudaUnavailableReason();

if (skipReason !== null) {
  console.log(`cuda backend tests skipped: ${skipReason}`);
  describe('cuda backend', () => {
    it('conformance and cuda specifics', { skip: skipReason }, () => {});
  });
} else {
  runBackendConformance('cuda', () => new CudaBackend(), { atol: 1e-2, rtol: 1e-2 }, { floatDtype: 'bf16' });
  runSamplingExtrasConformance('cuda', () => new CudaBackend(), 1e-4);
  cudaSpecifics();
}

function cudaSpecifics(): void {
  describe('cuda backend specifics', () => {
    const rand = (n: number, seed: number, std = 1): Float32Array => new SeededRandom(seed).normals(n, std);
    const i32 = (be: CudaBackend, xs: number[], shape?: number[]): Tensor => be.upload(Int32Array.from(xs), shape ?? [xs.length], 'i32', 'scratch');

    it('reports the device and stores bf16 / f16 as bf16, f32 as f32', async () => {
      const be = new CudaBackend();
      assert.ok(be.device.name.length > 0 && be.device.totalMemory > 0, JSON.stringify(be.device));
      console.log(`cuda device: ${be.device.name}, ${(be.device.totalMemory / 2 ** 30).toFixed(1)} GiB, sm_${be.device.major}${be.device.minor}, ${be.device.multiprocessors} SMs`);
      const x = Float32Array.from([1, -2.5, 3.140625, 1 + 2 ** -12]);
      for (const dtype of ['bf16', 'f16'] as const) {
        const t = be.upload(x, [4], dtype);
        assert.equal(t.dtype, 'bf16');
        assert.deepEqual(await be.download(t), Float32Array.from([1, -2.5, 3.140625, 1])); // round to nearest even
      }
      assert.deepEqual(await be.download(be.upload(x, [4], 'f32')), x);
      assert.equal(be.alloc([3], 'bf16', 'scratch').dtype, 'bf16');
    });

    it('qkvOneGemm: a product over adjacent q/k/v weights and its column split match the reference', async () => {
      const be = new CudaBackend({ qkvOneGemm: true });
      const [K, ns] = [256, [512, 128, 128]];
      const total = ns.reduce((a, b) => a + b, 0);
      const w = be.upload(rand(total * K, 71, 0.05), [total * K], 'bf16');
      const b = be.upload(rand(total, 72, 0.1), [total], 'bf16');
      const starts = ns.map((_, i) => ns.slice(0, i).reduce((a, c) => a + c, 0));
      const parts = ns.map((n, i) => ({ w: be.viewAt(w, starts[i] * K, [n, K]), bias: be.viewAt(b, starts[i], [n]) }));
      const wAll = (await be.download(w)) as Float32Array;
      const bAll = (await be.download(b)) as Float32Array;
      for (const T of [5, 64]) {
        const x = be.upload(rand(T * K, 73 + T), [T, K], 'bf16');
        const xs = (await be.download(x)) as Float32Array;
        const outs = be.linearMany(x, parts);
        for (let i = 0; i < ns.length; i++) {
          const wi = wAll.subarray(starts[i] * K, (starts[i] + ns[i]) * K);
          const bi = bAll.subarray(starts[i], starts[i] + ns[i]);
          expectClose(`T ${T} part ${i}`, await be.download(outs[i]), linearRef(xs, wi, bi, T, K, ns[i]), { atol: 1e-2, rtol: 1e-2 });
        }
        be.resetScratch();
      }
    });

    it('qkvOneGemm: a model loaded with q/k/v in one allocation gives the logits of one loaded apart', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'tandem-cuda-qkv-'));
      try {
        makeModel({ preset: 'small', out: dir, seed: 5, headDim: 128 });
        const logits: Float32Array[] = [];
        for (const qkvOneGemm of [true, false]) {
          const be = new CudaBackend({ qkvOneGemm });
          const m = loadModel(dir, be);
          const cache = be.allocKvCache(m.model.kvCacheSpec(4, 16));
          const ids = Array.from({ length: 24 }, (_, i) => (i * 37) % 500);
          logits.push((await be.download(m.model.forward(packBatch([{ newTokens: ids, numCached: 0, blockTable: [0, 1] }], 16), cache))) as Float32Array);
          be.resetScratch();
          be.freeKvCache(cache);
        }
        expectClose('one allocation vs apart', logits[0], logits[1], { atol: 2e-2, rtol: 2e-2 });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('f32 linear is true fp32 (no TF32), and bf16 x bf16 can write f32', async () => {
      const be = new CudaBackend();
      const [T, K, N] = [33, 300, 70];
      const x = rand(T * K, 1);
      const w = rand(N * K, 2, 1 / Math.sqrt(K));
      const b = rand(N, 3);
      const out = await be.download(be.linear(be.upload(x, [T, K], 'f32', 'scratch'), be.upload(w, [N, K], 'f32'), be.upload(b, [N], 'f32')));
      expectClose('f32 linear', out, linearRef(x, w, b, T, K, N), { atol: 1e-5, rtol: 1e-5 });
      const xb = be.upload(x, [T, K], 'bf16', 'scratch');
      const wb = be.upload(w, [N, K], 'bf16');
      const y = be.linear(xb, wb, undefined, 'f32');
      assert.equal(y.dtype, 'f32');
      const ref = linearRef(await be.download(xb), await be.download(wb), null, T, K, N);
      expectClose('bf16 -> f32 linear', await be.download(y), ref, { atol: 1e-4, rtol: 1e-4 });
      // An f32 w (a LoRA matrix) with bf16 x: w is rounded to bf16, the output is bf16.
      const mixed = be.linear(xb, be.upload(w, [N, K], 'f32'));
      assert.equal(mixed.dtype, 'bf16');
      expectClose('bf16 x, f32 w', await be.download(mixed), linearRef(await be.download(xb), await be.download(wb), null, T, K, N), { atol: 1e-2, rtol: 1e-2 });
    });

    it('logSoftmax of bf16 logits is f32', async () => {
      const be = new CudaBackend();
      const x = be.upload(rand(3 * 1000, 4, 4), [3, 1000], 'bf16', 'scratch');
      const y = be.logSoftmax(x);
      assert.equal(y.dtype, 'f32');
      expectClose('logSoftmax', await be.download(y), logSoftmaxRef(await be.download(x), 3, 1000), { atol: 1e-5, rtol: 1e-5 });
    });

    it('greedy sampling stays on the device for a Qwen-sized vocabulary', async () => {
      const be = new CudaBackend();
      const V = 151936;
      const S = 5;
      const logits = rand(S * V, 5, 3);
      const x = be.upload(logits, [S, V], 'f32', 'scratch');
      const res = await be.sample(x, Array.from({ length: S }, (_, s) => ({ temperature: 0, topK: 0, topP: 1, minP: 0, seed: s, step: 0 })));
      const lsm = logSoftmaxRef(logits, S, V);
      for (let s = 0; s < S; s++) {
        let best = 0;
        for (let i = 1; i < V; i++) if (logits[s * V + i] > logits[s * V + best]) best = i;
        assert.equal(res.ids[s], best, `row ${s}`);
        assert.ok(Math.abs(res.logprobs[s] - lsm[s * V + best]) < 1e-4, `row ${s}: logprob ${res.logprobs[s]} vs ${lsm[s * V + best]}`);
      }
    });

    it('many downloads in flight resolve with their own data', async () => {
      const be = new CudaBackend();
      const inputs = Array.from({ length: 64 }, (_, i) => rand(1000 + i, 100 + i));
      const tensors = inputs.map((d, i) => be.upload(d, [d.length], i % 2 === 0 ? 'f32' : 'bf16', 'scratch'));
      const sums = tensors.map((t) => be.add(t, t));
      const [outs, held] = await Promise.all([Promise.all(sums.map((t) => be.download(t))), Promise.all(tensors.map((t) => be.download(t)))]);
      outs.forEach((o, i) => expectClose(`download ${i}`, o, Float64Array.from(held[i], (v) => 2 * v), { atol: 0, rtol: 0 }));
      await be.synchronize();
    });

    it('reuses scratch memory: a repeated step allocates nothing after the first', () => {
      const be = new CudaBackend();
      const w = be.upload(rand(64 * 32, 1, 0.1), [64, 32], 'bf16');
      const step = (T: number): void => {
        const x = be.upload(new Float32Array(T * 32).fill(1), [T, 32], 'bf16', 'scratch');
        const y = be.linear(x, w);
        be.add(y, y);
        be.logSoftmax(y);
        be.resetScratch();
      };
      step(8);
      const after = be.scratchAllocations;
      const held = be.memoryUsage().scratch;
      for (let i = 0; i < 5; i++) step(8);
      step(3);
      assert.equal(be.scratchAllocations, after);
      assert.equal(be.memoryUsage().scratch, held);
    });

    it('rejects ids, slots and block tables that point outside their tables', () => {
      const be = new CudaBackend();
      const table = be.upload(new Float32Array(12), [4, 3], 'bf16');
      assert.throws(() => be.embedding(i32(be, [0, 4]), table), /embedding: token id 4 at row 1 is outside the table's 4 rows/);
      assert.throws(() => be.gatherRows(table, i32(be, [4])), /gatherRows: index 4/);
      const cache = be.allocKvCache({ numLayers: 1, numBlocks: 2, blockSize: 4, numKvHeads: 1, headDim: 32, dtype: 'bf16' });
      const k = be.upload(new Float32Array(32), [1, 1, 32], 'bf16');
      assert.throws(() => be.writeKv(cache, 0, k, k, i32(be, [8])), /writeKv: slot 8 of token 0 is outside the cache's 8 slots/);
      assert.throws(() => be.writeKv(cache, 0, be.upload(new Float32Array(32), [1, 1, 32], 'f32'), k, i32(be, [0])), /writeKv/);
      const q = be.upload(new Float32Array(64), [2, 1, 32], 'bf16');
      const meta = (cu: number[], lens: number[], tables: number[]): AttnMeta => ({
        cuSeqlensQ: i32(be, cu),
        contextLens: i32(be, lens),
        blockTables: i32(be, tables, [lens.length, tables.length / lens.length]),
        maxSeqlenQ: 2,
        maxContextLen: 8,
      });
      assert.doesNotThrow(() => be.attention(q, cache, 0, meta([0, 2], [5], [1, 0]), 1));
      assert.throws(() => be.attention(q, cache, 0, meta([0, 2], [5], [1, 2]), 1), /block 2 is outside/);
      assert.throws(() => be.attention(q, cache, 0, meta([0, 2], [1], [1, 0]), 1), /2 query rows but a context of 1/);
      const q20 = be.upload(new Float32Array(40), [2, 1, 20], 'bf16');
      const c20 = be.allocKvCache({ numLayers: 1, numBlocks: 2, blockSize: 4, numKvHeads: 1, headDim: 20, dtype: 'bf16' });
      assert.throws(() => be.attention(q20, c20, 0, meta([0, 2], [5], [1, 0]), 1), /head dim 20 is not supported/);
    });

    it('frees persistent tensors into the allocator cache and reports out-of-memory clearly', () => {
      const be = new CudaBackend();
      const t = be.upload(new Float32Array(1 << 20), [1 << 20], 'f32');
      const before = be.memoryUsage();
      be.free(t);
      const after = be.memoryUsage();
      assert.equal(after.weights, before.weights - 4 * (1 << 20));
      assert.ok(after.cached >= before.cached + 4 * (1 << 20));
      assert.throws(() => be.alloc([2 ** 50], 'f32', 'persistent'), /out of GPU memory/);
      be.alloc([4], 'f32', 'persistent'); // the failed allocation left no sticky error behind
    });

    it('keeps to a memory budget: each part refuses what would overflow it, by name', async () => {
      const be = new CudaBackend();
      const MiB = 2 ** 20;
      const weights = be.upload(new Float32Array(MiB), [MiB], 'bf16'); // 2 MiB of "weights"
      const ws = be.memoryUsage().workspace;
      assert.throws(() => be.setBudget({ total: 2 * MiB + ws + 3 * MiB - 1, scratch: MiB, kvCache: MiB, adapters: MiB }), /exceed the budget/);
      be.setBudget({ total: 64 * MiB, scratch: MiB, kvCache: MiB, adapters: MiB });
      const u = be.memoryUsage();
      assert.equal(u.weights, 2 * MiB);
      assert.equal(u.adapters, 0);
      assert.equal(u.scratch, MiB);
      // Adapters: persistent tensors after setBudget share a 1 MiB reserve.
      const a = be.alloc([192 * 1024], 'f32', 'persistent'); // 768 KiB
      assert.equal(be.memoryUsage().adapters, 768 * 1024);
      assert.throws(() => be.alloc([64 * 1024 + 1], 'f32', 'persistent'), /adapters: .* exceeds the 1\.00 MiB reserve/);
      be.free(a);
      be.alloc([256 * 1024], 'f32', 'persistent'); // the whole reserve, once freed
      // KV cache: 1 MiB in all (2 layers x K and V x 16 blocks x 16 tokens x 32 x bf16 = 64 KiB fits, 17x does not).
      const spec = { numLayers: 2, numBlocks: 16, blockSize: 16, numKvHeads: 1, headDim: 32, dtype: 'bf16' as const };
      be.allocKvCache(spec);
      assert.throws(() => be.allocKvCache({ ...spec, numBlocks: 16 * 16 }), /exceeds the KV cache budget of 1\.00 MiB/);
      // Scratch: one chunk of 1 MiB, never grown.
      const x = be.alloc([256 * 1024], 'bf16', 'scratch'); // 512 KiB
      be.alloc([128 * 1024], 'bf16', 'scratch');
      assert.throws(() => be.alloc([128 * 1024 + 1], 'bf16', 'scratch'), /scratch arena full/);
      be.resetScratch();
      be.alloc([512 * 1024], 'bf16', 'scratch');
      assert.equal(be.memoryUsage().scratch, MiB);
      assert.ok(x && weights);
    });

    it('runs a model in bf16 (weights, KV cache) with f32 logits close to the cpu backend', async () => {
      const root = mkdtempSync(join(tmpdir(), 'tandem-cuda-model-'));
      try {
        makeModel({ preset: 'small', out: join(root, 'm'), seed: 5 });
        const gpu = loadModel(join(root, 'm'), new CudaBackend());
        const cpu = loadModel(join(root, 'm'), new CpuBackend());
        assert.equal(gpu.model.weights.embed.dtype, 'bf16');
        assert.equal(gpu.model.kvCacheSpec(4, 16).dtype, 'bf16');
        const ids = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % gpu.config.vocabSize);
        const logitsOf = async (m: typeof gpu): Promise<Float32Array> => {
          const cache = m.model.backend.allocKvCache(m.model.kvCacheSpec(4, 16));
          const out = m.model.forward(packBatch([{ newTokens: ids, numCached: 0, blockTable: [2, 0, 3], allLogits: true }], 16), cache);
          assert.equal(out.dtype, 'f32');
          const host = (await m.model.backend.download(out)) as Float32Array;
          m.model.backend.resetScratch();
          return host;
        };
        const [g, c] = [await logitsOf(gpu), await logitsOf(cpu)];
        let diff = 0;
        let scale = 0;
        let argmaxAgree = 0;
        const V = gpu.config.vocabSize;
        for (let r = 0; r < ids.length; r++) {
          let bg = 0;
          let bc = 0;
          for (let v = 0; v < V; v++) {
            const i = r * V + v;
            diff = Math.max(diff, Math.abs(g[i] - c[i]));
            scale = Math.max(scale, Math.abs(c[i]));
            if (g[i] > g[r * V + bg]) bg = v;
            if (c[i] > c[r * V + bc]) bc = v;
          }
          if (bg === bc) argmaxAgree++;
        }
        console.log(`bf16 cuda vs f32 cpu logits (make-model small, 40 tokens): max |diff| ${diff.toFixed(4)} of max |logit| ${scale.toFixed(2)}; argmax agrees on ${argmaxAgree}/40 rows`);
        assert.ok(scale > 1, 'logits near zero would prove nothing');
        // Four layers of bf16 activations (2^-9 relative per rounding) stay within 3 % of the scale.
        assert.ok(diff / scale < 0.03, `max |diff| ${diff} vs scale ${scale}`);
        assert.ok(argmaxAgree >= 36, `argmax agrees on only ${argmaxAgree}/40 rows`);
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    });
  });
}
