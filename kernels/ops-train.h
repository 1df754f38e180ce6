/*
Host launchers of the training kernels (the Backend's in-place helpers and its backward and
training ops), as ops.h is for the forward ones: each enqueues its work on `stream` and returns
at once, throwing tandem::Error on a CUDA or cuBLAS failure. Pointers are device pointers, which
may sit at any element offset (views into flat parameter buffers) unless a launcher says
otherwise; dtype arguments are tandem::DType codes (f32 or bf16 for floats).

Dtype rule (src/backend/cuda/training-ops.ts decides, the kernels follow): every kernel computes
in f32. A gradient tensor it creates has the dtype of the incoming gradient (dy, dout, dlogp's
logits); an in-place destination (y of axpy, dw, dq/dk of ropeBackward) keeps its own dtype and
is rounded once per update. Products take operands of one dtype (the TS side rounds a mixed
f32 operand to bf16 first, as torch.autocast does) and accumulate in f32.
*/
#pragma once

#include "ops.h"

namespace tandem {

// elementwise.cu: y (n) += alpha * x (n); y and x of any float dtypes.
void axpy(void* y, int yDt, const void* x, int xDt, float alpha, size_t n, cudaStream_t stream);
// elementwise.cu: dy, dGate, dUp (n) of gDt; gate, up (n) of xDt.
void swigluBackward(void* dGate, void* dUp, const void* dy, int gDt, const void* gate, const void* up, int xDt, size_t n,
                    cudaStream_t stream);

// rmsnorm.cu: dx, dy (R, C) of gDt; x (R, C) of xDt; w (C) of wDt. dx = rstd w dy - x rstd^3 mean(w dy x).
void rmsnormBackward(void* dx, const void* dy, int gDt, const void* x, int xDt, const void* w, int wDt, float eps, int R,
                     int C, cudaStream_t stream);

// rope.cu: rotates dq (T, H, D) and dk (T, Hkv, D) of dt back by rope's angles, in place.
void ropeBackward(void* dq, void* dk, const int* positions, const void* invFreq, int freqDt, int T, int H, int Hkv, int D,
                  int dt, cudaStream_t stream);

// gather.cu: out (T, C) = 0, then out[idx[r]] += src[r] for r ascending (rows of dt; f32 sums,
// one rounding per element). Indices outside [0, T) are skipped. work is scratch of 2 * T ints.
void scatterAddRows(void* out, const void* src, const int* idx, int R, int T, int C, int dt, int* work,
                    cudaStream_t stream);

// softmax.cu: out (R) f32 = log softmax(logits (R, V) / temperature)[targets[r]].
void tokenLogprobs(float* out, const void* logits, const int* targets, float temperature, int R, int V, int dt,
                   cudaStream_t stream);
// softmax.cu: dlogits (R, V) of dt = (onehot(target) - softmax(logits / temperature)) * dlogp[r] / temperature.
void tokenLogprobsBackward(void* dlogits, const void* logits, const int* targets, float temperature, const void* dlogp,
                           int dlogpDt, int R, int V, int dt, cudaStream_t stream);

// linear.cu: dx (T, K) of dxDt = dy (T, N) @ w (N, K); dy and w share abDt.
void linearBackwardInput(void* dx, int dxDt, const void* dy, const void* w, int abDt, int T, int K, int N,
                         cudaStream_t stream);
// linear.cu: dw (N, K) of dwDt += alpha * dy (T, N)^T @ x (T, K); dy and x share abDt.
void linearBackwardWeight(void* dw, int dwDt, const void* dy, const void* x, int abDt, int T, int K, int N, float alpha,
                          cudaStream_t stream);

// attention_packed.cu: causal attention inside each packed sequence (rows [cu[s], cu[s+1])).
// q, out (T, H, D) and k, v (T, Hkv, D) of dt; lse (T, H) f32; cuSeqlens (S+1) i32. D <= 256.
void attentionPacked(void* out, float* lse, const void* q, const void* k, const void* v, const int* cuSeqlens, int T,
                     int S, int H, int Hkv, int D, float scale, int dt, cudaStream_t stream);
// attention_packed.cu: dq (T, H, D), dk, dv (T, Hkv, D) and dout of gDt; q, k, v, out of dt; lse (T, H) f32;
// delta (T, H) f32 is scratch the launcher fills with dout . out.
void attentionPackedBackward(void* dq, void* dk, void* dv, float* delta, const void* dout, int gDt, const void* q,
                             const void* k, const void* v, const void* out, const float* lse, const int* cuSeqlens,
                             int T, int S, int H, int Hkv, int D, float scale, int dt, cudaStream_t stream);
bool attentionPackedHeadDimSupported(int D);

// adamw.cu: one torch.optim.AdamW step over n f32 values, in place of param, m, v (see adamw.cu
// for the double-precision expressions it repeats from src/train/optimizer.ts).
struct AdamWArgs {
  double beta1, beta2, eps, decay, stepSize, bc2Sqrt, gradScale;
};
void adamw(float* param, const float* grad, float* m, float* v, size_t n, const AdamWArgs& h, cudaStream_t stream);
// adamw.cu: out (1) f32 = sum of x (n)^2 in double, in a fixed order (the same bits every run).
// partials holds kSumSquaresPartials doubles of scratch.
constexpr int kSumSquaresPartials = 512;
void sumSquares(float* out, const void* x, size_t n, int dt, double* partials, cudaStream_t stream);

}  // namespace tandem
