/*
Causal grouped-query attention over the paged KV cache (packed prefill and decode alike).
  q and out are (T, H, D); kPool and vPool are one layer's (numBlocks, blockSize, Hkv, D);
  cuSeqlensQ is (S+1), contextLens is (S), blockTables is (S, maxBlocks), all i32; dtype T
  (f32 or bf16) for q, the pools and out; f32 arithmetic throughout.
Sequence s owns query rows [cuSeqlensQ[s], cuSeqlensQ[s+1]), its last qlen tokens: row i sits at
position ctx - qlen + i and attends to cache positions [0, that position]. Position p lives in
block blockTables[s, p / blockSize] at offset p % blockSize. Query head h reads KV head
h / (H / Hkv).

First version: one block of WARPS (8) warps per (query row, head). A warp owns runs of UNROLL
consecutive keys (strided by the block), lane l holds dims [l*VEC, (l+1)*VEC) of q, K, V and
the output (D = 32 * VEC), so a key row is one coalesced 2*D-byte read. Per run: UNROLL K and V
rows are loaded before any use, UNROLL dot products are reduced with shuffles, and the warp's
online softmax (running max m, sum l, accumulator acc) absorbs them with one rescale. The warps'
states merge through shared memory at the end.
Later work: split-K over the context for long decodes, tiles of query rows sharing each K/V
load (flash-style prefill), and all heads of a KV group in one block.
*/
#include "common.cuh"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

template <typename T, int VEC, int WARPS, int UNROLL>
__global__ void __launch_bounds__(WARPS * 32)
    pagedAttentionKernel(T* out, const T* q, const T* kPool, const T* vPool, const int* cuSeqlensQ,
                         const int* contextLens, const int* blockTables, int S, int H, int Hkv, int blockSize,
                         int maxBlocks, int numBlocks, float scale) {
  constexpr int D = 32 * VEC;
  __shared__ float sharedM[WARPS];
  __shared__ float sharedL[WARPS];
  __shared__ float sharedAcc[WARPS][D];
  const int t = blockIdx.x;
  const int h = blockIdx.y;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  // The sequence owning query row t: the last s with cuSeqlensQ[s] <= t (skips empty sequences).
  int lo = 0;
  int hi = S - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (cuSeqlensQ[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  const int s = lo;
  const int qlen = cuSeqlensQ[s + 1] - cuSeqlensQ[s];
  const int ctx = contextLens[s];
  const int keys = min(ctx, ctx - qlen + (t - cuSeqlensQ[s]) + 1);  // causal: positions [0, keys)
  const int kvHead = h / (H / Hkv);
  const int* table = blockTables + static_cast<size_t>(s) * maxBlocks;
  const size_t rowStride = static_cast<size_t>(Hkv) * D;
  const size_t headOffset = static_cast<size_t>(kvHead) * D + lane * VEC;

  float qv[VEC];
  loadFloats<VEC>(q + (static_cast<size_t>(t) * H + h) * D + lane * VEC, qv);
#pragma unroll
  for (int i = 0; i < VEC; i++) qv[i] *= scale;

  float m = -INFINITY;
  float l = 0.0f;
  float acc[VEC];
#pragma unroll
  for (int i = 0; i < VEC; i++) acc[i] = 0.0f;

  for (int p0 = warp * UNROLL; p0 < keys; p0 += WARPS * UNROLL) {
    float kf[UNROLL][VEC];
    float vf[UNROLL][VEC];
    bool ok[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const int p = p0 + u;
      const int block = p < keys ? table[p / blockSize] : -1;
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
    float score[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < VEC; i++) dot += qv[i] * kf[u][i];
      score[u] = dot;
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) score[u] = warpSum(score[u]);
    float mNew = m;
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      if (!ok[u]) score[u] = -INFINITY;
      mNew = fmaxf(mNew, score[u]);
    }
    if (mNew == -INFINITY) continue;  // (warp-uniform) nothing readable in this run
    const float correction = __expf(m - mNew);
    l *= correction;
#pragma unroll
    for (int i = 0; i < VEC; i++) acc[i] *= correction;
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const float pu = __expf(score[u] - mNew);
      l += pu;
#pragma unroll
      for (int i = 0; i < VEC; i++) acc[i] += pu * vf[u][i];
    }
    m = mNew;
  }

  if (lane == 0) {
    sharedM[warp] = m;
    sharedL[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < VEC; i++) sharedAcc[warp][lane * VEC + i] = acc[i];
  __syncthreads();
  float mAll = -INFINITY;
#pragma unroll
  for (int w = 0; w < WARPS; w++) mAll = fmaxf(mAll, sharedM[w]);
  float weight[WARPS];
  float lAll = 0.0f;
#pragma unroll
  for (int w = 0; w < WARPS; w++) {
    weight[w] = sharedM[w] == -INFINITY ? 0.0f : __expf(sharedM[w] - mAll);
    lAll += sharedL[w] * weight[w];
  }
  const float inv = lAll > 0.0f ? 1.0f / lAll : 0.0f;
  T* o = out + (static_cast<size_t>(t) * H + h) * D;
  for (int d = threadIdx.x; d < D; d += WARPS * 32) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) v += sharedAcc[w][d] * weight[w];
    o[d] = fromF<T>(v * inv);
  }
}

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

