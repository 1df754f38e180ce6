/*
The kernel trace's host side (trace.h): the registry of per-unit attachers and traceAttach().
The device side (recording) is in pdl.cuh.
*/
#include "common.cuh"
#include "trace.h"

namespace tandem {

std::vector<TraceAttacher>& traceAttachers() {
  static std::vector<TraceAttacher> attachers;
  return attachers;
}

void traceAttach(const TraceState& state) {
#ifdef TANDEM_TRACE
  for (TraceAttacher attach : traceAttachers()) attach(state);
#else
  (void)state;
  throw Error("traceAttach: this addon was built without the kernel trace (rebuild with TANDEM_CUDA_TRACE=1 bash kernels/build.sh)");
#endif
}

}  // namespace tandem
