/*
Small-batch products for decode: out (T, N) = x (T, K) @ w (N, K)^T + bias (N), T <= kGemvMaxRows,
bf16 x and w, fp32 accumulation, out bf16 or f32.

At batch 1-8 a decode step is a stream of weight bytes; cuBLASLt's M=1 kernels reached 71-75% of
the copy bandwidth on the MLP shapes of a 3B model (bench/results/decode-ops-h100.txt), so these
read the weights directly: one warp per output row, each lane streaming 16-byte packs of the row
(U packs in flight per lane, loaded with the streaming hint so they don't evict x from L1), x read
through L1 (every warp of the grid reads the same T rows), a warp-shuffle sum per row of x.

Rows of K >= 4096 (kLongRowChunks packs; the down projection) go 2 rows per pair of warps in a
one-part product (each x pack read serves both rows; TANDEM_GEMV_LONG_ROWS picks other forms),
else over 4 warps each; other rows one warp each (TANDEM_GEMV_FEW_ROWS=1: 2 warps per row in
products of fewer than 8192 rows). Weights for the first
round are requested before pdlWait() and the kernels are launched with launchPdl() (pdl.cuh), so
a product's first loads overlap the previous kernel's tail.

Fusions that save launches at decode:
  gemvMany:   up to 3 products of one x (q, k, v) in one grid; parts keep their own w, bias, out.
  gemvAdd:    out += alpha * (x @ w^T) (a LoRA branch's expand added to the base output).
  gemvSwiglu: out = silu(g) * u with g = x @ wGate^T + gBias and u = x @ wUp^T + uBias, one warp
              computing row n of both; g and u are rounded to out's dtype first, as
              swiglu(linear(x, gate), linear(x, up)) rounds them.
Each entry point returns false (and does nothing) when the operands don't suit it: dtype not bf16,
K not a multiple of 8, a pointer not 16-byte aligned, T out of range; the caller then takes the
general path (cuBLASLt).

TANDEM_GEMV=0 in the environment turns these off (linear() then always uses cuBLASLt), so a
benchmark can compare the two paths in one build.
*/
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common.cuh"
#include "pdl.cuh"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

constexpr int kGemvWarps = 8;  // rows per block
constexpr int kGemvMaxParts = 3;
constexpr int kLongRowChunks = 512;  // K >= 4096

struct GemvArgs {
  void* out[kGemvMaxParts];
  const uint4* w[kGemvMaxParts];
  const void* bias[kGemvMaxParts];
  int biasDt[kGemvMaxParts];
  int n[kGemvMaxParts];
  int rowEnd[kGemvMaxParts];  // cumulative rows: part p owns global rows [rowEnd[p-1], rowEnd[p])
  int count;
  int rows;  // rowEnd[count - 1]
  const uint4* x;
  int chunks;  // K / 8: 16-byte packs per row
  // gemvAdd: out += alpha * (x @ w^T) instead of out = x @ w^T + bias (one part, no bias).
  int accumulate;
  float alpha;
};

// The rmsnorm fused in front of a product (gemv.cu's NORM kernels); x of GemvArgs is then unused.
struct GemvNormArgs {
  const __nv_bfloat16* x;         // (T, K)
  const __nv_bfloat16* residual;  // (T, K) or null
  const __nv_bfloat16* w;         // (K)
  __nv_bfloat16* sum;             // (T, K): x + residual (with a residual)
  float eps;
};

// acc[t] += dot(8 bf16 of w, 8 bf16 of x row t), both given as packs.
__device__ __forceinline__ float dot8(const uint4& w, const uint4& x) {
  const uint32_t wv[4] = {w.x, w.y, w.z, w.w};
  const uint32_t xv[4] = {x.x, x.y, x.z, x.w};
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    // A bf16 is the high half of an f32: shift the low element up, mask the high one.
    s = fmaf(__uint_as_float(wv[i] << 16), __uint_as_float(xv[i] << 16), s);
    s = fmaf(__uint_as_float(wv[i] & 0xffff0000u), __uint_as_float(xv[i] & 0xffff0000u), s);
  }
  return s;
}

template <int NW, int U>
__device__ __forceinline__ void loadPacks(uint4 (&wv)[NW][U], const uint4* const (&w)[NW], int c0, int cEnd) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int c = c0 + u * 32;
#pragma unroll
    for (int s = 0; s < NW; s++) wv[s][u] = c < cEnd ? __ldcs(w[s] + c) : make_uint4(0, 0, 0, 0);
  }
}

