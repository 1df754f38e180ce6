/*
Row reductions over a vocabulary.
  logSoftmax:   x is (S, V) f32 or bf16, out is (S, V) f32:
                out[s, i] = x[s, i] - lse_s, lse_s = max_s + log(sum_j exp(x[s, j] - max_s))
  greedySample: logits is (S, V); ids is (S) i32, logprobs is (S) f32:
                ids[s] = argmax_i logits[s, i] (lowest i on ties), logprobs[s] = x[s, ids[s]] - lse_s

One block per row. Each thread keeps an online (max, sum of exp) over its strided share of the
row, so the row is read once for the statistics; the block merges them. The max is subtracted
inside the exponentials, so no magnitude overflows. lse is formed in f32 and subtracted from x
exactly as the CPU backend (softmax.ts) and the conformance reference do, so every backend
agrees even where |x| ~ 1e38 absorbs the log(sum) term.

tokenLogprobs:         logits (R, V), targets (R) i32, out (R) f32; with z = logits / temperature:
                       out[r] = z[t] - log(sum_v exp(z[v]))
tokenLogprobsBackward: dlogits (R, V) = (onehot(t) - softmax(z)) * dlogp[r] / temperature, in
                       the logits' dtype (dlogp any float dtype). A row with dlogp = 0 is zeroed.
As the CPU backend (logprobs.ts): the row max m of the raw logits is found first (temperature >
0, so it is also z's max), then s = sum exp((x - m) / temperature), so logits of any magnitude
stay finite; the row is read twice (max, sum) and the backward a third time to write.
*/
#include "common.cuh"
#include "ops-train.h"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

template <typename T>
__device__ __forceinline__ MaxSum rowMaxSum(const T* x, int V, float* shared) {
  MaxSum acc{-INFINITY, 0.0f};
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = toF(x[i]);
    if (v > acc.m) {
      acc.s = acc.s * expf(acc.m - v) + 1.0f;
      acc.m = v;
    } else if (acc.m != -INFINITY) {  // (-inf entries before any finite one add nothing)
      acc.s += expf(v - acc.m);
    }
  }
  return blockMaxSum(acc, shared);
}

template <typename T>
__global__ void logSoftmaxKernel(float* out, const T* x, int V) {
  __shared__ float shared[64];
  const size_t o = static_cast<size_t>(blockIdx.x) * V;
  const MaxSum ms = rowMaxSum(x + o, V, shared);
  const float lse = ms.m + logf(ms.s);
  for (int i = threadIdx.x; i < V; i += blockDim.x) out[o + i] = toF(x[o + i]) - lse;
}

template <typename T>
__global__ void greedySampleKernel(int* ids, float* logprobs, const T* logits, int V) {
  __shared__ float shared[64];
  __shared__ int sharedIdx[32];
  const size_t o = static_cast<size_t>(blockIdx.x) * V;
  const T* x = logits + o;
  // Argmax: the first (lowest) index of the maximum of this thread's share.
  float best = -INFINITY;
  int bestIdx = V;
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = toF(x[i]);
    if (v > best || (bestIdx == V && v == best)) {
      best = v;
      bestIdx = i;
    }
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, off);
    const int j = __shfl_xor_sync(0xffffffffu, bestIdx, off);
    if (v > best || (v == best && j < bestIdx)) {
      best = v;
      bestIdx = j;
    }
  }
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = CEIL_DIV(blockDim.x, 32);
  if (lane == 0) {
    shared[warp] = best;
    sharedIdx[warp] = bestIdx;
  }
  __syncthreads();
  if (warp == 0) {
    best = lane < warps ? shared[lane] : -INFINITY;
    bestIdx = lane < warps ? sharedIdx[lane] : V;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float v = __shfl_xor_sync(0xffffffffu, best, off);
      const int j = __shfl_xor_sync(0xffffffffu, bestIdx, off);
      if (v > best || (v == best && j < bestIdx)) {
        best = v;
        bestIdx = j;
      }
    }
  }
  const MaxSum ms = rowMaxSum(x, V, shared);  // starts with a barrier: warp 0 is done with shared
  if (threadIdx.x == 0) {
    // A row of NaNs (or all -inf) has no maximum: fall back to id 0, as the CPU argmax does.
    const int id = bestIdx < V ? bestIdx : 0;
    ids[blockIdx.x] = id;
    logprobs[blockIdx.x] = toF(x[id]) - (ms.m + logf(ms.s));
  }
}

