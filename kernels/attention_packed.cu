/*
Packed causal attention without a KV cache (the training forward) and its backward.
  q, out (T, H, D) and k, v (T, Hkv, D) of dt; dout, dq (T, H, D) and dk, dv (T, Hkv, D) of gDt;
  lse, delta (T, H) f32; cuSeqlens (S+1) i32: rows [cu[s], cu[s+1]) are sequence s.
Row i of a sequence attends to rows 0..i of it; query head h reads KV head h / (H / Hkv). With
s_j = scale q . k_j:
  forward:  lse = log sum_j exp(s_j),  out = sum_j exp(s_j - lse) v_j
  backward: p_j = exp(s_j - lse) (recomputed from the saved lse), delta = dout . out,
            ds_j = p_j (dout . v_j - delta),  dq = scale sum_j ds_j k_j,
            dk_j = scale sum_(i, h) ds q_i,  dv_j = sum_(i, h) p dout_i  (over the KV head's group)

A simple, correct first version (not yet FlashAttention's tensor-core tiles): one warp per
(query row, head) for the forward and dq, one warp per (key row, KV head) for dk and dv, so
every output is written by exactly one warp and summed in a fixed order (deterministic, no
atomics). Within a warp, each lane scores one key (or query) of a chunk of 32 against the
warp's own row, which is staged in shared memory as f32; the chunk's weights are then
broadcast lane by lane and each lane accumulates its share of the D output dims (lane + 32 e).
The forward keeps an online max and sum per chunk (FlashAttention's rescaling), in f32.
Consecutive warps of a block take consecutive heads of one row, so a GQA group's warps read the
same key rows (L1 hits).
*/
#include <cstdint>

#include "common.cuh"
#include "ops-train.h"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

constexpr int kAttnWarps = 8;
constexpr unsigned kFull = 0xffffffffu;

