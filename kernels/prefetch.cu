/*
L2 prefetch of weights (Hopper): a decode step at batch 1 streams ~6 GB of weights, but some of
its kernels move almost no bytes (the decode attention at a short context, the boundaries between
kernels): while they run, the memory system idles. prefetchL2() queues bulk L2 prefetches
(cp.async.bulk.prefetch.L2, one instruction per 64 KiB piece, fire-and-forget) of weights the next
kernels will read, so those bytes arrive during the quiet kernel and the product that reads them
finds them in L2.

The kernel is launched with launchPdl() and lets the next kernel be scheduled at once, but it
issues the prefetches only after pdlWait(): queued while the product before it still streams its
own weights, they would share its bandwidth and delay it, which is the kernel the next one waits
for. So the prefetch is placed in front of a quiet kernel (the transformer: before the decode
attention, for the o, gate and up projections after it) and costs one kernel boundary.

Before sm_90 (no bulk prefetch) and with TANDEM_L2_PREFETCH=0 nothing is launched.
*/
#include <algorithm>
#include <cstdint>
#include <string>

#include "common.cuh"
#include "pdl.cuh"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

constexpr int kPrefetchMaxRanges = 4;
constexpr size_t kPrefetchPiece = 64 * 1024;

struct PrefetchArgs {
  const char* base[kPrefetchMaxRanges];
  size_t bytes[kPrefetchMaxRanges];  // multiples of 16
  int count;
};

__global__ void prefetchL2Kernel(PrefetchArgs a) {
  pdlLaunchDependents();
  pdlWait();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Pieces of all ranges numbered in order; thread i takes pieces i, i + threads, ...
  const int threads = gridDim.x * blockDim.x;
  const int me = blockIdx.x * blockDim.x + threadIdx.x;
  size_t first = 0;  // number of the first piece of range r
#pragma unroll
  for (int r = 0; r < kPrefetchMaxRanges; r++) {
    if (r >= a.count) break;
    const size_t pieces = (a.bytes[r] + kPrefetchPiece - 1) / kPrefetchPiece;
    for (size_t i = (me + threads - first % threads) % threads; i < pieces; i += threads) {
      const size_t at = i * kPrefetchPiece;
      const size_t left = a.bytes[r] - at;
      const uint32_t size = static_cast<uint32_t>(left < kPrefetchPiece ? left : kPrefetchPiece);
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a.base[r] + at), "r"(size) : "memory");
    }
    first += pieces;
  }
#endif
}

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

bool prefetchSupported() {
  static const bool supported = !envSwitchOff("TANDEM_L2_PREFETCH") && hopperOrLater();
  return supported;
}

}  // namespace

bool prefetchL2(const void* const* ptrs, const size_t* bytes, int count, cudaStream_t stream) {
  if (!prefetchSupported()) return false;
  if (count < 0 || count > kPrefetchMaxRanges) {
    throw Error("prefetchL2: " + std::to_string(count) + " ranges, at most " + std::to_string(kPrefetchMaxRanges));
  }
  PrefetchArgs a{};
  size_t pieces = 0;
  for (int r = 0; r < count; r++) {
    if (reinterpret_cast<uintptr_t>(ptrs[r]) % 16 != 0) throw Error("prefetchL2: a range does not start 16-byte aligned");
    a.base[a.count] = static_cast<const char*>(ptrs[r]);
    a.bytes[a.count] = bytes[r] / 16 * 16;  // the instruction takes whole 16-byte units
    if (a.bytes[a.count] == 0) continue;
    pieces += (a.bytes[a.count] + kPrefetchPiece - 1) / kPrefetchPiece;
    a.count++;
  }
  if (a.count == 0) return true;
  // One thread per piece up to 4 blocks of 128: ~130 pieces for 8 MiB, a few instructions each.
  const int threads = static_cast<int>(std::min<size_t>(pieces, 512));
  const int block = std::min(threads, 128);
  launchPdl(prefetchL2Kernel, dim3(CEIL_DIV(threads, block)), dim3(block), 0, stream, a);
  return true;
}

}  // namespace tandem
