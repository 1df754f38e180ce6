/*
Row gathers and scatters, dtype-agnostic (rows are moved as bytes).

gatherRows:  src is (rows, rowBytes), idx is (R) i32, out is (R, rowBytes): out[r] = src[idx[r]]
             (embedding: src is the (V, C) table and idx the token ids; gatherRows: any rows)
scatterRows: rows is (T, rowBytes), slots is (T) i32, pool is (numSlots, rowBytes):
             pool[slots[t]] = rows[t] (writeKv: one layer's K or V pool, a slot per token)

Rows move in the widest unit that divides the row and the pointers: 16, 8, 4 or 2 bytes.

splitColumns: src is (T, rowBytes) holding up to 3 column blocks side by side (a product over
             weights laid out one after another: q, k, v), out[i] is (T, bytes[i]): each block
             back into a tensor of its own.

scatterAddRows: src is (R, C) of T, idx is (R) i32, out is (T, C) of T: out = 0, then
             out[idx[r]] += src[r] (the adjoint of gatherRows: rows named twice add up).
             Deterministic without ordering atomics on floats: a first pass finds, per output
             row, its lowest source row (atomicMin: the same answer whatever the order) and its
             number of sources; then each output row sums its sources in f32, r ascending, and
             rounds once. Rows named once (the usual case) are copies; only repeated rows scan
             idx beyond their first source.
*/
#include <algorithm>

#include "common.cuh"
#include "ops-train.h"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

template <typename U>
__global__ void gatherRowsKernel(U* out, const U* src, const int* idx, int R, int rows, int units) {
  const int r = blockIdx.x;
  const int from = idx[r];
  U* dst = out + static_cast<size_t>(r) * units;
  if (from < 0 || from >= rows) {
    for (int i = threadIdx.x; i < units; i += blockDim.x) dst[i] = U{};
    return;
  }
  const U* row = src + static_cast<size_t>(from) * units;
  for (int i = threadIdx.x; i < units; i += blockDim.x) dst[i] = row[i];
}

template <typename U>
__global__ void scatterRowsKernel(U* pool, const U* rows, const int* slots, int T, int numSlots, int units) {
  const int t = blockIdx.x;
  const int to = slots[t];
  if (to < 0 || to >= numSlots) return;
  const U* row = rows + static_cast<size_t>(t) * units;
  U* dst = pool + static_cast<size_t>(to) * units;
  for (int i = threadIdx.x; i < units; i += blockDim.x) dst[i] = row[i];
}

__global__ void scatterOwnersKernel(int* first, int* count, const int* idx, int R, int T) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= R) return;
  const int t = idx[r];
  if (t < 0 || t >= T) return;
  atomicMin(first + t, r);
  atomicAdd(count + t, 1);
}

template <typename T>
__global__ void scatterAddRowsKernel(T* out, const T* src, const int* idx, const int* first, const int* count, int R,
                                     int C) {
  const int t = blockIdx.x;
  const int n = count[t];
  const int r0 = first[t];
  T* dst = out + static_cast<size_t>(t) * C;
  for (int c = blockIdx.y * blockDim.x + threadIdx.x; c < C; c += gridDim.y * blockDim.x) {
    if (n == 0) {
      dst[c] = fromF<T>(0.0f);
      continue;
    }
    float acc = toF(src[static_cast<size_t>(r0) * C + c]);
    for (int r = r0 + 1, seen = 1; seen < n && r < R; r++) {
      if (idx[r] == t) {
        acc += toF(src[static_cast<size_t>(r) * C + c]);
        seen++;
      }
    }
    dst[c] = fromF<T>(acc);
  }
}

constexpr int kSplitMaxParts = 3;
struct SplitParts {
  void* out[kSplitMaxParts];
  int end[kSplitMaxParts];  // cumulative units: part p owns row units [end[p-1], end[p])
  int count;
};

// Grid (T, blocks over the row): each thread moves units of its row into the part that owns them.
template <typename U>
__global__ void splitColumnsKernel(SplitParts parts, const U* src, int units) {
  const int t = blockIdx.x;
  const U* row = src + static_cast<size_t>(t) * units;
  for (int c = blockIdx.y * blockDim.x + threadIdx.x; c < units; c += gridDim.y * blockDim.x) {
    int begin = 0;
#pragma unroll
    for (int p = 0; p < kSplitMaxParts; p++) {
      if (p < parts.count && c >= begin && c < parts.end[p]) {
        const int width = parts.end[p] - begin;
        static_cast<U*>(parts.out[p])[static_cast<size_t>(t) * width + (c - begin)] = row[c];
      }
      begin = parts.end[p];
    }
  }
}

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

