/*
Shared by every kernel file: error checks, the dtype codes the binding passes in, bf16/f32
load-store helpers and block reductions.

Errors: every CUDA call goes through cudaCheck, every launch is followed by launchCheck();
a failure throws tandem::Error("file.cu:123: cudaErrorX (text) in <call>"), which the binding
turns into a JS exception (or a rejected promise for waits on the GPU).
*/
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cstdlib>
#include <cstring>
#include "ops.h"

namespace tandem {

inline const char* baseName(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

inline void cudaCheckImpl(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) {
    throw Error(std::string(baseName(file)) + ":" + std::to_string(line) + ": " + cudaGetErrorName(err) + " (" +
                cudaGetErrorString(err) + ") in " + call);
  }
}

}  // namespace tandem

// Whether environment variable `name` is set to "0": the switches that turn a fast path off for
// comparisons (TANDEM_GEMV, TANDEM_PDL, TANDEM_TILED_DECODE,
// TANDEM_FUSED_ROPE_ATTENTION). Read once per
// switch by its caller (a static), so a benchmark sets them before the process starts.
inline bool envSwitchOff(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, "0") == 0;
}

// An opt-in switch: VAR=1 in the environment.
inline bool envSwitchOn(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, "1") == 0;
}

#define cudaCheck(call) ::tandem::cudaCheckImpl((call), #call, __FILE__, __LINE__)
#define launchCheck() ::tandem::cudaCheckImpl(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

// Runs the statement with `T` bound to the storage type of float dtype `dt`.
#define DISPATCH_FLOAT(dt, T, ...)                                                         \
  do {                                                                                     \
    switch (dt) {                                                                          \
      case ::tandem::kF32: {                                                               \
        using T = float;                                                                   \
        __VA_ARGS__;                                                                       \
        break;                                                                             \
      }                                                                                    \
      case ::tandem::kBF16: {                                                              \
        using T = __nv_bfloat16;                                                           \
        __VA_ARGS__;                                                                       \
        break;                                                                             \
      }                                                                                    \
      default:                                                                             \
        throw ::tandem::Error(std::string(__func__) + ": unsupported float dtype code " +  \
                              std::to_string(static_cast<int>(dt)));                       \
    }                                                                                      \
  } while (0)

namespace tandem {

// 16 bytes global -> shared, asynchronously; zero-filled when !valid.
__device__ __forceinline__ void cpAsync16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;" ::); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

__device__ __forceinline__ float toF(float x) { return x; }
__device__ __forceinline__ float toF(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T fromF(float x);
template <>
__device__ __forceinline__ float fromF<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Rounds x to the storage precision of T and back (identity for f32).
template <typename T>
__device__ __forceinline__ float roundTo(float x) { return toF(fromF<T>(x)); }

// A float read from a table whose dtype is only known at run time (small tables only).
__device__ __forceinline__ float loadAny(const void* p, int dt, long long i) {
  return dt == kBF16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}

// Up to 16 bytes of consecutive elements moved as one load or store.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int N, typename T>
__device__ __forceinline__ void loadFloats(const T* p, float (&out)[N]) {
  Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; i++) out[i] = toF(pk.v[i]);
}

template <int N, typename T>
__device__ __forceinline__ void storeFloats(T* p, const float (&in)[N]) {
  Pack<T, N> pk;
#pragma unroll
  for (int i = 0; i < N; i++) pk.v[i] = fromF<T>(in[i]);
  *reinterpret_cast<Pack<T, N>*>(p) = pk;
}

__device__ __forceinline__ float warpSum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

__device__ __forceinline__ float warpMax(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// An argmax candidate: the value and its index. `better` orders them as every argmax here does:
// the larger value, and on ties the lower index (NaN never wins a comparison).
struct ArgMax {
  float v;
  int i;
};
__device__ __forceinline__ bool better(ArgMax a, ArgMax b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }

// The warp's best candidate; every lane gets it.
__device__ __forceinline__ ArgMax warpArgmax(ArgMax a) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const ArgMax other{__shfl_xor_sync(0xffffffffu, a.v, o), __shfl_xor_sync(0xffffffffu, a.i, o)};
    if (better(other, a)) a = other;
  }
  return a;
}

// Sum over the block; every thread gets the result. `shared` holds at least 32 floats.
// Must be reached by all threads of the block.
__device__ __forceinline__ float blockSum(float x, float* shared) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = CEIL_DIV(blockDim.x, 32);
  x = warpSum(x);
  __syncthreads();  // shared may still be read by a previous reduction
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  x = lane < warps ? shared[lane] : 0.0f;
  return warpSum(x);
}

// Online-softmax state of a set of values: m = max, s = sum of exp(x - m).
struct MaxSum {
  float m;
  float s;
};

__device__ __forceinline__ MaxSum mergeMaxSum(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.0f};
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

__device__ __forceinline__ MaxSum warpMaxSum(MaxSum v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
    v = mergeMaxSum(v, other);
  }
  return v;
}

// Block-wide merge; every thread gets the result. `shared` holds at least 64 floats.
__device__ __forceinline__ MaxSum blockMaxSum(MaxSum v, float* shared) {
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int warps = CEIL_DIV(blockDim.x, 32);
  v = warpMaxSum(v);
  __syncthreads();
  if (lane == 0) {
    shared[warp] = v.m;
    shared[32 + warp] = v.s;
  }
  __syncthreads();
  v = lane < warps ? MaxSum{shared[lane], shared[32 + lane]} : MaxSum{-INFINITY, 0.0f};
  return warpMaxSum(v);
}

}  // namespace tandem
