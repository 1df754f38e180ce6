/*
Linear layer: out = x @ w^T + bias, fp32 accumulation.
  x is (T, K), w is (N, K) (PyTorch's nn.Linear layout), bias is (N), out is (T, N).
  x and w share one dtype (bf16 or f32); out may be bf16 or f32; bias may be either.

cuBLASLt does the work. In its column-major terms the row-major out (T, N) is D = out^T (N x T,
ld N), so D = op(A) * op(B) with A = w seen as a K x N matrix (ld K) transposed and B = x seen
as K x T (ld K): m = N, n = T, k = K. bf16 operands use CUBLAS_COMPUTE_32F (tensor cores, fp32
accumulate); f32 operands also use CUBLAS_COMPUTE_32F, i.e. true fp32, no TF32. The bias rides
in the epilogue (CUBLASLT_EPILOGUE_BIAS) when cuBLASLt offers an algorithm for it, else a small
kernel adds it afterwards. A plan (descriptors + the heuristic's algorithm) is cached per shape
and dtype combination, so a repeated step only sets the bias pointer and calls cublasLtMatmul.

Batches of at most kGemvMaxRows rows (decode) go to gemv.cu's weight-streaming kernel first when
their operands suit it (bf16, K % 8 == 0, 16-byte aligned).

Fallback: a plain tiled kernel (fp32 accumulate) for what cuBLASLt declines (no algorithm for
the shape, K = 0, pointers not 256-byte aligned) and for builds without cuBLASLt
(TANDEM_NO_CUBLASLT, or no cublasLt.h), where it is the only path: correct, but slow.

Backward (the two products of linear's gradient; dy and the other operand share a dtype):
  input:  dx (T, K)  = dy (T, N) @ w (N, K)
  weight: dw (N, K) += alpha * dy (T, N)^T @ x (T, K)      (beta = 1: dw accumulates)
Column-major, a row-major (R, C) matrix is C x R with ld C, so both are D = A op(B) with A not
transposed: input D = dx^T (K x T) = w^T (K x N, ld K) * dy^T (N x T, ld N); weight
D = dw^T (K x N) = x^T (K x T, ld K) * (dy^T)^T (dy^T is N x T, ld N, transposed). dw is often
a view into a flat f32 buffer at any element offset, so these plans tell cuBLASLt each
pointer's real alignment instead of assuming 256 bytes. The fallback is one strided tiled kernel
for both (out (I, J) = alpha * A (I, R) @ B (R, J) (+ out), B row-major).
*/
#include "common.cuh"
#include "ops-train.h"

#if defined(TANDEM_NO_CUBLASLT)
#define TANDEM_HAVE_CUBLASLT 0
#elif __has_include(<cublasLt.h>)
#include <cublasLt.h>
#define TANDEM_HAVE_CUBLASLT 1
#else
#define TANDEM_HAVE_CUBLASLT 0
#endif

#include <algorithm>
#include <cstdint>
#include <unordered_map>

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

constexpr int kTile = 16;

// One thread per output element, 16 x 16 tiles of x and w staged through shared memory.
template <typename TX, typename TO>
__global__ void linearFallbackKernel(TO* out, const TX* x, const TX* w, const void* bias, int biasDt, int T, int K,
                                     int N) {
  __shared__ float xs[kTile][kTile + 1];
  __shared__ float ws[kTile][kTile + 1];
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int n = blockIdx.x * kTile + tx;
  const int t = blockIdx.y * kTile + ty;
  const int wRow = blockIdx.x * kTile + ty;
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    const int k = k0 + tx;
    xs[ty][tx] = t < T && k < K ? toF(x[static_cast<size_t>(t) * K + k]) : 0.0f;
    ws[ty][tx] = wRow < N && k < K ? toF(w[static_cast<size_t>(wRow) * K + k]) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTile; kk++) acc += xs[ty][kk] * ws[tx][kk];
    __syncthreads();
  }
  if (t < T && n < N) {
    if (bias != nullptr) acc += loadAny(bias, biasDt, n);
    out[static_cast<size_t>(t) * N + n] = fromF<TO>(acc);
  }
}

