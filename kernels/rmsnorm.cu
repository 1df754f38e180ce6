/*
RMSNorm, optionally fused with the residual add of a pre-norm block.
  x, residual, sum and y are (R, C); w is (C); all of dtype T (f32 or bf16).
  y = w * round_T(x / sqrt(mean(x^2) + eps))        without residual
  sum = round_T(x + residual); y = the same on sum   with residual

As transformers' Qwen2RMSNorm: the mean of squares is taken in f32, the normalised row is
rounded to the input dtype and then multiplied by the weight. The fused sum is rounded before it
is normalised, exactly as an unfused add followed by the norm would be.

One block per row: pass 1 forms (and stores) the row and its sum of squares, pass 2 writes y,
re-reading the row this thread itself wrote (L1/L2 resident for model widths).

rmsnormBackward (w frozen): dy, dx of one dtype, x of another, w of any; with rstd as above and
g = w * dy: dx = rstd * g - x * rstd^3 * mean(g * x). The rounding of the normalised row in the
forward is passed straight through, as the CPU backend does. One block per row, two passes.
*/
#include "common.cuh"
#include "ops-train.h"
#include "pdl.cuh"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

template <typename T>
__global__ void rmsnormKernel(T* y, T* sum, const T* x, const T* residual, const T* w, float eps, int C) {
  __shared__ float shared[32];
  pdlLaunchDependents();
  pdlWait();
  const size_t o = static_cast<size_t>(blockIdx.x) * C;
  const T* src = x + o;
  float ss = 0.0f;
  if (residual != nullptr) {
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const T s = fromF<T>(toF(x[o + c]) + toF(residual[o + c]));
      sum[o + c] = s;
      const float v = toF(s);
      ss += v * v;
    }
    src = sum + o;
  } else {
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = toF(x[o + c]);
      ss += v * v;
    }
  }
  ss = blockSum(ss, shared);
  const float rstd = rsqrtf(ss / static_cast<float>(C) + eps);
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    y[o + c] = fromF<T>(toF(w[c]) * roundTo<T>(toF(src[c]) * rstd));
  }
}

template <typename TG, typename TX>
__global__ void rmsnormBackwardKernel(TG* dx, const TG* dy, const TX* x, const void* w, int wDt, float eps, int C) {
  __shared__ float shared[32];
  const size_t o = static_cast<size_t>(blockIdx.x) * C;
  float ss = 0.0f;
  float gx = 0.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = toF(x[o + c]);
    ss += v * v;
    gx += loadAny(w, wDt, c) * toF(dy[o + c]) * v;
  }
  ss = blockSum(ss, shared);
  gx = blockSum(gx, shared);
  const float rstd = rsqrtf(ss / static_cast<float>(C) + eps);
  const float k = rstd * rstd * rstd * gx / static_cast<float>(C);
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    dx[o + c] = fromF<TG>(rstd * loadAny(w, wDt, c) * toF(dy[o + c]) - toF(x[o + c]) * k);
  }
}

// ----------------------------------------------------------------------------
// kernel launchers

void rmsnorm(void* y, void* sum, const void* x, const void* residual, const void* w, float eps, int R, int C, int dt,
             cudaStream_t stream) {
  if (R == 0 || C == 0) return;
  const int threads = C >= 1024 ? 512 : C >= 256 ? 256 : C >= 64 ? 64 : 32;
  DISPATCH_FLOAT(dt, T,
                 launchPdl(rmsnormKernel<T>, dim3(R), dim3(threads), 0, stream, static_cast<T*>(y),
                           static_cast<T*>(sum), static_cast<const T*>(x), static_cast<const T*>(residual),
                           static_cast<const T*>(w), eps, C));
}

void rmsnormBackward(void* dx, const void* dy, int gDt, const void* x, int xDt, const void* w, int wDt, float eps, int R,
                     int C, cudaStream_t stream) {
  if (R == 0 || C == 0) return;
  const int threads = C >= 1024 ? 512 : C >= 256 ? 256 : C >= 64 ? 64 : 32;
  DISPATCH_FLOAT(gDt, TG,
                 DISPATCH_FLOAT(xDt, TX,
                                rmsnormBackwardKernel<TG, TX><<<R, threads, 0, stream>>>(
                                    static_cast<TG*>(dx), static_cast<const TG*>(dy), static_cast<const TX*>(x), w,
                                    wDt, eps, C)));
  launchCheck();
}

}  // namespace tandem