// Dot products of NW weight rows (w[s]) with the T rows of x over packs [cBegin, cEnd), summed
// over the warp: every lane gets acc[s][t]. `next` holds this lane's first U packs, requested by
// the caller before pdlWait() (weights are never written by an earlier kernel); each round
// requests the next round's packs before it does the math on the current ones. XS: x is in
// shared memory (the normalised rows of a fused rmsnorm), else global (read through L1).
template <int T, int NW, int U, bool XS>
__device__ __forceinline__ void warpDots(uint4 (&next)[NW][U], const uint4* const (&w)[NW], const uint4* x, int chunks,
                                         int cBegin, int cEnd, float (&acc)[NW][T]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int s = 0; s < NW; s++) {
#pragma unroll
    for (int t = 0; t < T; t++) acc[s][t] = 0.0f;
  }
  for (int c0 = cBegin + lane; c0 < cEnd; c0 += 32 * U) {
    uint4 wv[NW][U];
#pragma unroll
    for (int u = 0; u < U; u++) {
#pragma unroll
      for (int s = 0; s < NW; s++) wv[s][u] = next[s][u];
    }
    loadPacks<NW, U>(next, w, c0 + 32 * U, cEnd);
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int c = c0 + u * 32;
      if (c >= cEnd) break;
#pragma unroll
      for (int t = 0; t < T; t++) {
        const size_t at = static_cast<size_t>(t) * chunks + c;
        const uint4 xv = XS ? x[at] : __ldg(x + at);
#pragma unroll
        for (int s = 0; s < NW; s++) acc[s][t] += dot8(wv[s][u], xv);
      }
    }
  }
#pragma unroll
  for (int s = 0; s < NW; s++) {
#pragma unroll
    for (int t = 0; t < T; t++) acc[s][t] = warpSum(acc[s][t]);
  }
}

// The fused rmsnorm in front of a product (GemvNorm): every block normalises the T rows of x
// into shared memory `xs` (bf16, T x K) with exactly rmsnorm()'s rounding: sum = bf16(x +
// residual), y = bf16(w * bf16(sum * rstd)); block 0 also stores sum (the residual stream). All
// threads of the block call it.
template <int T>
__device__ void normRows(const GemvNormArgs& nm, __nv_bfloat16* xs, int K, float* red) {
  const int packs = K / 8;
#pragma unroll
  for (int t = 0; t < T; t++) {
    const size_t row = static_cast<size_t>(t) * K;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < packs; c += blockDim.x) {
      float v[8];
      loadFloats<8>(nm.x + row + c * 8, v);
      if (nm.residual != nullptr) {
        float r[8];
        loadFloats<8>(nm.residual + row + c * 8, r);
#pragma unroll
        for (int e = 0; e < 8; e++) v[e] = roundTo<__nv_bfloat16>(v[e] + r[e]);
        if (blockIdx.x == 0) storeFloats<8>(nm.sum + row + c * 8, v);
      }
#pragma unroll
      for (int e = 0; e < 8; e++) ss += v[e] * v[e];
      storeFloats<8>(xs + row + c * 8, v);
    }
    ss = blockSum(ss, red);
    const float rstd = rsqrtf(ss / static_cast<float>(K) + nm.eps);
    for (int c = threadIdx.x; c < packs; c += blockDim.x) {  // the packs this thread stored above
      float v[8];
      float w[8];
      loadFloats<8>(xs + row + c * 8, v);
      loadFloats<8>(nm.w + c * 8, w);
#pragma unroll
      for (int e = 0; e < 8; e++) v[e] = w[e] * roundTo<__nv_bfloat16>(v[e] * rstd);
      storeFloats<8>(xs + row + c * 8, v);
    }
  }
  __syncthreads();
}