// out (T, N) += bias (N), for plans whose epilogue could not take the bias.
template <typename TO>
__global__ void addBiasKernel(TO* out, const void* bias, int biasDt, int T, int N) {
  const size_t total = static_cast<size_t>(T) * N;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    out[i] = fromF<TO>(toF(out[i]) + loadAny(bias, biasDt, static_cast<long long>(i % N)));
  }
}

// out (I, J) = alpha * sum_r A(i, r) B(r, j) (+ out when accumulating), A(i, r) = a[i * sAi + r * sAr],
// B(r, j) = b[r * J + j]. 16 x 16 tiles; threads that load A walk whichever index is contiguous.
template <typename TAB, typename TO>
__global__ void productFallbackKernel(TO* out, const TAB* a, const TAB* b, int I, int J, int R, long long sAi,
                                      long long sAr, float alpha, bool accumulate) {
  __shared__ float as[kTile][kTile + 1];  // as[i][r]
  __shared__ float bs[kTile][kTile + 1];  // bs[r][j]
  const int tx = threadIdx.x;
  const int ty = threadIdx.y;
  const int i0 = blockIdx.x * kTile;
  const int j0 = blockIdx.y * kTile;
  // (ai, ar): the tile entry this thread loads; consecutive tx walk the contiguous index of A.
  const int ai = sAr == 1 ? ty : tx;
  const int ar = sAr == 1 ? tx : ty;
  float acc = 0.0f;
  for (int r0 = 0; r0 < R; r0 += kTile) {
    const int i = i0 + ai;
    const int r = r0 + ar;
    as[ai][ar] = i < I && r < R ? toF(a[i * sAi + r * sAr]) : 0.0f;
    const int rb = r0 + ty;
    const int jb = j0 + tx;
    bs[ty][tx] = rb < R && jb < J ? toF(b[static_cast<long long>(rb) * J + jb]) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTile; kk++) acc += as[ty][kk] * bs[kk][tx];
    __syncthreads();
  }
  const int i = i0 + ty;
  const int j = j0 + tx;
  if (i < I && j < J) {
    TO* o = out + static_cast<long long>(i) * J + j;
    *o = fromF<TO>(accumulate ? toF(*o) + alpha * acc : alpha * acc);
  }
}

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

void productFallback(void* out, int outDt, const void* a, const void* b, int abDt, int I, int J, int R, long long sAi,
                     long long sAr, float alpha, bool accumulate, cudaStream_t stream) {
  if (I == 0 || J == 0) return;
  const dim3 block(kTile, kTile);
  const dim3 grid(CEIL_DIV(I, kTile), CEIL_DIV(J, kTile));
  if (grid.y > 65535) throw Error("linear backward: K = " + std::to_string(J) + " is too large for the fallback kernel");
  DISPATCH_FLOAT(abDt, TAB,
                 DISPATCH_FLOAT(outDt, TO,
                                productFallbackKernel<TAB, TO><<<grid, block, 0, stream>>>(
                                    static_cast<TO*>(out), static_cast<const TAB*>(a), static_cast<const TAB*>(b), I,
                                    J, R, sAi, sAr, alpha, accumulate)));
  launchCheck();
}

// dx (T, K) = dy (T, N) @ w (N, K): I = T, J = K, R = N, A = dy as is.
void inputFallback(void* dx, int dxDt, const void* dy, const void* w, int abDt, int T, int K, int N, cudaStream_t stream) {
  productFallback(dx, dxDt, dy, w, abDt, T, K, N, N, 1, 1.0f, false, stream);
}

// dw (N, K) += alpha dy^T (N, T) @ x (T, K): I = N, J = K, R = T, A = dy transposed.
void weightFallback(void* dw, int dwDt, const void* dy, const void* x, int abDt, int T, int K, int N, float alpha,
                    cudaStream_t stream) {
  productFallback(dw, dwDt, dy, x, abDt, N, K, T, 1, N, alpha, true, stream);
}

