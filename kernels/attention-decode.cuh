/*
Decode attention over the paged KV cache: one block per (query row, KV head, context split),
all query heads of the KV head's group in that block, so each K/V row is read once for the
whole group (7 or 8 heads on GQA models) instead of once per head. Shapes and paging as in
attention.cu.

Layout as the per-row kernel's (attention.cu): a warp owns runs of UNROLL consecutive keys
strided by the block, lane l holds dims [l*VEC, (l+1)*VEC) of q, K, V and the accumulators, one
online softmax (max m, sum l, accumulator acc) per head of the group in registers.

Split-K: a batch of a few long sequences gives T * Hkv blocks, far fewer than the GPU has SMs, so
the context is cut into `splits` chunks of ceil(keys / splits) keys, one block each. With one
split the block writes the output; with more it writes its unnormalised state (m, l, acc) to
`partial` and mergeSplitsKernel combines the chunks: out = sum_i e^(m_i - M) acc_i / sum_i
e^(m_i - M) l_i, M = max_i m_i. The chunk length is computed on the device from the row's own
context, so a captured CUDA graph stays correct as contexts grow.

Speed (bench/results/cuda-attention-h200.json): 6-15% of the K/V-bytes floor at batch 64-256.
The loop is latency-bound: each run reads the block table, then K and V (two dependent global
loads), then reduces G x UNROLL dot products with shuffles before the next run's loads issue.
Next: stage the sequence's block-table slice in shared memory and stream K/V tiles through a
multi-stage cp.async pipeline (FlashInfer's decode), so loads run ahead of the math.
*/
#pragma once

#include "common.cuh"
#include "pdl.cuh"

namespace tandem {

// UNROLL consecutive key positions p0.. of one KV head from the paged pools into registers (this
// lane's VEC dims of each K and V row); ok[u] is false for positions at or past `end` or whose
// block-table entry is not a valid block, whose rows read as zeros. Shared by every paged kernel.
template <typename T, int VEC, int UNROLL>
__device__ __forceinline__ void loadKvRun(float (&kf)[UNROLL][VEC], float (&vf)[UNROLL][VEC], bool (&ok)[UNROLL],
                                          const T* kPool, const T* vPool, const int* table, int p0, int end,
                                          int blockSize, int numBlocks, size_t rowStride, size_t headOffset) {
#pragma unroll
  for (int u = 0; u < UNROLL; u++) {
    const int p = p0 + u;
    const int block = p < end ? table[p / blockSize] : -1;
    ok[u] = block >= 0 && block < numBlocks;
    if (ok[u]) {
      const size_t row = (static_cast<size_t>(block) * blockSize + p % blockSize) * rowStride + headOffset;
      loadFloats<VEC>(kPool + row, kf[u]);
      loadFloats<VEC>(vPool + row, vf[u]);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; i++) kf[u][i] = vf[u][i] = 0.0f;
    }
  }
}