// KSPLIT warps share a row (each a contiguous 1/KSPLIT of its packs, summed through shared
// memory): long rows with few of them (the down projection) get KSPLIT times the warps. NW > 1
// (one part only): each warp takes NW consecutive rows, so every x pack it reads serves NW weight
// packs (at NW = 1 a product of one x row reads as many x bytes through L1 as weight bytes).
// MINB: blocks per SM the registers must allow (__launch_bounds__), so a grid of that many blocks
// per SM runs in one wave.
template <int T, typename TO, int U, int KSPLIT, bool NORM, int NW = 1, int MINB = 1>
__global__ void __launch_bounds__(kGemvWarps * 32, MINB) gemvKernel(GemvArgs a, GemvNormArgs nm) {
  static_assert(kGemvWarps % KSPLIT == 0, "KSPLIT must divide the block's warps");
  __shared__ float partial[kGemvWarps][NW][T];
  __shared__ float red[32];
  extern __shared__ __align__(16) unsigned char normed[];  // NORM: T x K bf16
  pdlLaunchDependents();
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int row = (blockIdx.x * (kGemvWarps / KSPLIT) + warp / KSPLIT) * NW;
  const int piece = warp % KSPLIT;
  const bool live = row < a.rows;  // (warp-uniform)
  // The part owning this row, picked with compile-time indices so the arguments stay in the
  // parameter bank (a runtime index would copy the struct to local memory).
  int n = row, N = a.n[0], biasDt = a.biasDt[0];
  const uint4* wp = a.w[0];
  const void* bias = a.bias[0];
  void* outp = a.out[0];
#pragma unroll
  for (int i = 1; i < kGemvMaxParts; i++) {
    if (i < a.count && row >= a.rowEnd[i - 1]) {
      n = row - a.rowEnd[i - 1];
      N = a.n[i];
      biasDt = a.biasDt[i];
      wp = a.w[i];
      bias = a.bias[i];
      outp = a.out[i];
    }
  }
  const int per = CEIL_DIV(a.chunks, KSPLIT);
  const int cBegin = piece * per;
  const int cEnd = min(a.chunks, cBegin + per);
  float acc[NW][T];
  // Rows past N (NW > 1 at the end) read row N - 1 again; their sums are not stored.
  const uint4* w[NW];
#pragma unroll
  for (int s = 0; s < NW; s++) w[s] = wp + static_cast<size_t>(live ? min(n + s, N - 1) : 0) * a.chunks;
  uint4 next[NW][U];
  if (live) loadPacks<NW, U>(next, w, cBegin + lane, cEnd);
  pdlWait();
  const uint4* x = a.x;
  if (NORM) {
    normRows<T>(nm, reinterpret_cast<__nv_bfloat16*>(normed), a.chunks * 8, red);
    x = reinterpret_cast<const uint4*>(normed);
  }
  if (live) warpDots<T, NW, U, NORM>(next, w, x, a.chunks, cBegin, cEnd, acc);
  if (KSPLIT > 1) {
    if (live && lane == 0) {
#pragma unroll
      for (int s = 0; s < NW; s++) {
#pragma unroll
        for (int t = 0; t < T; t++) partial[warp][s][t] = acc[s][t];
      }
    }
    __syncthreads();
    if (!live || piece != 0) return;
#pragma unroll
    for (int s = 0; s < NW; s++) {
#pragma unroll
      for (int t = 0; t < T; t++) {
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < KSPLIT; i++) sum += partial[warp + i][s][t];  // in a fixed order: deterministic
        acc[s][t] = sum;
      }
    }
  }
  if (!live) return;
  TO* out = static_cast<TO*>(outp);
#pragma unroll
  for (int s = 0; s < NW; s++) {
    if (n + s >= N) break;
    const float b = bias != nullptr ? loadAny(bias, biasDt, n + s) : 0.0f;
#pragma unroll
    for (int t = 0; t < T; t++) {
      if (lane != t) continue;
      TO* o = out + static_cast<size_t>(t) * N + n + s;
      *o = fromF<TO>(a.accumulate ? toF(*o) + a.alpha * acc[s][t] : acc[s][t] + b);
    }
  }
}