// Decode-sized batches (gemv.cu): a weight-streaming kernel beats cuBLASLt's small-M path.
bool gemvSmall(void* out, int outDt, const void* x, const void* w, int xwDt, const void* bias, int biasDt, int T, int K,
               int N, cudaStream_t stream) {
  const GemvPart part{out, w, bias, biasDt, N};
  return gemvMany(&part, 1, outDt, x, xwDt, T, K, nullptr, stream);
}

void linearFallback(void* out, int outDt, const void* x, const void* w, int xwDt, const void* bias, int biasDt, int T,
                    int K, int N, cudaStream_t stream) {
  const dim3 block(kTile, kTile);
  const dim3 grid(CEIL_DIV(N, kTile), CEIL_DIV(T, kTile));
  if (grid.y > 65535) throw Error("linear: T = " + std::to_string(T) + " is too large for the fallback kernel");
  DISPATCH_FLOAT(xwDt, TX,
                 DISPATCH_FLOAT(outDt, TO,
                                linearFallbackKernel<TX, TO><<<grid, block, 0, stream>>>(
                                    static_cast<TO*>(out), static_cast<const TX*>(x), static_cast<const TX*>(w), bias,
                                    biasDt, T, K, N)));
  launchCheck();
}

}  // namespace

#if TANDEM_HAVE_CUBLASLT

inline void cublasCheckImpl(cublasStatus_t status, const char* call, const char* file, int line) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw Error(std::string(baseName(file)) + ":" + std::to_string(line) + ": " + cublasLtGetStatusName(status) +
                " (" + cublasLtGetStatusString(status) + ") in " + call);
  }
}
#define cublasCheck(call) ::tandem::cublasCheckImpl((call), #call, __FILE__, __LINE__)

namespace {

constexpr size_t kWorkspaceBytes = 32u << 20;  // what NVIDIA suggests for Hopper
constexpr size_t kMaxPlans = 4096;

struct PlanKey {
  int T, K, N, xwDt, outDt, biasDt;
  bool bias;
  bool operator==(const PlanKey& o) const {
    return T == o.T && K == o.K && N == o.N && xwDt == o.xwDt && outDt == o.outDt && biasDt == o.biasDt &&
           bias == o.bias;
  }
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = 1469598103934665603ull;
    for (long long v : {static_cast<long long>(k.T), static_cast<long long>(k.K), static_cast<long long>(k.N),
                        static_cast<long long>(k.xwDt * 16 + k.outDt * 4 + k.biasDt), static_cast<long long>(k.bias)}) {
      h = (h ^ static_cast<size_t>(v)) * 1099511628211ull;
    }
    return h;
  }
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool epilogueBias = false;  // the bias is added by cuBLASLt
  bool fallback = false;      // cuBLASLt has nothing for this case: use the fallback kernel
};

struct LtState {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  std::unordered_map<PlanKey, Plan, PlanKeyHash> plans;
} lt;

cudaDataType_t cudaType(int dt) { return dt == kBF16 ? CUDA_R_16BF : CUDA_R_32F; }

void destroyPlan(Plan& p) {
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.d) cublasLtMatrixLayoutDestroy(p.d);
  if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  p = Plan{};
}

// The heuristic's first algorithm for the descriptors as they stand, or false when it has none.
// `aligns` (bytes of A, B, C, D), when given, tells cuBLASLt the real pointer alignments (views
// into flat LoRA buffers are only 4-byte aligned); without it cuBLASLt assumes 256 bytes.
bool pickAlgo(Plan& p, const uint32_t* aligns = nullptr) {
  cublasLtMatmulPreference_t pref = nullptr;
  cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t ws = kWorkspaceBytes;
  cublasStatus_t st =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  const cublasLtMatmulPreferenceAttributes_t alignAttrs[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; aligns != nullptr && i < 4 && st == CUBLAS_STATUS_SUCCESS; i++) {
    st = cublasLtMatmulPreferenceSetAttribute(pref, alignAttrs[i], &aligns[i], sizeof(aligns[i]));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS) {
    st = cublasLtMatmulAlgoGetHeuristic(lt.handle, p.desc, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
  }
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) cublasCheck(st);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  p.algo = result.algo;
  return true;
}