// Widest copy unit (16, 8, 4 or 2 bytes) dividing `align`: addresses and lengths or-ed together.
int unitOf(size_t align) {
  for (int u : {16, 8, 4}) {
    if (align % u == 0) return u;
  }
  return 2;
}

// Widest copy unit dividing the row length and every pointer's alignment.
int unitBytes(size_t rowBytes, const void* a, const void* b) {
  return unitOf(reinterpret_cast<size_t>(a) | reinterpret_cast<size_t>(b) | rowBytes);
}

int threadsFor(size_t units) { return units >= 256 ? 256 : units >= 128 ? 128 : units >= 64 ? 64 : 32; }

#define DISPATCH_UNIT(u, U, ...)    \
  switch (u) {                      \
    case 16: {                      \
      using U = uint4;              \
      __VA_ARGS__;                  \
      break;                        \
    }                               \
    case 8: {                       \
      using U = uint2;              \
      __VA_ARGS__;                  \
      break;                        \
    }                               \
    case 4: {                       \
      using U = unsigned int;       \
      __VA_ARGS__;                  \
      break;                        \
    }                               \
    default: {                      \
      using U = unsigned short;     \
      __VA_ARGS__;                  \
      break;                        \
    }                               \
  }

}  // namespace

void gatherRows(void* out, const void* src, const int* idx, int R, int rows, size_t rowBytes, cudaStream_t stream) {
  if (R == 0 || rowBytes == 0) return;
  const int u = unitBytes(rowBytes, out, src);
  const int units = static_cast<int>(rowBytes / u);
  DISPATCH_UNIT(u, U,
                gatherRowsKernel<U><<<R, threadsFor(units), 0, stream>>>(static_cast<U*>(out),
                                                                         static_cast<const U*>(src), idx, R, rows,
                                                                         units));
  launchCheck();
}

void scatterRows(void* pool, const void* rows, const int* slots, int T, int numSlots, size_t rowBytes,
                 cudaStream_t stream) {
  if (T == 0 || rowBytes == 0) return;
  const int u = unitBytes(rowBytes, pool, rows);
  const int units = static_cast<int>(rowBytes / u);
  DISPATCH_UNIT(u, U,
                scatterRowsKernel<U><<<T, threadsFor(units), 0, stream>>>(static_cast<U*>(pool),
                                                                          static_cast<const U*>(rows), slots, T,
                                                                          numSlots, units));
  launchCheck();
}

void splitColumns(void* const* outs, const size_t* bytes, int count, const void* src, int T, cudaStream_t stream) {
  if (count < 1 || count > kSplitMaxParts) throw Error("splitColumns: 1 to 3 parts, got " + std::to_string(count));
  size_t rowBytes = 0;
  size_t align = reinterpret_cast<size_t>(src);
  for (int p = 0; p < count; p++) {
    rowBytes += bytes[p];
    align |= reinterpret_cast<size_t>(outs[p]) | bytes[p];
  }
  if (T == 0 || rowBytes == 0) return;
  const int u = unitOf(align);
  if (align % u != 0) throw Error("splitColumns: parts must be whole 2-byte elements");
  SplitParts parts{};
  size_t end = 0;
  for (int p = 0; p < kSplitMaxParts; p++) {
    if (p < count) end += bytes[p] / u;
    parts.out[p] = p < count ? outs[p] : nullptr;
    parts.end[p] = static_cast<int>(end);
  }
  parts.count = count;
  const int units = static_cast<int>(rowBytes / u);
  const int threads = threadsFor(static_cast<size_t>(units));
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(std::min(CEIL_DIV(units, threads), 64)));
  DISPATCH_UNIT(u, U, splitColumnsKernel<U><<<grid, threads, 0, stream>>>(parts, static_cast<const U*>(src), units));
  launchCheck();
}

void scatterAddRows(void* out, const void* src, const int* idx, int R, int T, int C, int dt, int* work,
                    cudaStream_t stream) {
  if (T == 0 || C == 0) return;
  int* first = work;
  int* count = work + T;
  cudaCheck(cudaMemsetAsync(first, 0x7f, sizeof(int) * T, stream));  // 0x7f7f7f7f: above any row
  cudaCheck(cudaMemsetAsync(count, 0, sizeof(int) * T, stream));
  if (R > 0) {
    scatterOwnersKernel<<<CEIL_DIV(R, 256), 256, 0, stream>>>(first, count, idx, R, T);
    launchCheck();
  }
  const int threads = threadsFor(static_cast<size_t>(C));
  const dim3 grid(T, CEIL_DIV(C, threads * 8));
  DISPATCH_FLOAT(dt, E,
                 scatterAddRowsKernel<E><<<grid, threads, 0, stream>>>(static_cast<E*>(out),
                                                                       static_cast<const E*>(src), idx, first, count,
                                                                       R, C));
  launchCheck();
}

}  // namespace tandem