// Parts 0 and 1 of `a` are gate and up (same N); out is part 0's.
template <int T, typename TO, bool NORM>
__global__ void __launch_bounds__(kGemvWarps * 32) gemvSwigluKernel(GemvArgs a, GemvNormArgs nm) {
  __shared__ float red[32];
  extern __shared__ __align__(16) unsigned char normed[];  // NORM: T x K bf16
  pdlLaunchDependents();
  const int n = blockIdx.x * kGemvWarps + threadIdx.x / 32;
  const int N = a.n[0];
  const bool live = n < N;  // (warp-uniform)
  const int lane = threadIdx.x % 32;
  const size_t r = static_cast<size_t>(live ? n : 0) * a.chunks;
  const uint4* const w[2] = {a.w[0] + r, a.w[1] + r};
  uint4 next[2][4];
  if (live) loadPacks<2, 4>(next, w, lane, a.chunks);
  pdlWait();
  const uint4* x = a.x;
  if (NORM) {
    normRows<T>(nm, reinterpret_cast<__nv_bfloat16*>(normed), a.chunks * 8, red);
    x = reinterpret_cast<const uint4*>(normed);
  }
  if (!live) return;
  float acc[2][T];
  warpDots<T, 2, 4, NORM>(next, w, x, a.chunks, 0, a.chunks, acc);
  const float bg = a.bias[0] != nullptr ? loadAny(a.bias[0], a.biasDt[0], n) : 0.0f;
  const float bu = a.bias[1] != nullptr ? loadAny(a.bias[1], a.biasDt[1], n) : 0.0f;
  TO* out = static_cast<TO*>(a.out[0]);
#pragma unroll
  for (int t = 0; t < T; t++) {
    if (lane == t) {
      const float g = roundTo<TO>(acc[0][t] + bg);
      const float u = roundTo<TO>(acc[1][t] + bu);
      // For very negative g, expf(-g) overflows to inf and g / inf -> -0: the right limit.
      out[static_cast<size_t>(t) * N + n] = fromF<TO>(g / (1.0f + expf(-g)) * u);
    }
  }
}

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

bool gemvEnabled() {
  static const bool enabled = !envSwitchOff("TANDEM_GEMV");
  return enabled;
}

// TANDEM_GEMV_NORM_ONE_WAVE=1 (opt-in, for A/B runs): the fused norm's one-row split-row products
// under a 5-blocks-per-SM register bound.
bool normOneWave() {
  static const bool enabled = envSwitchOn("TANDEM_GEMV_NORM_ONE_WAVE");
  return enabled;
}