Plan makePlan(const PlanKey& k) {
  Plan p;
  try {
    cublasCheck(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t transA = CUBLAS_OP_T;
    const cublasOperation_t transB = CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transA, sizeof(transA)));
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transB, sizeof(transB)));
    cublasCheck(cublasLtMatrixLayoutCreate(&p.a, cudaType(k.xwDt), k.K, k.N, k.K));
    cublasCheck(cublasLtMatrixLayoutCreate(&p.b, cudaType(k.xwDt), k.K, k.T, k.K));
    cublasCheck(cublasLtMatrixLayoutCreate(&p.d, cudaType(k.outDt), k.N, k.T, k.N));
    if (k.bias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
      if (k.biasDt != k.outDt) {  // unset, the bias has D's type
        const int32_t biasType = cudaType(k.biasDt);
        cublasCheck(
            cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &biasType, sizeof(biasType)));
      }
      if (pickAlgo(p)) {
        p.epilogueBias = true;
        return p;
      }
      const cublasLtEpilogue_t none = CUBLASLT_EPILOGUE_DEFAULT;
      cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &none, sizeof(none)));
    }
    if (!pickAlgo(p)) p.fallback = true;
    return p;
  } catch (...) {
    destroyPlan(p);
    throw;
  }
}

Plan& planFor(const PlanKey& k) {
  auto it = lt.plans.find(k);
  if (it != lt.plans.end()) return it->second;
  if (lt.plans.size() >= kMaxPlans) {  // prefill lengths vary without bound: start over
    for (auto& kv : lt.plans) destroyPlan(kv.second);
    lt.plans.clear();
  }
  return lt.plans.emplace(k, makePlan(k)).first->second;
}

void addBias(void* out, int outDt, const void* bias, int biasDt, int T, int N, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(T) * N;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<size_t>(CEIL_DIV(total, static_cast<size_t>(threads)), 4096));
  DISPATCH_FLOAT(outDt, TO,
                 addBiasKernel<TO><<<blocks, threads, 0, stream>>>(static_cast<TO*>(out), bias, biasDt, T, N));
  launchCheck();
}

bool aligned256(const void* p) { return reinterpret_cast<uintptr_t>(p) % 256 == 0; }

}  // namespace

void linearInit() {
  if (lt.handle != nullptr) return;
  cublasCheck(cublasLtCreate(&lt.handle));
  cudaCheck(cudaMalloc(&lt.workspace, kWorkspaceBytes));
}

size_t linearWorkspaceBytes() { return lt.workspace != nullptr ? kWorkspaceBytes : 0; }

void linear(void* out, int outDt, const void* x, const void* w, int xwDt, const void* bias, int biasDt, int T, int K,
            int N, cudaStream_t stream) {
  if (T == 0 || N == 0) return;
  if (T <= kGemvMaxRows && gemvSmall(out, outDt, x, w, xwDt, bias, biasDt, T, K, N, stream)) return;
  if (lt.handle == nullptr) throw Error("linear: linearInit() was not called");
  // cuBLASLt's heuristics assume 256-byte aligned operands unless told otherwise.
  const bool aligned = aligned256(out) && aligned256(x) && aligned256(w);
  if (K == 0 || !aligned) return linearFallback(out, outDt, x, w, xwDt, bias, biasDt, T, K, N, stream);
  Plan& p = planFor(PlanKey{T, K, N, xwDt, outDt, biasDt, bias != nullptr});
  if (p.fallback) return linearFallback(out, outDt, x, w, xwDt, bias, biasDt, T, K, N, stream);
  if (p.epilogueBias) {
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  const float one = 1.0f;
  const float zero = 0.0f;
  const cublasStatus_t st = cublasLtMatmul(lt.handle, p.desc, &one, w, p.a, x, p.b, &zero, out, p.d, out, p.d, &p.algo,
                                           lt.workspace, kWorkspaceBytes, stream);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
    p.fallback = true;
    return linearFallback(out, outDt, x, w, xwDt, bias, biasDt, T, K, N, stream);
  }
  cublasCheck(st);
  if (bias != nullptr && !p.epilogueBias) addBias(out, outDt, bias, biasDt, T, N, stream);
}

