/*
Rotary position embedding in place, NeoX / Qwen half-rotation layout.
  q is (T, H, D), k is (T, Hkv, D) of dtype T (f32 or bf16); positions is (T) i32;
  invFreq is (D/2), f32 or bf16.
For pair j < D/2 of every head of token t, with a = positions[t] * invFreq[j] rounded to f32
(as transformers forms inv_freq @ position_ids in f32):
  x[j]       = x[j] * cos(a) - x[j + D/2] * sin(a)
  x[j + D/2] = x[j + D/2] * cos(a) + x[j] * sin(a)
(rope.cuh: cos and sin in double precision of the f32 angle, rounded to f32; no FMA contraction).

One thread per (token, pair): it computes the angle once and rotates that pair in every q and k
head of the token; consecutive threads touch consecutive elements of a head.

ropeWriteKv: rope, then k and v (T, Hkv, D) stored into one layer's paged pools (numSlots, Hkv, D)
at slots[t] (slots outside [0, numSlots) are skipped, as scatterRows skips them): one launch for
what rope + two scatterRows did at every layer of a decode step. One block per token; the thread
that rotates a pair of k writes it to the pool and copies the same pair of v.

ropeBackward: the gradient of a rotation is its transpose, the rotation by -a: the same kernel
with sin negated (exactly), in place on dq (T, H, D) and dk (T, Hkv, D).
*/
#include "common.cuh"
#include "ops-train.h"
#include "pdl.cuh"
#include "rope.cuh"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

template <typename T>
__device__ __forceinline__ void rotatePair(T* x, int half, float c, float s) {
  float ra, rb;
  ropeRotate(toF(x[0]), toF(x[half]), c, s, &ra, &rb);
  x[0] = fromF<T>(ra);
  x[half] = fromF<T>(rb);
}

template <typename T>
__global__ void ropeKernel(T* q, T* k, const int* positions, const void* invFreq, int freqDt, int T_, int H, int Hkv,
                           int D, float sinSign) {
  const int half = D / 2;
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= static_cast<long long>(T_) * half) return;
  const int t = static_cast<int>(i / half);
  const int j = static_cast<int>(i % half);
  float c, s;
  ropeCosSin(positions[t], invFreq, freqDt, j, &c, &s);
  s *= sinSign;
  T* qt = q + static_cast<size_t>(t) * H * D + j;
  for (int h = 0; h < H; h++) rotatePair(qt + static_cast<size_t>(h) * D, half, c, s);
  T* kt = k + static_cast<size_t>(t) * Hkv * D + j;
  for (int h = 0; h < Hkv; h++) rotatePair(kt + static_cast<size_t>(h) * D, half, c, s);
}

constexpr int kRopeMaxHalf = 128;  // head dims up to 256

// One block per token: its D/2 angles' cos / sin first (shared memory), then one thread per
// (head, pair) over the q and k heads, so no thread walks the heads one after another (at batch 1
// that serial chain of dependent loads and stores was most of the kernel's time).
template <typename T>
__global__ void ropeWriteKvKernel(T* __restrict__ q, T* __restrict__ k, const T* __restrict__ v,
                                  const int* __restrict__ positions, const void* __restrict__ invFreq, int freqDt,
                                  T* __restrict__ kPool, T* __restrict__ vPool, const int* __restrict__ slots,
                                  int numSlots, int H, int Hkv, int D) {
  __shared__ float cosOf[kRopeMaxHalf];
  __shared__ float sinOf[kRopeMaxHalf];
  pdlLaunchDependents();
  pdlWait();
  const int half = D / 2;
  const int t = blockIdx.x;
  const int position = positions[t];
  for (int j = threadIdx.x; j < half; j += blockDim.x) ropeCosSin(position, invFreq, freqDt, j, &cosOf[j], &sinOf[j]);
  __syncthreads();
  const int slot = slots[t];
  const bool store = slot >= 0 && slot < numSlots;
  T* qt = q + static_cast<size_t>(t) * H * D;
  T* kt = k + static_cast<size_t>(t) * Hkv * D;
  const T* vt = v + static_cast<size_t>(t) * Hkv * D;
  const size_t to = static_cast<size_t>(slot) * Hkv * D;
  for (int i = threadIdx.x; i < (H + Hkv) * half; i += blockDim.x) {
    const int h = i / half;
    const int j = i % half;
    const float c = cosOf[j];
    const float s = sinOf[j];
    if (h < H) {
      rotatePair(qt + static_cast<size_t>(h) * D + j, half, c, s);
    } else {
      const size_t off = static_cast<size_t>(h - H) * D + j;
      rotatePair(kt + off, half, c, s);
      if (store) {
        kPool[to + off] = kt[off];
        kPool[to + off + half] = kt[off + half];
        vPool[to + off] = vt[off];
        vPool[to + off + half] = vt[off + half];
      }
    }
  }
}

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

void rotate(void* q, void* k, const int* positions, const void* invFreq, int freqDt, int T, int H, int Hkv, int D, int dt,
            float sinSign, cudaStream_t stream) {
  const long long pairs = static_cast<long long>(T) * (D / 2);
  if (pairs == 0) return;
  const int threads = 128;
  const unsigned blocks = static_cast<unsigned>(CEIL_DIV(pairs, static_cast<long long>(threads)));
  DISPATCH_FLOAT(dt, E,
                 ropeKernel<E><<<blocks, threads, 0, stream>>>(static_cast<E*>(q), static_cast<E*>(k), positions,
                                                               invFreq, freqDt, T, H, Hkv, D, sinSign));
  launchCheck();
}

}  // namespace

void rope(void* q, void* k, const int* positions, const void* invFreq, int freqDt, int T, int H, int Hkv, int D, int dt,
          cudaStream_t stream) {
  rotate(q, k, positions, invFreq, freqDt, T, H, Hkv, D, dt, 1.0f, stream);
}

void ropeWriteKv(void* q, void* k, const void* v, const int* positions, const void* invFreq, int freqDt, void* kPool,
                 void* vPool, const int* slots, int numSlots, int T, int H, int Hkv, int D, int dt, cudaStream_t stream) {
  if (T == 0 || D == 0) return;
  if (D % 2 != 0 || D / 2 > kRopeMaxHalf) throw Error("ropeWriteKv: head dim " + std::to_string(D) + " (even, up to 256)");
  const int threads = 128;
  DISPATCH_FLOAT(dt, E,
                 launchPdl(ropeWriteKvKernel<E>, dim3(static_cast<unsigned>(T)), dim3(threads), 0, stream,
                           static_cast<E*>(q), static_cast<E*>(k), static_cast<const E*>(v), positions, invFreq, freqDt,
                           static_cast<E*>(kPool), static_cast<E*>(vPool), slots, numSlots, H, Hkv, D));
}

void ropeBackward(void* dq, void* dk, const int* positions, const void* invFreq, int freqDt, int T, int H, int Hkv, int D,
                  int dt, cudaStream_t stream) {
  rotate(dq, dk, positions, invFreq, freqDt, T, H, Hkv, D, dt, -1.0f, stream);
}

}  // namespace tandem