// The sequence owning query row t: the last s with cuSeqlensQ[s] <= t (skips empty sequences).
__device__ __forceinline__ int sequenceOfRow(const int* cuSeqlensQ, int S, int t) {
  int lo = 0;
  int hi = S - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (cuSeqlensQ[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Keys per split chunk of a row with `keys` keys: an even share, but at least cMinSplitKeys, so a
// short context inside a graph planned for long ones (many splits) uses a few full chunks; the
// chunks past the context are skipped by the decode kernel and by the merge. Default 32 keys (one
// tile of the tiled kernel: short contexts spread over blocks); attentionInit() sets it from
// TANDEM_DECODE_MIN_SPLIT_KEYS (for A/B runs) before any launch or graph capture.
constexpr int kDefaultMinSplitKeys = 32;
__constant__ int cMinSplitKeys = kDefaultMinSplitKeys;
// Whether the fused rope + decode kernel reads metadata and its first K/V tile before pdlWait()
// (attention-decode-tiled.cuh); attentionInit() clears it for TANDEM_DECODE_EARLY_LOADS=0.
__constant__ int cEarlyLoads = 1;
// Whether that kernel reads the new token's k and v together with q right after pdlWait() (one
// load latency for both) instead of after staging q; cleared for TANDEM_DECODE_NEW_KV_WITH_Q=0.
__constant__ int cNewKvWithQ = 1;
// Whether the tiled decode kernel's scores run as 4 partial sums per head with every query head
// of the warp served by one read of the key row (short dependency chains), or as one chain per
// head (the order before, for A/B runs); cleared for TANDEM_DECODE_QK_PARTIALS=0.
__constant__ int cQkPartials = 1;
__device__ __forceinline__ int splitChunk(int keys, int splits) {
  return max((keys + splits - 1) / splits, cMinSplitKeys);
}

// Splits a row's chunks actually cover (at least one): the merge reads only these, and with one
// the decode block writes the output itself.
__device__ __forceinline__ int usedSplits(int keys, int splits) {
  const int chunk = splitChunk(keys, splits);
  return max(1, min(splits, (keys + chunk - 1) / chunk));
}

// Causal keys of query row t of sequence s: positions [0, keys).
__device__ __forceinline__ int rowKeys(const int* cuSeqlensQ, const int* contextLens, int s, int t) {
  const int qlen = cuSeqlensQ[s + 1] - cuSeqlensQ[s];
  const int ctx = contextLens[s];
  return min(ctx, ctx - qlen + (t - cuSeqlensQ[s]) + 1);
}

// The keys [kBegin, kEnd) of query row t that context split `split` owns, in sequence s whose
// context gives the row `keys` causal keys and `used` non-empty splits. skip: the block has
// nothing to do (a row of a multi-row sequence when skipMulti, or a split past the context,
// which the merge skips too). Block-uniform: every decode kernel starts here.
struct DecodeChunk {
  int s, keys, kBegin, kEnd, used;
  bool skip;
};
__device__ __forceinline__ DecodeChunk decodeChunk(const int* cuSeqlensQ, const int* contextLens, int S, int t,
                                                   int split, int splits, int skipMulti) {
  DecodeChunk c{};
  c.s = sequenceOfRow(cuSeqlensQ, S, t);
  c.skip = skipMulti && cuSeqlensQ[c.s + 1] - cuSeqlensQ[c.s] > 1;
  if (c.skip) return c;
  c.keys = rowKeys(cuSeqlensQ, contextLens, c.s, t);
  const int chunk = splitChunk(c.keys, splits);
  c.kBegin = split * chunk;
  c.skip = split > 0 && c.kBegin >= c.keys;
  c.kEnd = min(c.keys, c.kBegin + chunk);
  c.used = usedSplits(c.keys, splits);
  return c;
}

// partial: (T, H, splits, 2 + D) f32 = m, l, acc[D] of each chunk (used when splits > 1).
// skipMulti: rows of sequences with more than one query row belong to the prefill kernel.
template <typename T, int VEC, int GMAX, int WARPS, int UNROLL>
__global__ void __launch_bounds__(WARPS * 32)
    groupedDecodeKernel(T* out, float* partial, const T* q, const T* kPool, const T* vPool, const int* cuSeqlensQ,
                        const int* contextLens, const int* blockTables, int S, int H, int Hkv, int blockSize,
                        int maxBlocks, int numBlocks, float scale, int splits, int skipMulti) {
  constexpr int D = 32 * VEC;
  __shared__ float sharedM[WARPS][GMAX];
  __shared__ float sharedL[WARPS][GMAX];
  __shared__ float sharedAcc[WARPS][GMAX][D];
  pdlLaunchDependents();
  pdlWait();
  const int t = blockIdx.x;
  const int kvHead = blockIdx.y;
  const int split = blockIdx.z;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  const DecodeChunk chunk = decodeChunk(cuSeqlensQ, contextLens, S, t, split, splits, skipMulti);
  if (chunk.skip) return;
  const int kBegin = chunk.kBegin;
  const int kEnd = chunk.kEnd;
  const int G = H / Hkv;
  const int* table = blockTables + static_cast<size_t>(chunk.s) * maxBlocks;
  const size_t rowStride = static_cast<size_t>(Hkv) * D;
  const size_t headOffset = static_cast<size_t>(kvHead) * D + lane * VEC;

  float qv[GMAX][VEC];
  float m[GMAX];
  float l[GMAX];
  float acc[GMAX][VEC];
#pragma unroll
  for (int g = 0; g < GMAX; g++) {
    if (g < G) {
      loadFloats<VEC>(q + (static_cast<size_t>(t) * H + kvHead * G + g) * D + lane * VEC, qv[g]);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; i++) qv[g][i] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < VEC; i++) {
      qv[g][i] *= scale;
      acc[g][i] = 0.0f;
    }
    m[g] = -INFINITY;
    l[g] = 0.0f;
  }

  for (int p0 = kBegin + warp * UNROLL; p0 < kEnd; p0 += WARPS * UNROLL) {
    float kf[UNROLL][VEC];
    float vf[UNROLL][VEC];
    bool ok[UNROLL];
    loadKvRun<T, VEC, UNROLL>(kf, vf, ok, kPool, vPool, table, p0, kEnd, blockSize, numBlocks, rowStride, headOffset);
#pragma unroll
    for (int g = 0; g < GMAX; g++) {
      if (g >= G) break;  // (block-uniform)
      float score[UNROLL];
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < VEC; i++) dot += qv[g][i] * kf[u][i];
        score[u] = warpSum(dot);
      }
      float mNew = m[g];
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        if (!ok[u]) score[u] = -INFINITY;
        mNew = fmaxf(mNew, score[u]);
      }
      if (mNew == -INFINITY) continue;  // (warp-uniform) nothing readable in this run
      const float correction = __expf(m[g] - mNew);
      l[g] *= correction;
#pragma unroll
      for (int i = 0; i < VEC; i++) acc[g][i] *= correction;
#pragma unroll
      for (int u = 0; u < UNROLL; u++) {
        const float pu = __expf(score[u] - mNew);
        l[g] += pu;
#pragma unroll
        for (int i = 0; i < VEC; i++) acc[g][i] += pu * vf[u][i];
      }
      m[g] = mNew;
    }
  }