bool linearAdd(void* out, int outDt, const void* x, const void* w, int xwDt, float alpha, int T, int K, int N,
               cudaStream_t stream) {
  if (T == 0 || N == 0) return true;
  if (T <= kGemvMaxRows && gemvAdd(out, outDt, x, w, xwDt, alpha, T, K, N, stream)) return true;
  if (lt.handle == nullptr) throw Error("linearAdd: linearInit() was not called");
  // linear()'s plan for the shape (no bias), with beta = 1 and C = D = out: D = alpha (x w^T) + out.
  const bool aligned = aligned256(out) && aligned256(x) && aligned256(w);
  if (K == 0 || !aligned) return false;
  Plan& p = planFor(PlanKey{T, K, N, xwDt, outDt, outDt, false});
  if (p.fallback) return false;
  const float one = 1.0f;
  const cublasStatus_t st = cublasLtMatmul(lt.handle, p.desc, &alpha, w, p.a, x, p.b, &one, out, p.d, out, p.d, &p.algo,
                                           lt.workspace, kWorkspaceBytes, stream);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) return false;  // (linear() may still use the plan with beta = 0)
  cublasCheck(st);
  return true;
}

namespace {

// A backward product in cuBLASLt's terms (see the top of the file): D (m x n, ld m) =
// alpha A (m x k, ld m) op(B) + beta D, op(B) = B (k x n, ld k) or B^T (B n x k, ld n).
struct ProductKey {
  int m, n, k, abDt, dDt;
  bool transB, accumulate;
  int alignA, alignB, alignD;
  bool operator==(const ProductKey& o) const {
    return m == o.m && n == o.n && k == o.k && abDt == o.abDt && dDt == o.dDt && transB == o.transB &&
           accumulate == o.accumulate && alignA == o.alignA && alignB == o.alignB && alignD == o.alignD;
  }
};

struct ProductKeyHash {
  size_t operator()(const ProductKey& q) const {
    size_t h = 1469598103934665603ull;
    for (long long v : {static_cast<long long>(q.m), static_cast<long long>(q.n), static_cast<long long>(q.k),
                        static_cast<long long>(q.abDt * 8 + q.dDt * 2 + q.transB) * 2 + q.accumulate,
                        static_cast<long long>(q.alignA) << 20 | static_cast<long long>(q.alignB) << 10 | q.alignD}) {
      h = (h ^ static_cast<size_t>(v)) * 1099511628211ull;
    }
    return h;
  }
};

std::unordered_map<ProductKey, Plan, ProductKeyHash> productPlans;

// The largest power of two (up to 256) dividing the address: what cuBLASLt may assume.
int alignmentOf(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int align = 256;
  while (align > 1 && a % align != 0) align /= 2;
  return align;
}

bool pickProductAlgo(Plan& p, const ProductKey& q) {
  const uint32_t aligns[4] = {static_cast<uint32_t>(q.alignA), static_cast<uint32_t>(q.alignB),
                              static_cast<uint32_t>(q.alignD), static_cast<uint32_t>(q.alignD)};
  return pickAlgo(p, aligns);
}

Plan makeProductPlan(const ProductKey& q) {
  Plan p;
  try {
    cublasCheck(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t transA = CUBLAS_OP_N;
    const cublasOperation_t transB = q.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transA, sizeof(transA)));
    cublasCheck(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transB, sizeof(transB)));
    cublasCheck(cublasLtMatrixLayoutCreate(&p.a, cudaType(q.abDt), q.m, q.k, q.m));
    if (q.transB) {
      cublasCheck(cublasLtMatrixLayoutCreate(&p.b, cudaType(q.abDt), q.n, q.k, q.n));
    } else {
      cublasCheck(cublasLtMatrixLayoutCreate(&p.b, cudaType(q.abDt), q.k, q.n, q.k));
    }
    cublasCheck(cublasLtMatrixLayoutCreate(&p.d, cudaType(q.dDt), q.m, q.n, q.m));
    if (!pickProductAlgo(p, q)) p.fallback = true;
    return p;
  } catch (...) {
    destroyPlan(p);
    throw;
  }
}

