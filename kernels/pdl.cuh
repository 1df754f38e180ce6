/*
Programmatic dependent launch (Hopper and later): a kernel launched with launchPdl() may start
while the kernel before it in the stream is still running, so its launch latency and whatever it
does before pdlWait() (loading weights, which no earlier kernel writes) overlap that kernel's
tail. Inside CUDA graphs the edge between the two kernels becomes a programmatic one.

The rule every kernel launched with launchPdl() follows: call pdlWait() before its first access
to memory that an earlier kernel of the stream writes or reads (activations, caches, scratch),
reads of weights only may come before it. pdlWait() returns once the previous kernel has
finished and its writes are visible; as that kernel waited on its own predecessor, everything
earlier in the stream is finished too. pdlLaunchDependents() lets the next kernel be scheduled
before this one ends (it still waits in its own pdlWait()).

On devices before sm_90, or with TANDEM_PDL=0 in the environment, launchPdl() is a plain launch
and both device calls compile to nothing / are no-ops.
*/
#pragma once

#include <cstdlib>
#include <cstring>
#include <utility>

#include "common.cuh"
#include "trace.h"

namespace tandem {

#ifdef TANDEM_TRACE
// This unit's copy of the trace state (trace.h), set through the attacher registered below.
static __device__ TraceState gTraceState;

// Thread 0 of the block appends one record (trace.h's layout).
__device__ __forceinline__ void traceMark(unsigned long long kind) {
  if ((threadIdx.x | threadIdx.y | threadIdx.z) != 0) return;
  const TraceState s = gTraceState;
  if (s.records == nullptr) return;
  unsigned long long now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  unsigned smid;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
  const unsigned i = atomicAdd(s.count, 1u);
  if (i >= s.capacity) return;
  const unsigned long long blocks = static_cast<unsigned long long>(gridDim.x) * gridDim.y * gridDim.z;
  const unsigned long long block = blockIdx.x + static_cast<unsigned long long>(gridDim.x) * (blockIdx.y + gridDim.y * blockIdx.z);
  s.records[2 * static_cast<size_t>(i)] = now;
  s.records[2 * static_cast<size_t>(i) + 1] =
      kind << 62 | (static_cast<unsigned long long>(smid) & 0x3fff) << 48 | (blocks & 0xffffff) << 24 | (block & 0xffffff);
}

namespace {
void traceAttachThisUnit(const TraceState& state) { cudaCheck(cudaMemcpyToSymbol(gTraceState, &state, sizeof(state))); }
[[maybe_unused]] const bool kTraceRegistered = (traceAttachers().push_back(&traceAttachThisUnit), true);
}  // namespace
#else
__device__ __forceinline__ void traceMark(unsigned long long) {}
#endif

__device__ __forceinline__ void pdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  traceMark(1);
}

__device__ __forceinline__ void pdlLaunchDependents() {
  traceMark(0);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// Whether the current device is Hopper-class (sm_90) or later (PDL).
inline bool hopperOrLater() {
  int device = 0;
  int major = 0;
  cudaCheck(cudaGetDevice(&device));
  cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  return major >= 9;
}

// Whether launches ask for programmatic serialization: a Hopper-class device, not turned off.
inline bool pdlEnabled() {
  static const bool enabled = !envSwitchOff("TANDEM_PDL") && hopperOrLater();
  return enabled;
}

template <typename... Params, typename... Args>
void launchPdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdlEnabled() ? 1 : 0;
  config.attrs = attr;
  config.numAttrs = 1;
  cudaCheck(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace tandem