#pragma unroll
  for (int g = 0; g < GMAX; g++) {
    if (lane == 0) {
      sharedM[warp][g] = m[g];
      sharedL[warp][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < VEC; i++) sharedAcc[warp][g][lane * VEC + i] = acc[g][i];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * D; idx += WARPS * 32) {
    const int g = idx / D;
    const int d = idx % D;
    float mAll = -INFINITY;
#pragma unroll
    for (int w = 0; w < WARPS; w++) mAll = fmaxf(mAll, sharedM[w][g]);
    float lAll = 0.0f;
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) {
      const float weight = sharedM[w][g] == -INFINITY ? 0.0f : __expf(sharedM[w][g] - mAll);
      lAll += sharedL[w][g] * weight;
      v += sharedAcc[w][g][d] * weight;
    }
    const size_t head = static_cast<size_t>(t) * H + kvHead * G + g;
    if (chunk.used == 1) {
      out[head * D + d] = fromF<T>(lAll > 0.0f ? v / lAll : 0.0f);
    } else {
      float* part = partial + (head * splits + split) * (D + 2);
      if (d == 0) {
        part[0] = mAll;
        part[1] = lAll;
      }
      part[2 + d] = v;
    }
  }
}

// The merge of one (row, head)'s used split states (m, l, acc[D]) at `part` (stride D + 2): the
// largest m, then dim d's value (mergeSplitsKernel). Loads bypass L1 (__ldcg): the states were
// written by the kernel before.
__device__ __forceinline__ float mergedMax(const float* part, int used, int D) {
  float mAll = -INFINITY;
  for (int i = 0; i < used; i++) mAll = fmaxf(mAll, __ldcg(part + i * (D + 2)));
  return mAll;
}
__device__ __forceinline__ float mergedValue(const float* part, int used, int D, int d, float mAll) {
  float lAll = 0.0f;
  float v = 0.0f;
  for (int i = 0; i < used; i++) {
    const float* p = part + i * (D + 2);
    const float m = __ldcg(p);
    const float weight = m == -INFINITY ? 0.0f : __expf(m - mAll);
    lAll += __ldcg(p + 1) * weight;
    v += __ldcg(p + 2 + d) * weight;
  }
  return lAll > 0.0f ? v / lAll : 0.0f;
}

// Combines the split chunks of every (row, head): grid (T, H).
template <typename T>
__global__ void mergeSplitsKernel(T* out, const float* partial, const int* cuSeqlensQ, const int* contextLens, int S,
                                  int H, int D, int splits, int skipMulti) {
  pdlLaunchDependents();
  pdlWait();
  const int t = blockIdx.x;
  const int h = blockIdx.y;
  const int s = sequenceOfRow(cuSeqlensQ, S, t);
  if (skipMulti && cuSeqlensQ[s + 1] - cuSeqlensQ[s] > 1) return;
  // Only the chunks the decode kernel wrote: those starting inside the context (at least one).
  const int keys = rowKeys(cuSeqlensQ, contextLens, s, t);
  const int used = usedSplits(keys, splits);
  if (used == 1) return;  // the decode block wrote the output
  const size_t head = static_cast<size_t>(t) * H + h;
  const float* part = partial + head * splits * (D + 2);
  const float mAll = mergedMax(part, used, D);
  for (int d = threadIdx.x; d < D; d += blockDim.x) out[head * D + d] = fromF<T>(mergedValue(part, used, D, d, mAll));
}

}  // namespace tandem