// The sequence holding packed row t: the largest s with cu[s] <= t (empty sequences skipped).
__device__ __forceinline__ int sequenceOf(const int* cu, int S, int t) {
  int lo = 0;
  int hi = S - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (cu[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// f32 row xs (shared, read by every lane alike) . row (this lane's own), vectorized when `vec`.
template <typename T>
__device__ __forceinline__ float dotRow(const float* xs, const T* row, int D, bool vec) {
  float dot = 0.0f;
  if (vec) {
    constexpr int N = 16 / sizeof(T);
    for (int d = 0; d < D; d += N) {
      float x[N];
      loadFloats<N>(row + d, x);
#pragma unroll
      for (int e = 0; e < N; e++) dot += xs[d + e] * x[e];
    }
  } else {
    for (int d = 0; d < D; d++) dot += xs[d] * toF(row[d]);
  }
  return dot;
}

// acc[e] += w * row[lane + 32 e] for the dims this lane owns.
template <int DPL, typename T>
__device__ __forceinline__ void accumulateRow(float (&acc)[DPL], float w, const T* row, int D, int lane) {
#pragma unroll
  for (int e = 0; e < DPL; e++) {
    const int d = lane + 32 * e;
    if (d < D) acc[e] += w * toF(row[d]);
  }
}

template <typename T>
__device__ __forceinline__ void stageRow(float* xs, const T* row, int D, float mul, int lane) {
  for (int d = lane; d < D; d += 32) xs[d] = toF(row[d]) * mul;
}

template <typename TQ, int DPL>
__global__ void attentionPackedKernel(TQ* out, float* lse, const TQ* q, const TQ* k, const TQ* v, const int* cu, int T,
                                      int S, int H, int Hkv, int D, float scale, bool vecK) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const long long gw = static_cast<long long>(blockIdx.x) * kAttnWarps + warp;
  if (gw >= static_cast<long long>(T) * H) return;  // no block-wide barrier below
  const int t = static_cast<int>(gw / H);
  const int h = static_cast<int>(gw % H);
  const int g = h / (H / Hkv);
  const int r0 = cu[sequenceOf(cu, S, t)];
  float* qs = smem + warp * D;
  stageRow(qs, q + (static_cast<size_t>(t) * H + h) * D, D, scale, lane);
  __syncwarp();

  float m = -INFINITY;
  float l = 0.0f;
  float acc[DPL] = {};
  for (int j0 = r0; j0 <= t; j0 += 32) {
    const int j = j0 + lane;
    const float sc = j <= t ? dotRow(qs, k + (static_cast<size_t>(j) * Hkv + g) * D, D, vecK) : -INFINITY;
    const float mNew = fmaxf(m, warpMax(sc));  // finite: lane 0's key j0 <= t always counts
    const float p = j <= t ? expf(sc - mNew) : 0.0f;
    const float corr = expf(m - mNew);  // 0 on the first chunk (m = -inf)
    l = l * corr + warpSum(p);
#pragma unroll
    for (int e = 0; e < DPL; e++) acc[e] *= corr;
    const int nk = min(32, t - j0 + 1);
    for (int jj = 0; jj < nk; jj++) {
      const float pj = __shfl_sync(kFull, p, jj);
      accumulateRow<DPL>(acc, pj, v + (static_cast<size_t>(j0 + jj) * Hkv + g) * D, D, lane);
    }
    m = mNew;
  }
  const float inv = 1.0f / l;
  TQ* o = out + (static_cast<size_t>(t) * H + h) * D;
#pragma unroll
  for (int e = 0; e < DPL; e++) {
    const int d = lane + 32 * e;
    if (d < D) o[d] = fromF<TQ>(acc[e] * inv);
  }
  if (lane == 0) lse[static_cast<size_t>(t) * H + h] = m + logf(l);
}

// dq of one (query row, head) per warp; also stores delta = dout . out for the dk / dv kernel.
template <typename TQ, typename TG, int DPL>
__global__ void attentionPackedDqKernel(TG* dq, float* delta, const TG* dout, const TQ* q, const TQ* k, const TQ* v,
                                        const TQ* out, const float* lse, const int* cu, int T, int S, int H, int Hkv,
                                        int D, float scale, bool vecK) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const long long gw = static_cast<long long>(blockIdx.x) * kAttnWarps + warp;
  if (gw >= static_cast<long long>(T) * H) return;
  const int t = static_cast<int>(gw / H);
  const int h = static_cast<int>(gw % H);
  const int g = h / (H / Hkv);
  const int r0 = cu[sequenceOf(cu, S, t)];
  const size_t row = (static_cast<size_t>(t) * H + h) * D;
  float* qs = smem + warp * 2 * D;
  float* dos = qs + D;
  stageRow(qs, q + row, D, scale, lane);
  stageRow(dos, dout + row, D, 1.0f, lane);
  float part = 0.0f;
  for (int d = lane; d < D; d += 32) part += toF(dout[row + d]) * toF(out[row + d]);
  const float dl = warpSum(part);
  __syncwarp();
  const float L = lse[static_cast<size_t>(t) * H + h];

  float acc[DPL] = {};
  for (int j0 = r0; j0 <= t; j0 += 32) {
    const int j = j0 + lane;
    float ds = 0.0f;
    if (j <= t) {
      const size_t kr = (static_cast<size_t>(j) * Hkv + g) * D;
      const float p = expf(dotRow(qs, k + kr, D, vecK) - L);
      ds = p * (dotRow(dos, v + kr, D, vecK) - dl);
    }
    const int nk = min(32, t - j0 + 1);
    for (int jj = 0; jj < nk; jj++) {
      const float w = __shfl_sync(kFull, ds, jj);
      accumulateRow<DPL>(acc, w, k + (static_cast<size_t>(j0 + jj) * Hkv + g) * D, D, lane);
    }
  }
#pragma unroll
  for (int e = 0; e < DPL; e++) {
    const int d = lane + 32 * e;
    if (d < D) dq[row + d] = fromF<TG>(scale * acc[e]);
  }
  if (lane == 0) delta[static_cast<size_t>(t) * H + h] = dl;
}

// dk and dv of one (key row, KV head) per warp: sums over the later query rows of its sequence
// and the query heads of its group, heads ascending, then rows ascending.
template <typename TQ, typename TG, int DPL>
__global__ void attentionPackedDkvKernel(TG* dk, TG* dv, const float* delta, const TG* dout, const TQ* q, const TQ* k,
                                         const TQ* v, const float* lse, const int* cu, int T, int S, int H, int Hkv,
                                         int D, float scale, bool vecQ, bool vecG) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const long long gw = static_cast<long long>(blockIdx.x) * kAttnWarps + warp;
  if (gw >= static_cast<long long>(T) * Hkv) return;
  const int j = static_cast<int>(gw / Hkv);
  const int g = static_cast<int>(gw % Hkv);
  const int group = H / Hkv;
  const int end = cu[sequenceOf(cu, S, j) + 1];
  const size_t kr = (static_cast<size_t>(j) * Hkv + g) * D;
  float* ks = smem + warp * 2 * D;
  float* vs = ks + D;
  stageRow(ks, k + kr, D, scale, lane);
  stageRow(vs, v + kr, D, 1.0f, lane);
  __syncwarp();

  float accK[DPL] = {};
  float accV[DPL] = {};
  for (int h = g * group; h < (g + 1) * group; h++) {
    for (int i0 = j; i0 < end; i0 += 32) {
      const int i = i0 + lane;
      float p = 0.0f;
      float ds = 0.0f;
      if (i < end) {
        const size_t qr = (static_cast<size_t>(i) * H + h) * D;
        const size_t ih = static_cast<size_t>(i) * H + h;
        p = expf(dotRow(ks, q + qr, D, vecQ) - lse[ih]);
        ds = p * (dotRow(vs, dout + qr, D, vecG) - delta[ih]);
      }
      const int ni = min(32, end - i0);
      for (int ii = 0; ii < ni; ii++) {
        const size_t qr = (static_cast<size_t>(i0 + ii) * H + h) * D;
        accumulateRow<DPL>(accV, __shfl_sync(kFull, p, ii), dout + qr, D, lane);
        accumulateRow<DPL>(accK, __shfl_sync(kFull, ds, ii), q + qr, D, lane);
      }
    }
  }
#pragma unroll
  for (int e = 0; e < DPL; e++) {
    const int d = lane + 32 * e;
    if (d < D) {
      dk[kr + d] = fromF<TG>(scale * accK[e]);
      dv[kr + d] = fromF<TG>(accV[e]);
    }
  }
}

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

