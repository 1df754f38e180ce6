/*
Row gathers and scatters, dtype-agnostic (rows are moved as bytes).

gatherRows:  src is (rows, rowBytes), idx is (R) i32, out is (R, rowBytes): out[r] = src[idx[r]]
             (embedding: src is the (V, C) table and idx the token ids; gatherRows: any rows)
scatterRows: rows is (T, rowBytes), slots is (T) i32, pool is (numSlots, rowBytes):
             pool[slots[t]] = rows[t] (writeKv: one layer's K or V pool, a slot per token)

Rows move in the widest unit that divides the row and the pointers: 16, 8, 4 or 2 bytes.
*/
#include "common.cuh"

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

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

// Widest copy unit dividing the row length and every pointer's alignment.
int unitBytes(size_t rowBytes, const void* a, const void* b) {
  const size_t align = reinterpret_cast<size_t>(a) | reinterpret_cast<size_t>(b) | rowBytes;
  for (int u : {16, 8, 4}) {
    if (align % u == 0) return u;
  }
  return 2;
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

}  // namespace tandem
