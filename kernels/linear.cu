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

Fallback: a plain tiled kernel (fp32 accumulate) for what cuBLASLt declines (no algorithm for
the shape, K = 0, pointers not 256-byte aligned) and for builds without cuBLASLt
(TANDEM_NO_CUBLASLT, or no cublasLt.h), where it is the only path: correct, but slow.
*/
#include "common.cuh"

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

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

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
bool pickAlgo(Plan& p) {
  cublasLtMatmulPreference_t pref = nullptr;
  cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
  uint64_t ws = kWorkspaceBytes;
  cublasStatus_t st =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
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

#else  // no cuBLASLt: every linear runs the fallback kernel

void linearInit() {}

size_t linearWorkspaceBytes() { return 0; }

void linear(void* out, int outDt, const void* x, const void* w, int xwDt, const void* bias, int biasDt, int T, int K,
            int N, cudaStream_t stream) {
  if (T == 0 || N == 0) return;
  linearFallback(out, outDt, x, w, xwDt, bias, biasDt, T, K, N, stream);
}

#endif

}  // namespace tandem