constexpr int kWarps = 8;  // a long context needs many loads in flight per (row, head)
constexpr int kUnroll = 4;

template <typename T, int VEC>
void launchAttention(void* out, const void* q, const void* kPool, const void* vPool, const int* cuSeqlensQ,
                     const int* contextLens, const int* blockTables, int T_, int S, int H, int Hkv, int blockSize,
                     int maxBlocks, int numBlocks, float scale, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(T_), static_cast<unsigned>(H));
  pagedAttentionKernel<T, VEC, kWarps, kUnroll><<<grid, kWarps * 32, 0, stream>>>(
      static_cast<T*>(out), static_cast<const T*>(q), static_cast<const T*>(kPool), static_cast<const T*>(vPool),
      cuSeqlensQ, contextLens, blockTables, S, H, Hkv, blockSize, maxBlocks, numBlocks, scale);
}

}  // namespace

bool attentionHeadDimSupported(int D) { return D == 32 || D == 64 || D == 128 || D == 256; }

void attention(void* out, const void* q, const void* kPool, const void* vPool, const int* cuSeqlensQ,
               const int* contextLens, const int* blockTables, int T, int S, int H, int Hkv, int D, int blockSize,
               int maxBlocks, int numBlocks, float scale, int dt, cudaStream_t stream) {
  if (T == 0 || H == 0) return;
  if (S <= 0 || Hkv <= 0 || H % Hkv != 0 || blockSize <= 0) throw Error("attention: bad dimensions");
  if (H > 65535) throw Error("attention: more than 65535 query heads");
  DISPATCH_FLOAT(dt, E, {
    switch (D) {
      case 32:
        launchAttention<E, 1>(out, q, kPool, vPool, cuSeqlensQ, contextLens, blockTables, T, S, H, Hkv, blockSize,
                              maxBlocks, numBlocks, scale, stream);
        break;
      case 64:
        launchAttention<E, 2>(out, q, kPool, vPool, cuSeqlensQ, contextLens, blockTables, T, S, H, Hkv, blockSize,
                              maxBlocks, numBlocks, scale, stream);
        break;
      case 128:
        launchAttention<E, 4>(out, q, kPool, vPool, cuSeqlensQ, contextLens, blockTables, T, S, H, Hkv, blockSize,
                              maxBlocks, numBlocks, scale, stream);
        break;
      case 256:
        launchAttention<E, 8>(out, q, kPool, vPool, cuSeqlensQ, contextLens, blockTables, T, S, H, Hkv, blockSize,
                              maxBlocks, numBlocks, scale, stream);
        break;
      default:
        throw Error("attention: head dim " + std::to_string(D) + " is not supported (32, 64, 128 or 256)");
    }
  });
  launchCheck();
}

}  // namespace tandem