// D = alpha A op(B) (+ D); false when cuBLASLt has nothing for it (the caller runs the fallback).
bool product(void* d, int dDt, const void* a, const void* b, int abDt, int m, int n, int k, bool transB, float alpha,
             bool accumulate, cudaStream_t stream) {
  if (lt.handle == nullptr) throw Error("linear backward: linearInit() was not called");
  const ProductKey q{m, n, k, abDt, dDt, transB, accumulate, alignmentOf(a), alignmentOf(b), alignmentOf(d)};
  auto it = productPlans.find(q);
  if (it == productPlans.end()) {
    if (productPlans.size() >= kMaxPlans) {
      for (auto& kv : productPlans) destroyPlan(kv.second);
      productPlans.clear();
    }
    it = productPlans.emplace(q, makeProductPlan(q)).first;
  }
  Plan& p = it->second;
  if (p.fallback) return false;
  const float beta = accumulate ? 1.0f : 0.0f;
  const cublasStatus_t st = cublasLtMatmul(lt.handle, p.desc, &alpha, a, p.a, b, p.b, &beta, d, p.d, d, p.d, &p.algo,
                                           lt.workspace, kWorkspaceBytes, stream);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
    p.fallback = true;
    return false;
  }
  cublasCheck(st);
  return true;
}

}  // namespace

void linearBackwardInput(void* dx, int dxDt, const void* dy, const void* w, int abDt, int T, int K, int N,
                         cudaStream_t stream) {
  if (T == 0 || K == 0) return;
  if (N == 0) {  // an empty sum
    cudaCheck(cudaMemsetAsync(dx, 0, static_cast<size_t>(T) * K * dtypeBytes(dxDt), stream));
    return;
  }
  if (!product(dx, dxDt, w, dy, abDt, K, T, N, false, 1.0f, false, stream)) {
    inputFallback(dx, dxDt, dy, w, abDt, T, K, N, stream);
  }
}

void linearBackwardWeight(void* dw, int dwDt, const void* dy, const void* x, int abDt, int T, int K, int N, float alpha,
                          cudaStream_t stream) {
  if (T == 0 || K == 0 || N == 0) return;  // dw += 0
  if (!product(dw, dwDt, x, dy, abDt, K, N, T, true, alpha, true, stream)) {
    weightFallback(dw, dwDt, dy, x, abDt, T, K, N, alpha, stream);
  }
}

#else  // no cuBLASLt: every linear runs the fallback kernel

void linearInit() {}

size_t linearWorkspaceBytes() { return 0; }

void linear(void* out, int outDt, const void* x, const void* w, int xwDt, const void* bias, int biasDt, int T, int K,
            int N, cudaStream_t stream) {
  if (T == 0 || N == 0) return;
  if (T <= kGemvMaxRows && gemvSmall(out, outDt, x, w, xwDt, bias, biasDt, T, K, N, stream)) return;
  linearFallback(out, outDt, x, w, xwDt, bias, biasDt, T, K, N, stream);
}

bool linearAdd(void* out, int outDt, const void* x, const void* w, int xwDt, float alpha, int T, int K, int N,
               cudaStream_t stream) {
  if (T == 0 || N == 0) return true;
  return T <= kGemvMaxRows && gemvAdd(out, outDt, x, w, xwDt, alpha, T, K, N, stream);
}

void linearBackwardInput(void* dx, int dxDt, const void* dy, const void* w, int abDt, int T, int K, int N,
                         cudaStream_t stream) {
  if (T == 0 || K == 0) return;
  inputFallback(dx, dxDt, dy, w, abDt, T, K, N, stream);
}

void linearBackwardWeight(void* dw, int dwDt, const void* dy, const void* x, int abDt, int T, int K, int N, float alpha,
                          cudaStream_t stream) {
  if (T == 0 || K == 0 || N == 0) return;
  weightFallback(dw, dwDt, dy, x, abDt, T, K, N, alpha, stream);
}

#endif

}  // namespace tandem