// Rows of D elements of T starting at p can be read 16 bytes at a time.
template <typename T>
bool vectorRows(const void* p, int D) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (static_cast<size_t>(D) * sizeof(T)) % 16 == 0;
}

#define DISPATCH_DPL(D, DPL, ...)                                   \
  do {                                                              \
    if ((D) <= 32) {                                                \
      constexpr int DPL = 1;                                        \
      __VA_ARGS__;                                                  \
    } else if ((D) <= 64) {                                         \
      constexpr int DPL = 2;                                        \
      __VA_ARGS__;                                                  \
    } else if ((D) <= 128) {                                        \
      constexpr int DPL = 4;                                        \
      __VA_ARGS__;                                                  \
    } else {                                                        \
      constexpr int DPL = 8;                                        \
      __VA_ARGS__;                                                  \
    }                                                               \
  } while (0)

void checkDims(const char* op, int H, int Hkv, int D) {
  if (!attentionPackedHeadDimSupported(D)) throw Error(std::string(op) + ": head dim " + std::to_string(D) + " is not in 1..256");
  if (Hkv <= 0 || H % Hkv != 0) throw Error(std::string(op) + ": H must be a multiple of Hkv");
}

}  // namespace

bool attentionPackedHeadDimSupported(int D) { return D >= 1 && D <= 256; }

void attentionPacked(void* out, float* lse, const void* q, const void* k, const void* v, const int* cuSeqlens, int T,
                     int S, int H, int Hkv, int D, float scale, int dt, cudaStream_t stream) {
  if (T == 0 || H == 0) return;
  checkDims("attentionPacked", H, Hkv, D);
  const long long warps = static_cast<long long>(T) * H;
  const unsigned blocks = static_cast<unsigned>(CEIL_DIV(warps, static_cast<long long>(kAttnWarps)));
  const size_t smem = sizeof(float) * kAttnWarps * D;
  DISPATCH_FLOAT(dt, TQ,
                 DISPATCH_DPL(D, DPL,
                              attentionPackedKernel<TQ, DPL><<<blocks, 32 * kAttnWarps, smem, stream>>>(
                                  static_cast<TQ*>(out), lse, static_cast<const TQ*>(q), static_cast<const TQ*>(k),
                                  static_cast<const TQ*>(v), cuSeqlens, T, S, H, Hkv, D, scale,
                                  vectorRows<TQ>(k, D) && vectorRows<TQ>(v, D))));
  launchCheck();
}

void attentionPackedBackward(void* dq, void* dk, void* dv, float* delta, const void* dout, int gDt, const void* q,
                             const void* k, const void* v, const void* out, const float* lse, const int* cuSeqlens,
                             int T, int S, int H, int Hkv, int D, float scale, int dt, cudaStream_t stream) {
  if (T == 0 || H == 0) return;
  checkDims("attentionPackedBackward", H, Hkv, D);
  const size_t smem = sizeof(float) * kAttnWarps * 2 * D;
  const unsigned qBlocks = static_cast<unsigned>(CEIL_DIV(static_cast<long long>(T) * H, static_cast<long long>(kAttnWarps)));
  const unsigned kBlocks = static_cast<unsigned>(CEIL_DIV(static_cast<long long>(T) * Hkv, static_cast<long long>(kAttnWarps)));
  DISPATCH_FLOAT(dt, TQ, DISPATCH_FLOAT(gDt, TG, DISPATCH_DPL(D, DPL, {
    const bool vecK = vectorRows<TQ>(k, D) && vectorRows<TQ>(v, D);
    attentionPackedDqKernel<TQ, TG, DPL><<<qBlocks, 32 * kAttnWarps, smem, stream>>>(
        static_cast<TG*>(dq), delta, static_cast<const TG*>(dout), static_cast<const TQ*>(q),
        static_cast<const TQ*>(k), static_cast<const TQ*>(v), static_cast<const TQ*>(out), lse, cuSeqlens, T, S, H,
        Hkv, D, scale, vecK);
    launchCheck();
    attentionPackedDkvKernel<TQ, TG, DPL><<<kBlocks, 32 * kAttnWarps, smem, stream>>>(
        static_cast<TG*>(dk), static_cast<TG*>(dv), delta, static_cast<const TG*>(dout), static_cast<const TQ*>(q),
        static_cast<const TQ*>(k), static_cast<const TQ*>(v), lse, cuSeqlens, T, S, H, Hkv, D, scale,
        vectorRows<TQ>(q, D), vectorRows<TG>(dout, D));
    launchCheck();
  })));
}

}  // namespace tandem
