/*
The optimizer's two kernels.
  adamw:      param, grad, m, v are (n) f32; one torch.optim.AdamW step in place.
  sumSquares: x is (n) f32 or bf16; out (1) f32 = sum of x^2 (for the global gradient norm).

adamw repeats src/train/optimizer.ts's adamwStep (and the CPU backend's adamw.ts) operation for
operation: the same double-precision expressions in the same order, m and v rounded to f32 when
stored and read back as such, a gradScale other than 1 applied as fround(grad * gradScale). The
host computes the step's constants (bias corrections, decay, step size) in double and passes
them, and every operation here is an explicitly rounded intrinsic (no fused multiply-add), so
the GPU gives the CPU backend's floats bit for bit.

sumSquares is deterministic: a fixed grid of kSumSquaresPartials blocks (whatever the GPU) each
sums a fixed grid-stride share in double and reduces it in a fixed tree; a second one-block pass
adds the partials the same way. NaN and infinities come through (x^2 of an infinity is +inf).
*/
#include "common.cuh"
#include "ops-train.h"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

__global__ void adamwKernel(float* param, const float* grad, float* m, float* v, size_t n, AdamWArgs h) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  const double oneMinusB1 = __dadd_rn(1.0, -h.beta1);
  const double oneMinusB2 = __dadd_rn(1.0, -h.beta2);
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double g = h.gradScale == 1.0 ? static_cast<double>(grad[i])
                                        : static_cast<double>(static_cast<float>(__dmul_rn(grad[i], h.gradScale)));
    // m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g   (JS evaluates (1 - b2) * g * g left to right)
    const float mi = static_cast<float>(__dadd_rn(__dmul_rn(h.beta1, m[i]), __dmul_rn(oneMinusB1, g)));
    const float vi = static_cast<float>(__dadd_rn(__dmul_rn(h.beta2, v[i]), __dmul_rn(__dmul_rn(oneMinusB2, g), g)));
    m[i] = mi;
    v[i] = vi;
    // p = p decay - (stepSize m) / (sqrt(v) / bc2Sqrt + eps)
    const double denom = __dadd_rn(__ddiv_rn(__dsqrt_rn(vi), h.bc2Sqrt), h.eps);
    const double upd = __ddiv_rn(__dmul_rn(h.stepSize, mi), denom);
    param[i] = static_cast<float>(__dadd_rn(__dmul_rn(param[i], h.decay), -upd));
  }
}

// Fixed-shape block reduction of doubles: every thread's value, tree order fixed by thread index.
__device__ __forceinline__ double blockSumFixed(double x, double* shared) {
  shared[threadIdx.x] = x;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] = __dadd_rn(shared[threadIdx.x], shared[threadIdx.x + half]);
    __syncthreads();
  }
  return shared[0];
}

constexpr int kSumThreads = 256;

template <typename T>
__global__ void sumSquaresPartialKernel(double* partials, const T* x, size_t n) {
  __shared__ double shared[kSumThreads];
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  double s = 0.0;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = toF(x[i]);
    s = __dadd_rn(s, __dmul_rn(v, v));
  }
  s = blockSumFixed(s, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void sumSquaresFinalKernel(float* out, const double* partials, int count) {
  __shared__ double shared[kSumThreads];
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s = __dadd_rn(s, partials[i]);
  s = blockSumFixed(s, shared);
  if (threadIdx.x == 0) out[0] = static_cast<float>(s);
}

// ----------------------------------------------------------------------------
// kernel launchers

void adamw(float* param, const float* grad, float* m, float* v, size_t n, const AdamWArgs& h, cudaStream_t stream) {
  if (n == 0) return;
  const int threads = 256;
  const size_t blocks = CEIL_DIV(n, static_cast<size_t>(threads));
  adamwKernel<<<static_cast<int>(blocks < 4096 ? blocks : 4096), threads, 0, stream>>>(param, grad, m, v, n, h);
  launchCheck();
}

void sumSquares(float* out, const void* x, size_t n, int dt, double* partials, cudaStream_t stream) {
  DISPATCH_FLOAT(dt, T,
                 sumSquaresPartialKernel<T><<<kSumSquaresPartials, kSumThreads, 0, stream>>>(
                     partials, static_cast<const T*>(x), n));
  launchCheck();
  sumSquaresFinalKernel<<<1, kSumThreads, 0, stream>>>(out, partials, kSumSquaresPartials);
  launchCheck();
}

}  // namespace tandem