// TANDEM_GEMV_FEW_ROWS=1 (opt-in): products of fewer rows than kFewRows (q/k/v and o on a 3B
// model: 2560 and 2048) split each row over 2 warps, so the grid has twice the warps and each lane
// half the dependent loads. One warp per row was the faster at batch 1 on an H100 in three calls
// (engine 2.490 vs 2.521 ms per step, replays 2.473 vs 2.491 and 2.508 vs 2.526), so it is the default.
constexpr int kFewRows = 8192;
bool fewRowsSplit(int rows) {
  static const bool enabled = envSwitchOn("TANDEM_GEMV_FEW_ROWS");
  return enabled && rows < kFewRows;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Whether the fast path takes these operands (bias may be null; outs and ws are checked by the caller).
bool suits(int xwDt, int outDt, const void* x, int T, int K) {
  return gemvEnabled() && xwDt == kBF16 && (outDt == kBF16 || outDt == kF32) && T >= 1 && T <= kGemvMaxRows &&
         K >= 8 && K % 8 == 0 && aligned16(x);
}

// TANDEM_GEMV_LONG_ROWS=UxKSPLIT[xNW] (A/B runs): packs in flight per lane, warps per row and rows
// per warp for rows of K >= 4096 without a fused norm: 4x2x2 (the default: 2.623 vs 2.655 ms per
// batch-1 step for 4x4 on an H100, bench/results/decode-replay-ab-2026-12-07-run5-h100.json), 4x4,
// 8x4, 4x8, 4x2, 2x8, 4x4x2 or 4x8x2. The x2 forms take one-part products only; others run 4x4.
int longRowsVariant() {
  static const int variant = [] {
    const char* v = std::getenv("TANDEM_GEMV_LONG_ROWS");
    if (v == nullptr || *v == '\0') return 6;  // 4x2x2 (measured best, H100, 2026-12-07)
    if (std::strcmp(v, "4x4") == 0) return 0;
    const char* names[] = {"8x4", "4x8", "4x2", "2x8", "4x4x2", "4x2x2", "4x8x2"};
    for (int i = 0; i < 7; i++) {
      if (std::strcmp(v, names[i]) == 0) return i + 1;
    }
    throw Error(std::string("TANDEM_GEMV_LONG_ROWS must be 4x4, 8x4, 4x8, 4x2, 2x8, 4x4x2, 4x2x2 or 4x8x2, got '") + v +
                "'");
  }();
  return variant;
}

template <int T, typename TO, int U, int KSPLIT, bool NORM, int NW = 1>
void launchSplit(const GemvArgs& a, const GemvNormArgs& nm, int rows, size_t smem, cudaStream_t stream) {
  launchPdl(gemvKernel<T, TO, U, KSPLIT, NORM, NW>, dim3(CEIL_DIV(rows, kGemvWarps / KSPLIT * NW)),
            dim3(kGemvWarps * 32), smem, stream, a, nm);
}

template <int T, typename TO, bool NORM>
void launchLongRows(const GemvArgs& a, const GemvNormArgs& nm, int rows, size_t smem, cudaStream_t stream) {
  if constexpr (!NORM) {
    switch (longRowsVariant()) {
      case 1: return launchSplit<T, TO, 8, 4, NORM>(a, nm, rows, smem, stream);
      case 2: return launchSplit<T, TO, 4, 8, NORM>(a, nm, rows, smem, stream);
      case 3: return launchSplit<T, TO, 4, 2, NORM>(a, nm, rows, smem, stream);
      case 4: return launchSplit<T, TO, 2, 8, NORM>(a, nm, rows, smem, stream);
      default: break;
    }
    if (a.count == 1) {  // rows per warp > 1: one part only (its rows are consecutive)
      switch (longRowsVariant()) {
        case 5: return launchSplit<T, TO, 4, 4, NORM, 2>(a, nm, rows, smem, stream);
        case 6: return launchSplit<T, TO, 4, 2, NORM, 2>(a, nm, rows, smem, stream);
        case 7: return launchSplit<T, TO, 4, 8, NORM, 2>(a, nm, rows, smem, stream);
        default: break;
      }
    }
  }
  launchSplit<T, TO, 4, 4, NORM>(a, nm, rows, smem, stream);
}

template <int T, typename TO, bool NORM>
void launchRows(const GemvArgs& a, const GemvNormArgs& nm, int rows, bool swiglu, cudaStream_t stream) {
  const dim3 block(kGemvWarps * 32);
  const size_t smem = NORM ? static_cast<size_t>(T) * a.chunks * 16 : 0;
  // Long rows (the MLP's down projection: K = 11008 on a 3B model, 2048 rows) leave few warps per
  // SM: 4 warps per row there.
  if (swiglu) {
    launchPdl(gemvSwigluKernel<T, TO, NORM>, dim3(CEIL_DIV(rows, kGemvWarps)), block, smem, stream, a, nm);
  } else if (a.chunks >= kLongRowChunks) {
    launchLongRows<T, TO, NORM>(a, nm, rows, smem, stream);
  } else if (fewRowsSplit(rows)) {
    if constexpr (NORM && T == 1) {
      if (normOneWave()) {
        // The fused norm + q/k/v product of a 3B model is 640 blocks; at 59 registers 4 fit an SM
        // (528 on an H100) and the rest run as a second wave. 5 per SM (48 registers, 56 bytes
        // spilled) take it in one: 2.602 vs 2.612 ms per batch-1 step alone on an H100 (run6);
        // opt-in until measured beside the default query-split attention.
        return launchPdl(gemvKernel<T, TO, 4, 2, NORM, 1, 5>, dim3(CEIL_DIV(rows, kGemvWarps / 2)), block, smem, stream,
                         a, nm);
      }
    }
    launchPdl(gemvKernel<T, TO, 4, 2, NORM>, dim3(CEIL_DIV(rows, kGemvWarps / 2)), block, smem, stream, a, nm);
  } else {
    launchPdl(gemvKernel<T, TO, 4, 1, NORM>, dim3(CEIL_DIV(rows, kGemvWarps)), block, smem, stream, a, nm);
  }
}

template <typename TO, bool NORM>
void dispatchRows(const GemvArgs& a, const GemvNormArgs& nm, int T, int rows, bool swiglu, cudaStream_t stream) {
  static_assert(kGemvMaxRows == 4, "instantiate one kernel per row count up to kGemvMaxRows");
  switch (T) {
    case 1: return launchRows<1, TO, NORM>(a, nm, rows, swiglu, stream);
    case 2: return launchRows<2, TO, NORM>(a, nm, rows, swiglu, stream);
    case 3: return launchRows<3, TO, NORM>(a, nm, rows, swiglu, stream);
    case 4: return launchRows<4, TO, NORM>(a, nm, rows, swiglu, stream);
    default: throw Error("gemv: " + std::to_string(T) + " rows is past kGemvMaxRows");
  }
}

void launch(const GemvArgs& a, const GemvNorm* norm, int outDt, int T, int rows, bool swiglu, cudaStream_t stream) {
  GemvNormArgs nm{};
  if (norm != nullptr) {
    nm = GemvNormArgs{static_cast<const __nv_bfloat16*>(norm->x), static_cast<const __nv_bfloat16*>(norm->residual),
                      static_cast<const __nv_bfloat16*>(norm->w), static_cast<__nv_bfloat16*>(norm->sum), norm->eps};
  }
  if (outDt == kF32) {
    if (norm != nullptr) dispatchRows<float, true>(a, nm, T, rows, swiglu, stream);
    else dispatchRows<float, false>(a, nm, T, rows, swiglu, stream);
  } else {
    if (norm != nullptr) dispatchRows<__nv_bfloat16, true>(a, nm, T, rows, swiglu, stream);
    else dispatchRows<__nv_bfloat16, false>(a, nm, T, rows, swiglu, stream);
  }
}

// A fused norm's operands: aligned, and its rows fit the default 48 KiB of shared memory.
bool normSuits(const GemvNorm* norm, int T, int K) {
  if (norm == nullptr) return true;
  const bool aligned = aligned16(norm->x) && aligned16(norm->w) &&
                       (norm->residual == nullptr || (aligned16(norm->residual) && aligned16(norm->sum)));
  return aligned && static_cast<size_t>(T) * K * 2 <= 48 * 1024 && norm->eps >= 0.0f;
}

// Fills `a` from the parts; false if one of them doesn't suit.
bool fill(GemvArgs& a, const GemvPart* parts, int count, const void* x, int K) {
  if (count < 1 || count > kGemvMaxParts) return false;
  a = GemvArgs{};
  int rows = 0;
  for (int p = 0; p < count; p++) {
    const GemvPart& g = parts[p];
    if (!aligned16(g.w) || !aligned16(g.out) || g.N < 0) return false;
    if (g.bias != nullptr && g.biasDt != kBF16 && g.biasDt != kF32) return false;
    rows += g.N;
    a.out[p] = g.out;
    a.w[p] = static_cast<const uint4*>(g.w);
    a.bias[p] = g.bias;
    a.biasDt[p] = g.biasDt;
    a.n[p] = g.N;
    a.rowEnd[p] = rows;
  }
  a.count = count;
  a.rows = rows;
  a.x = static_cast<const uint4*>(x);
  a.chunks = K / 8;
  return true;
}

}  // namespace