// Row max, then log(sum exp((x - max) * invT)), block-wide; every thread gets both.
template <typename T>
__device__ __forceinline__ MaxSum rowTemperedStats(const T* x, int V, float invT, float* shared) {
  float m = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, toF(x[i]));
  m = warpMax(m);
  __syncthreads();
  if (threadIdx.x % 32 == 0) shared[threadIdx.x / 32] = m;
  __syncthreads();
  m = threadIdx.x % 32 < CEIL_DIV(blockDim.x, 32) ? shared[threadIdx.x % 32] : -INFINITY;
  m = warpMax(m);
  float s = 0.0f;
  for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf((toF(x[i]) - m) * invT);
  s = blockSum(s, shared);
  return {m, logf(s)};
}

template <typename T>
__global__ void tokenLogprobsKernel(float* out, const T* logits, const int* targets, float invT, int V) {
  __shared__ float shared[32];
  const T* x = logits + static_cast<size_t>(blockIdx.x) * V;
  const MaxSum st = rowTemperedStats(x, V, invT, shared);
  if (threadIdx.x == 0) out[blockIdx.x] = (toF(x[targets[blockIdx.x]]) - st.m) * invT - st.s;
}

template <typename T>
__global__ void tokenLogprobsBackwardKernel(T* dlogits, const T* logits, const int* targets, float invT,
                                            const void* dlogp, int dlogpDt, int V) {
  __shared__ float shared[32];
  const size_t o = static_cast<size_t>(blockIdx.x) * V;
  const float c = loadAny(dlogp, dlogpDt, blockIdx.x) * invT;
  if (c == 0.0f) {  // a row outside the loss (padding, a masked token)
    for (int i = threadIdx.x; i < V; i += blockDim.x) dlogits[o + i] = fromF<T>(0.0f);
    return;
  }
  const T* x = logits + o;
  const MaxSum st = rowTemperedStats(x, V, invT, shared);
  const int t = targets[blockIdx.x];
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float p = expf((toF(x[i]) - st.m) * invT - st.s);
    dlogits[o + i] = fromF<T>(i == t ? c * (1.0f - p) : -c * p);
  }
}

// ----------------------------------------------------------------------------
// kernel launchers

namespace {
int rowThreads(int V) { return V >= 4096 ? 1024 : V >= 512 ? 256 : 32; }
}  // namespace

void logSoftmax(float* out, const void* x, int S, int V, int dt, cudaStream_t stream) {
  if (S == 0 || V == 0) return;
  DISPATCH_FLOAT(dt, T, logSoftmaxKernel<T><<<S, rowThreads(V), 0, stream>>>(out, static_cast<const T*>(x), V));
  launchCheck();
}

void greedySample(int* ids, float* logprobs, const void* logits, int S, int V, int dt, cudaStream_t stream) {
  if (S == 0) return;
  if (V <= 0) throw Error("greedySample: empty vocabulary");
  DISPATCH_FLOAT(dt, T,
                 greedySampleKernel<T><<<S, rowThreads(V), 0, stream>>>(ids, logprobs, static_cast<const T*>(logits),
                                                                        V));
  launchCheck();
}

void tokenLogprobs(float* out, const void* logits, const int* targets, float temperature, int R, int V, int dt,
                   cudaStream_t stream) {
  if (R == 0) return;
  if (V <= 0) throw Error("tokenLogprobs: empty vocabulary");
  DISPATCH_FLOAT(dt, T,
                 tokenLogprobsKernel<T><<<R, rowThreads(V), 0, stream>>>(out, static_cast<const T*>(logits), targets,
                                                                         1.0f / temperature, V));
  launchCheck();
}

void tokenLogprobsBackward(void* dlogits, const void* logits, const int* targets, float temperature, const void* dlogp,
                           int dlogpDt, int R, int V, int dt, cudaStream_t stream) {
  if (R == 0) return;
  if (V <= 0) throw Error("tokenLogprobsBackward: empty vocabulary");
  DISPATCH_FLOAT(dt, T,
                 tokenLogprobsBackwardKernel<T><<<R, rowThreads(V), 0, stream>>>(
                     static_cast<T*>(dlogits), static_cast<const T*>(logits), targets, 1.0f / temperature, dlogp,
                     dlogpDt, V));
  launchCheck();
}

}  // namespace tandem
