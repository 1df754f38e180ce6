/*
Elementwise ops over n elements of dtype T (f32 or bf16), computed in f32, rounded once on store.
  swiglu: gate, up, out: out = silu(gate) * up, silu(g) = g / (1 + exp(-g))
  add:    a, b, out:     out = a + b
  cast:   x of one float dtype to out of another (f32 <-> bf16)
  axpy:   y += alpha * x, y and x each f32 or bf16 (y is rounded once, in its own dtype)
  swigluBackward: dy, dGate, dUp of one dtype, gate and up of another, with s = sigmoid(gate):
          dUp = dy * g * s,  dGate = dy * up * s * (1 + g * (1 - s))

Grid-stride loops over packs of 16 bytes (8 bf16 / 4 f32), then a scalar tail; tensors start at
256-byte aligned addresses (the allocator's and the arena's), so packs are aligned.
*/
#include "common.cuh"
#include "ops-train.h"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

struct SwigluOp {
  __device__ __forceinline__ float operator()(float g, float u) const {
    // For very negative g, expf(-g) overflows to inf and g / inf -> -0: the right limit.
    return g / (1.0f + expf(-g)) * u;
  }
};

struct AddOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

template <typename T, typename Op>
__global__ void binaryKernel(T* out, const T* a, const T* b, size_t n, Op op) {
  constexpr int N = 16 / sizeof(T);
  const size_t packs = n / N;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  const size_t first = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (size_t p = first; p < packs; p += stride) {
    float x[N], y[N];
    loadFloats<N>(a + p * N, x);
    loadFloats<N>(b + p * N, y);
#pragma unroll
    for (int i = 0; i < N; i++) x[i] = op(x[i], y[i]);
    storeFloats<N>(out + p * N, x);
  }
  for (size_t i = packs * N + first; i < n; i += stride) out[i] = fromF<T>(op(toF(a[i]), toF(b[i])));
}

template <typename TOut, typename TIn>
__global__ void castKernel(TOut* out, const TIn* x, size_t n) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    out[i] = fromF<TOut>(toF(x[i]));
  }
}

// y and x may be views at any element offset, so these use scalar (coalesced) accesses.
template <typename TY, typename TX>
__global__ void axpyKernel(TY* y, const TX* x, float alpha, size_t n) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    y[i] = fromF<TY>(toF(y[i]) + alpha * toF(x[i]));
  }
}

template <typename TG, typename TX>
__global__ void swigluBackwardKernel(TG* dGate, TG* dUp, const TG* dy, const TX* gate, const TX* up, size_t n) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float g = toF(gate[i]);
    const float d = toF(dy[i]);
    // expf(-g) overflows to inf for very negative g: s = 0 and both gradients reach their limit 0.
    const float s = 1.0f / (1.0f + expf(-g));
    dUp[i] = fromF<TG>(d * g * s);
    dGate[i] = fromF<TG>(d * toF(up[i]) * s * (1.0f + g * (1.0f - s)));
  }
}

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

constexpr int kThreads = 256;

int gridFor(size_t work) {
  // Enough blocks to fill the GPU several times over; grid-stride loops do the rest.
  const size_t blocks = CEIL_DIV(work, static_cast<size_t>(kThreads));
  return static_cast<int>(blocks < 8192 ? (blocks > 0 ? blocks : 1) : 8192);
}

bool aligned16(const void* p) { return reinterpret_cast<size_t>(p) % 16 == 0; }

template <typename Op>
void binary(void* out, const void* a, const void* b, size_t n, int dt, Op op, cudaStream_t stream) {
  if (n == 0) return;
  if (!aligned16(out) || !aligned16(a) || !aligned16(b)) throw Error("elementwise: operands must be 16-byte aligned");
  DISPATCH_FLOAT(dt, T,
                 binaryKernel<T, Op><<<gridFor(n / (16 / sizeof(T)) + 1), kThreads, 0, stream>>>(
                     static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b), n, op));
  launchCheck();
}

}  // namespace

void swiglu(void* out, const void* gate, const void* up, size_t n, int dt, cudaStream_t stream) {
  binary(out, gate, up, n, dt, SwigluOp{}, stream);
}

void add(void* out, const void* a, const void* b, size_t n, int dt, cudaStream_t stream) {
  binary(out, a, b, n, dt, AddOp{}, stream);
}

void cast(void* out, int outDt, const void* x, int xDt, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  DISPATCH_FLOAT(outDt, TOut,
                 DISPATCH_FLOAT(xDt, TIn,
                                castKernel<TOut, TIn><<<gridFor(n), kThreads, 0, stream>>>(
                                    static_cast<TOut*>(out), static_cast<const TIn*>(x), n)));
  launchCheck();
}

void axpy(void* y, int yDt, const void* x, int xDt, float alpha, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  DISPATCH_FLOAT(yDt, TY,
                 DISPATCH_FLOAT(xDt, TX,
                                axpyKernel<TY, TX><<<gridFor(n), kThreads, 0, stream>>>(
                                    static_cast<TY*>(y), static_cast<const TX*>(x), alpha, n)));
  launchCheck();
}

void swigluBackward(void* dGate, void* dUp, const void* dy, int gDt, const void* gate, const void* up, int xDt, size_t n,
                    cudaStream_t stream) {
  if (n == 0) return;
  DISPATCH_FLOAT(gDt, TG,
                 DISPATCH_FLOAT(xDt, TX,
                                swigluBackwardKernel<TG, TX><<<gridFor(n), kThreads, 0, stream>>>(
                                    static_cast<TG*>(dGate), static_cast<TG*>(dUp), static_cast<const TG*>(dy),
                                    static_cast<const TX*>(gate), static_cast<const TX*>(up), n)));
  launchCheck();
}

}  // namespace tandem
