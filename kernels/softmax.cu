/*
Row reductions over a vocabulary.
  logSoftmax:   x is (S, V) f32 or bf16, out is (S, V) f32:
                out[s, i] = x[s, i] - lse_s, lse_s = max_s + log(sum_j exp(x[s, j] - max_s))
  greedySample: logits is (S, V); ids is (S) i32, logprobs is (S) f32:
                ids[s] = argmax_i logits[s, i] (lowest i on ties), logprobs[s] = x[s, ids[s]] - lse_s

One block per row. Each thread keeps an online (max, sum of exp) over its strided share of the
row, so the row is read once for the statistics; the block merges them. greedySample reads the
row once for both its argmax and its statistics; below 64 rows of a large vocabulary it splits
each row over 32 blocks and merges their results with one warp per row. The max is subtracted
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
#include <climits>

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

// This thread's share of x[begin, end) (stride blockDim.x): its argmax (the first index of the
// maximum; i = V while nothing compared, so an all -inf share still names its first index) and
// its online (max, sum of exp), in one read.
template <typename T>
__device__ __forceinline__ void greedyShare(const T* x, int begin, int end, int V, ArgMax* best, MaxSum* ms) {
  ArgMax b{-INFINITY, V};
  MaxSum acc{-INFINITY, 0.0f};
  for (int i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float v = toF(x[i]);
    if (v > b.v || (b.i == V && v == b.v)) b = {v, i};
    if (v > acc.m) {
      acc.s = acc.s * expf(acc.m - v) + 1.0f;
      acc.m = v;
    } else if (acc.m != -INFINITY) {
      acc.s += expf(v - acc.m);
    }
  }
  *best = b;
  *ms = acc;
}

// The block's argmax and (max, sum); every thread gets them. `shared` holds 64 floats, sharedIdx 32 ints.
__device__ __forceinline__ void blockGreedy(ArgMax* best, MaxSum* ms, float* shared, int* sharedIdx) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = CEIL_DIV(blockDim.x, 32);
  ArgMax b = warpArgmax(*best);
  __syncthreads();
  if (lane == 0) {
    shared[warp] = b.v;
    sharedIdx[warp] = b.i;
  }
  __syncthreads();
  b = lane < warps ? ArgMax{shared[lane], sharedIdx[lane]} : ArgMax{-INFINITY, INT_MAX};
  *best = warpArgmax(b);
  *ms = blockMaxSum(*ms, shared);  // starts with a barrier: the argmax reads of shared are done
}

// The chosen id (all -inf or NaN rows: id 0, as the CPU argmax) and its raw logprob; the id also
// to keep[row] where keep is set (the next step's tokens read it there: no copy after the kernel).
template <typename T>
__device__ __forceinline__ void writeGreedy(int* ids, int* keep, float* logprobs, int row, const T* x, int V, ArgMax best,
                                            MaxSum ms) {
  const int id = best.i < V ? best.i : 0;
  ids[row] = id;
  if (keep != nullptr) keep[row] = id;
  logprobs[row] = toF(x[id]) - (ms.m + logf(ms.s));
}

// One block per row: the row's argmax and log-sum-exp in one read.
template <typename T>
__global__ void greedySampleKernel(int* ids, int* keep, float* logprobs, const T* logits, int V) {
  __shared__ float shared[64];
  __shared__ int sharedIdx[32];
  const T* x = logits + static_cast<size_t>(blockIdx.x) * V;
  ArgMax best;
  MaxSum ms;
  greedyShare(x, 0, V, V, &best, &ms);
  blockGreedy(&best, &ms, shared, sharedIdx);
  if (threadIdx.x == 0) writeGreedy(ids, keep, logprobs, blockIdx.x, x, V, best, ms);
}

// Few rows: the row split over kGreedySlices blocks (grid (slices, S)), each writing its slice's
// (max, sum, argmax value, argmax index) to partial (S, slices, 4); greedyMergeKernel, one warp
// per row, combines them. One block per row would read 600 KB of f32 logits with one SM.
constexpr int kGreedySlices = 32;
constexpr int kGreedySplitMaxRows = 64;  // from 64 rows on, one block per row fills the GPU
constexpr int kGreedySplitMinVocab = 16384;

template <typename T>
__global__ void greedySliceKernel(float* partial, const T* logits, int V) {
  __shared__ float shared[64];
  __shared__ int sharedIdx[32];
  const int slice = blockIdx.x;
  const int row = blockIdx.y;
  const int len = CEIL_DIV(V, kGreedySlices);
  const int begin = min(V, slice * len);
  const int end = min(V, begin + len);
  ArgMax best;
  MaxSum ms;
  greedyShare(logits + static_cast<size_t>(row) * V, begin, end, V, &best, &ms);
  blockGreedy(&best, &ms, shared, sharedIdx);
  if (threadIdx.x == 0) {
    float* p = partial + (static_cast<size_t>(row) * kGreedySlices + slice) * 4;
    p[0] = ms.m;
    p[1] = ms.s;
    p[2] = best.v;
    p[3] = __int_as_float(best.i);
  }
}

template <typename T>
__global__ void greedyMergeKernel(int* ids, int* keep, float* logprobs, const float* partial, const T* logits, int V) {
  const int row = blockIdx.x;
  const int lane = threadIdx.x;  // one warp; lane = slice (kGreedySlices = 32)
  const float* p = partial + (static_cast<size_t>(row) * kGreedySlices + lane) * 4;
  const MaxSum ms = warpMaxSum({p[0], p[1]});
  const ArgMax best = warpArgmax({p[2], __float_as_int(p[3])});
  if (lane == 0) writeGreedy(ids, keep, logprobs, row, logits + static_cast<size_t>(row) * V, V, best, ms);
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

namespace {
bool greedySplit(int S, int V) { return S < kGreedySplitMaxRows && V >= kGreedySplitMinVocab; }
}  // namespace

size_t greedySampleWorkspaceBytes(int S, int V) {
  return greedySplit(S, V) ? static_cast<size_t>(S) * kGreedySlices * 4 * sizeof(float) : 0;
}

void greedySample(int* ids, int* keep, float* logprobs, const void* logits, int S, int V, int dt, void* workspace,
                  cudaStream_t stream) {
  if (S == 0) return;
  if (V <= 0) throw Error("greedySample: empty vocabulary");
  if (greedySplit(S, V)) {
    if (workspace == nullptr) throw Error("greedySample: few rows need greedySampleWorkspaceBytes() of workspace");
    float* partial = static_cast<float*>(workspace);
    DISPATCH_FLOAT(dt, T, {
      greedySliceKernel<T><<<dim3(kGreedySlices, S), 256, 0, stream>>>(partial, static_cast<const T*>(logits), V);
      launchCheck();
      greedyMergeKernel<T><<<S, 32, 0, stream>>>(ids, keep, logprobs, partial, static_cast<const T*>(logits), V);
    });
  } else {
    DISPATCH_FLOAT(dt, T,
                   greedySampleKernel<T><<<S, rowThreads(V), 0, stream>>>(ids, keep, logprobs,
                                                                          static_cast<const T*>(logits), V));
  }
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
