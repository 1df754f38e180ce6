/*
CUDA graphs: record a fixed sequence of launches once and replay it with one launch.

A decode step is hundreds of small launches; replaying them as one graph removes the per-launch
CPU and driver cost. The TS side (src/backend/cuda/cuda-backend.ts, graphs) makes capture safe:
every device address a captured kernel touches is fixed (weights, KV cache, a scratch arena the
graph owns, persistent input tensors rewritten before each replay), and nothing allocates or
uploads while capturing (cudaMalloc is illegal there; an upload would bake in a staging buffer).

graphBegin()       start capturing the binding stream (thread-local mode: the download worker
                   threads may keep calling CUDA meanwhile)
graphEnd() -> id   stop capturing and instantiate; on failure the capture is over, the sticky
                   error cleared, and the error thrown names what went wrong
graphLaunch(id)    queue a replay on the binding stream
graphDestroy(id)   free the executable graph (after the replays queued so far: the driver waits)
traceAttach(records, count, capacity)
                   point the kernels' trace at device memory (trace.h; records 0: stop), after
                   the stream's queued work; throws unless built with TANDEM_CUDA_TRACE=1
*/
#include <unordered_map>

#include "binding.h"
#include "trace.h"

namespace tandem {
namespace {

struct GraphState {
  std::unordered_map<int, cudaGraphExec_t> graphs;
  int next = 1;
  bool capturing = false;
};

GraphState& state() {
  static GraphState s;
  return s;
}

napi_value GraphBegin(napi_env env, napi_callback_info) {
  requireReady("graphBegin");
  GraphState& s = state();
  if (s.capturing) throw Error("graphBegin: a capture is already under way; end it with graphEnd() first");
  cudaCheck(cudaStreamBeginCapture(bindingStream(), cudaStreamCaptureModeThreadLocal));
  s.capturing = true;
  return undefinedValue(env);
}

napi_value GraphEnd(napi_env env, napi_callback_info) {
  requireReady("graphEnd");
  GraphState& s = state();
  if (!s.capturing) throw Error("graphEnd: no capture is under way (call graphBegin() first)");
  s.capturing = false;
  cudaGraph_t graph = nullptr;
  const cudaError_t endErr = cudaStreamEndCapture(bindingStream(), &graph);
  if (endErr != cudaSuccess || graph == nullptr) {
    // An illegal call during capture (an allocation, a sync, a copy from pageable memory)
    // invalidates it; the error is reported here, and cleared so later launches work.
    (void)cudaGetLastError();
    if (graph != nullptr) cudaGraphDestroy(graph);
    throw Error(std::string("graphEnd: the capture failed: ") + cudaGetErrorName(endErr) + " (" + cudaGetErrorString(endErr) +
                "); something in the captured work allocated, synchronized or uploaded");
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t instErr = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (instErr != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error(std::string("graphEnd: cudaGraphInstantiate failed: ") + cudaGetErrorName(instErr) + " (" + cudaGetErrorString(instErr) + ")");
  }
  const int id = s.next++;
  s.graphs[id] = exec;
  return numberValue(env, id);
}

cudaGraphExec_t find(const char* fn, int id) {
  auto it = state().graphs.find(id);
  if (it == state().graphs.end()) throw Error(std::string(fn) + ": graph " + std::to_string(id) + " does not exist (destroyed, or never made)");
  return it->second;
}

napi_value GraphLaunch(napi_env env, napi_callback_info info) {
  Args a(env, info, 1, "graphLaunch");
  requireReady("graphLaunch");
  if (state().capturing) throw Error("graphLaunch: cannot replay a graph while capturing another");
  cudaCheck(cudaGraphLaunch(find("graphLaunch", a.i32(0)), bindingStream()));
  return undefinedValue(env);
}

napi_value GraphDestroy(napi_env env, napi_callback_info info) {
  Args a(env, info, 1, "graphDestroy");
  requireReady("graphDestroy");
  const int id = a.i32(0);
  cudaGraphExec_t exec = find("graphDestroy", id);
  cudaCheck(cudaGraphExecDestroy(exec));
  state().graphs.erase(id);
  return undefinedValue(env);
}

napi_value TraceAttach(napi_env env, napi_callback_info info) {
  Args a(env, info, 3, "traceAttach");
  requireReady("traceAttach");
  if (state().capturing) throw Error("traceAttach: not while capturing a graph");
  const size_t capacity = a.size(2);
  if (capacity > 0xffffffffu) throw Error("traceAttach: capacity past 2^32 records");
  // The records of work queued before now belong to the state it was queued under.
  cudaCheck(cudaStreamSynchronize(bindingStream()));
  traceAttach(TraceState{static_cast<unsigned long long*>(a.ptr(0)), static_cast<unsigned*>(a.ptr(1)),
                         a.ptr(0) == nullptr ? 0u : static_cast<unsigned>(capacity)});
  return undefinedValue(env);
}

}  // namespace

void registerGraphs(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      TANDEM_FN("graphBegin", GraphBegin),
      TANDEM_FN("graphEnd", GraphEnd),
      TANDEM_FN("graphLaunch", GraphLaunch),
      TANDEM_FN("graphDestroy", GraphDestroy),
      TANDEM_FN("traceAttach", TraceAttach),
  };
  defineFunctions(env, exports, props, sizeof(props) / sizeof(props[0]));
}

}  // namespace tandem
