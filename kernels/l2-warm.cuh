/*
Warming the L2 cache with weights a later kernel of the step reads (Hopper and later).

At small batches a decode step streams weights except where it waits on latency: the decode
attention of a layer reads a few KB of K/V over several microseconds, and during that time the
memory system idles. A kernel given an L2Warm asks the L2 cache to fetch up to kL2WarmRanges byte
ranges (the start of the next MLP's gate and up weights) with cp.async.bulk.prefetch.L2, before it
waits on the previous kernel, so those bytes are on chip when the product reads them and its HBM
stream is that much shorter. A prefetch changes no value (L2 is the point of coherence for
global memory); it only moves bytes earlier. On devices before sm_90 it compiles to nothing.
*/
#pragma once

#include <cstddef>
#include <cstdint>

namespace tandem {

constexpr int kL2WarmRanges = 2;
constexpr unsigned kL2WarmChunk = 64u << 10;  // bytes per prefetch instruction

struct L2Warm {
  const char* ptr[kL2WarmRanges];  // 16-byte aligned
  size_t bytes[kL2WarmRanges];     // multiples of 16; 0: no range
};

__device__ __forceinline__ void prefetchL2Bulk(const void* p, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// Called by the first warp of every block of a grid: the ranges are cut into kL2WarmChunk pieces,
// dealt to the grid's lanes in order (block 0's lanes take the first 32 pieces of each range),
// one instruction each; the prefetches run on while the block goes on.
__device__ __forceinline__ void warmL2(const L2Warm& w) {
  const size_t lanes = static_cast<size_t>(gridDim.x) * gridDim.y * gridDim.z * 32;
  const size_t block = blockIdx.x + static_cast<size_t>(gridDim.x) * (blockIdx.y + static_cast<size_t>(gridDim.y) * blockIdx.z);
  const size_t first = block * 32 + threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < kL2WarmRanges; r++) {
    const size_t pieces = (w.bytes[r] + kL2WarmChunk - 1) / kL2WarmChunk;
    for (size_t i = first; i < pieces; i += lanes) {
      const size_t at = i * kL2WarmChunk;
      const size_t left = w.bytes[r] - at;
      prefetchL2Bulk(w.ptr[r] + at, static_cast<unsigned>(left < kL2WarmChunk ? left : kL2WarmChunk));
    }
  }
}

}  // namespace tandem