bool gemvMany(const GemvPart* parts, int count, int outDt, const void* x, int xwDt, int T, int K, const GemvNorm* norm,
              cudaStream_t stream) {
  GemvArgs a;
  if (norm != nullptr) x = norm->x;
  if (!suits(xwDt, outDt, x, T, K) || !normSuits(norm, T, K) || !fill(a, parts, count, x, K)) return false;
  if (a.rows == 0) return norm == nullptr;  // a norm with no product: the caller runs rmsnorm itself
  launch(a, norm, outDt, T, a.rows, false, stream);
  return true;
}

bool gemvAdd(void* out, int outDt, const void* x, const void* w, int xwDt, float alpha, int T, int K, int N,
             cudaStream_t stream) {
  const GemvPart part{out, w, nullptr, outDt, N};
  GemvArgs a;
  if (!suits(xwDt, outDt, x, T, K) || !fill(a, &part, 1, x, K)) return false;
  if (N == 0) return true;
  a.accumulate = 1;
  a.alpha = alpha;
  launch(a, nullptr, outDt, T, N, false, stream);
  return true;
}

bool gemvSwiglu(void* out, const void* x, const GemvPart& gate, const GemvPart& up, int xwDt, int T, int K,
                const GemvNorm* norm, cudaStream_t stream) {
  if (gate.N != up.N) return false;
  if (norm != nullptr) x = norm->x;
  const GemvPart parts[2] = {{out, gate.w, gate.bias, gate.biasDt, gate.N}, {out, up.w, up.bias, up.biasDt, up.N}};
  GemvArgs a;
  if (!suits(xwDt, xwDt, x, T, K) || !normSuits(norm, T, K) || !fill(a, parts, 2, x, K)) return false;
  if (gate.N == 0) return norm == nullptr;
  launch(a, norm, xwDt, T, gate.N, true, stream);
  return true;
}

}  // namespace tandem
