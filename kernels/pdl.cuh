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

namespace tandem {

__device__ __forceinline__ void pdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdlLaunchDependents() {
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
