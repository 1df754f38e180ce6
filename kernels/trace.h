/*
Kernel trace (a build with TANDEM_CUDA_TRACE=1, i.e. -DTANDEM_TRACE): thread 0 of every block of
a kernel that uses pdl.cuh records when the block started (pdlLaunchDependents) and when its
pdlWait() returned, so a replayed decode graph can be read as a timeline: kernel K+1's earliest
post-wait time is when K finished, and the gap between a kernel's first start and that time is
how much of its launch overlapped its predecessor. Without the define nothing is recorded and
traceAttach() throws.

A record is two u64: %globaltimer (ns), then kind (2 bits, 0 start / 1 post-wait) << 62 | smid
(14 bits) << 48 | blocks in the grid (24 bits) << 24 | block index (24 bits).
*/
#pragma once

#include <vector>

namespace tandem {

struct TraceState {
  unsigned long long* records;  // capacity x 2 u64, or null: not tracing
  unsigned* count;              // records claimed so far (may pass capacity: those are dropped)
  unsigned capacity;
};

// Each translation unit that includes pdl.cuh keeps its own device copy of the state; it
// registers a function that sets it (pdl.cuh), and traceAttach() calls them all.
using TraceAttacher = void (*)(const TraceState&);
std::vector<TraceAttacher>& traceAttachers();

// Points every unit's kernels at records / count (null records: stop). Throws in a build
// without TANDEM_TRACE.
void traceAttach(const TraceState& state);

}  // namespace tandem
