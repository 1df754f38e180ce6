/*
The Node-API binding's core: device memory, copies, downloads, and the module's init. The
launchers of the kernels (ops.h) live in binding-*.cpp, one file per family (binding.h).

upload() copies through pinned staging buffers (reused once an event says their last copy is
done), so it never waits for the GPU; only uploads over 16 MiB (weights, at load time) copy from
pageable memory, which the driver may stage only after the stream drains.

One process, one GPU, one stream: every launch and copy goes on `stream`, so the order calls
are made in is the order the GPU runs them, and memory handed back (freed tensors, a reset
scratch arena) can be reused at once: any later use is queued behind the earlier ones.

Device pointers cross into JS as plain numbers (addresses are below 2^53). Errors become JS
exceptions whose message names file:line of the failing CUDA/cuBLAS call.

download() and synchronize() return promises. The copy is queued on the stream at call time
(so it sees every op queued before it) into pinned staging memory, followed by an event; an
napi_async_work then waits for that event on a libuv worker thread (polling it for up to
TANDEM_WAIT_SPIN_US, then sleeping on it), converts bf16 to f32 there,
and resolves on the main thread. The event loop never waits for the GPU.
*/
#include <node_api.h>
#include <sys/prctl.h>

#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "binding.h"

namespace tandem {
namespace {

// ----------------------------------------------------------------------------
// state

struct DeviceAllocator {
  std::unordered_map<void*, size_t> live;                  // pointer -> rounded size
  std::unordered_map<size_t, std::vector<void*>> cached;  // rounded size -> free blocks
  size_t liveBytes = 0;
  size_t cachedBytes = 0;
};

struct PinnedPool {
  std::map<size_t, std::vector<void*>> free;  // size (a power of two) -> blocks
  size_t bytes = 0;
};

// A pinned buffer uploads are staged through; `done` is recorded after the copy that reads it.
struct Staging {
  void* ptr = nullptr;
  size_t size = 0;
  cudaEvent_t done = nullptr;
};

struct State {
  bool ready = false;
  int device = 0;
  cudaStream_t stream = nullptr;
  DeviceAllocator alloc;
  PinnedPool pinned;
  std::vector<cudaEvent_t> events;
  std::vector<Staging> staging;
} g;

size_t roundDevice(size_t bytes) { return bytes == 0 ? 512 : (bytes + 511) / 512 * 512; }

void emptyDeviceCache() {
  if (g.alloc.cachedBytes == 0) return;
  cudaCheck(cudaStreamSynchronize(g.stream));  // cudaFree of memory a queued kernel still reads
  for (auto& kv : g.alloc.cached) {
    for (void* p : kv.second) cudaCheck(cudaFree(p));
  }
  g.alloc.cached.clear();
  g.alloc.cachedBytes = 0;
}

void* deviceAlloc(size_t bytes) {
  const size_t size = roundDevice(bytes);
  auto it = g.alloc.cached.find(size);
  void* p = nullptr;
  if (it != g.alloc.cached.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    g.alloc.cachedBytes -= size;
  } else {
    cudaError_t err = cudaMalloc(&p, size);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it, give the cache back, try once more
      emptyDeviceCache();
      err = cudaMalloc(&p, size);
    }
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t freeB = 0, totalB = 0;
      cudaMemGetInfo(&freeB, &totalB);
      throw Error(where(__FILE__, __LINE__) + ": out of GPU memory: asked for " + std::to_string(size) +
                  " bytes, " + std::to_string(freeB) + " of " + std::to_string(totalB) +
                  " free; this process holds " + std::to_string(g.alloc.liveBytes) + " in tensors");
    }
    cudaCheck(err);
    if (reinterpret_cast<uintptr_t>(p) >= (uintptr_t{1} << 53)) throw Error("cudaMalloc returned an address above 2^53");
  }
  g.alloc.live[p] = size;
  g.alloc.liveBytes += size;
  return p;
}

void deviceRelease(void* p) {
  auto it = g.alloc.live.find(p);
  if (it == g.alloc.live.end()) throw Error("free: not a live allocation of this addon");
  g.alloc.cached[it->second].push_back(p);
  g.alloc.cachedBytes += it->second;
  g.alloc.liveBytes -= it->second;
  g.alloc.live.erase(it);
}

// Pinned staging buffers for downloads, reused by size class; huge ones are not kept.
constexpr size_t kPinnedKeepMax = size_t{256} << 20;

size_t pinnedClass(size_t bytes) {
  size_t s = 64 << 10;
  while (s < bytes) s <<= 1;
  return s;
}

void* pinnedTake(size_t bytes, size_t* size) {
  *size = pinnedClass(bytes);
  auto it = g.pinned.free.find(*size);
  if (it != g.pinned.free.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    return p;
  }
  void* p = nullptr;
  cudaCheck(cudaMallocHost(&p, *size));
  g.pinned.bytes += *size;
  return p;
}

void pinnedGive(void* p, size_t size) {
  if (size > kPinnedKeepMax) {
    cudaFreeHost(p);
    g.pinned.bytes -= size;
    return;
  }
  g.pinned.free[size].push_back(p);
}

cudaEvent_t eventTake() {
  if (!g.events.empty()) {
    cudaEvent_t e = g.events.back();
    g.events.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  // Blocking sync: the waiting worker thread sleeps instead of spinning a core.
  cudaCheck(cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventBlockingSync));
  return e;
}

// Uploads up to this size go through pinned staging (truly asynchronous); larger ones (weights at
// load time) copy from pageable memory, which the driver may stage only after the stream drains.
constexpr size_t kStageMax = size_t{16} << 20;
constexpr size_t kStagingBuffersMax = 64;

// A staging buffer of at least `bytes` whose last copy has finished, or null when too many are busy.
Staging* stagingFor(size_t bytes) {
  for (Staging& s : g.staging) {
    if (s.size < bytes) continue;
    const cudaError_t err = cudaEventQuery(s.done);
    if (err == cudaSuccess) return &s;
    if (err != cudaErrorNotReady) cudaCheck(err);
    cudaGetLastError();  // "not ready" is no error: clear it so the next launch check does not see it
  }
  if (g.staging.size() >= kStagingBuffersMax) return nullptr;
  Staging s;
  s.size = pinnedClass(bytes);
  cudaCheck(cudaMallocHost(&s.ptr, s.size));
  const cudaError_t err = cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming);
  if (err != cudaSuccess) cudaFreeHost(s.ptr);
  cudaCheck(err);
  g.pinned.bytes += s.size;
  g.staging.push_back(s);
  return &g.staging.back();
}

}  // namespace

void requireReady(const char* fn) {
  if (!g.ready) throw Error(std::string(fn) + ": call init() first");
}

cudaStream_t bindingStream() { return g.stream; }

namespace {

// ----------------------------------------------------------------------------
// device and memory

// probe() -> { count, error }: never throws, for "is a GPU here?" checks.
napi_value Probe(napi_env env, napi_callback_info) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    count = 0;
  }
  napi_value obj, error;
  NAPI_CALL(napi_create_object(env, &obj));
  setNumber(env, obj, "count", count);
  if (err != cudaSuccess) {
    const std::string msg = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    NAPI_CALL(napi_create_string_utf8(env, msg.c_str(), msg.size(), &error));
  } else {
    NAPI_CALL(napi_get_null(env, &error));
  }
  NAPI_CALL(napi_set_named_property(env, obj, "error", error));
  return obj;
}

// init(device) -> { name, totalMemory, multiprocessors, major, minor, device }; once per process.
napi_value Init(napi_env env, napi_callback_info info) {
  Args a(env, info, 1, "init");
  const int device = a.i32(0);
  if (g.ready && device != g.device) {
    throw Error("init: this process already uses GPU " + std::to_string(g.device) + "; one process drives one GPU");
  }
  if (!g.ready) {
    cudaCheck(cudaSetDevice(device));
    cudaCheck(cudaFree(nullptr));  // create the context now, not inside the first op
    cudaCheck(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking));
    linearInit();
    attentionInit();
    g.device = device;
    g.ready = true;
  }
  cudaDeviceProp prop{};
  cudaCheck(cudaGetDeviceProperties(&prop, g.device));
  napi_value obj, name;
  NAPI_CALL(napi_create_object(env, &obj));
  NAPI_CALL(napi_create_string_utf8(env, prop.name, NAPI_AUTO_LENGTH, &name));
  NAPI_CALL(napi_set_named_property(env, obj, "name", name));
  setNumber(env, obj, "device", g.device);
  setNumber(env, obj, "totalMemory", static_cast<double>(prop.totalGlobalMem));
  setNumber(env, obj, "multiprocessors", prop.multiProcessorCount);
  setNumber(env, obj, "l2CacheBytes", prop.l2CacheSize);
  setNumber(env, obj, "major", prop.major);
  setNumber(env, obj, "minor", prop.minor);
  return obj;
}

napi_value Malloc(napi_env env, napi_callback_info info) {
  Args a(env, info, 1, "malloc");
  requireReady("malloc");
  return ptrValue(env, deviceAlloc(a.size(0)));
}

napi_value Free(napi_env env, napi_callback_info info) {
  Args a(env, info, 1, "free");
  requireReady("free");
  deviceRelease(a.ptr(0));
  return undefinedValue(env);
}

napi_value EmptyCache(napi_env env, napi_callback_info) {
  requireReady("emptyCache");
  emptyDeviceCache();
  return undefinedValue(env);
}

// memStats() -> { live, cached, workspace, pinned } in bytes (this process).
napi_value MemStats(napi_env env, napi_callback_info) {
  napi_value obj;
  NAPI_CALL(napi_create_object(env, &obj));
  setNumber(env, obj, "live", static_cast<double>(g.alloc.liveBytes));
  setNumber(env, obj, "cached", static_cast<double>(g.alloc.cachedBytes));
  setNumber(env, obj, "workspace", static_cast<double>(linearWorkspaceBytes()));
  setNumber(env, obj, "pinned", static_cast<double>(g.pinned.bytes));
  return obj;
}

napi_value Zero(napi_env env, napi_callback_info info) {
  Args a(env, info, 2, "zero");
  requireReady("zero");
  if (a.size(1) > 0) cudaCheck(cudaMemsetAsync(a.ptr(0), 0, a.size(1), g.stream));
  return undefinedValue(env);
}

napi_value Copy(napi_env env, napi_callback_info info) {
  Args a(env, info, 3, "copy");
  requireReady("copy");
  if (a.size(2) > 0) cudaCheck(cudaMemcpyAsync(a.ptr(0), a.ptr(1), a.size(2), cudaMemcpyDeviceToDevice, g.stream));
  return undefinedValue(env);
}

uint16_t toBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

// upload(dst, typedArray, dtype): Float32Array -> f32 or bf16 (rounded to nearest even), Int32Array -> i32.
// The source may change or die as soon as this returns.
napi_value Upload(napi_env env, napi_callback_info info) {
  Args a(env, info, 3, "upload");
  requireReady("upload");
  void* dst = a.ptr(0);
  const int dt = a.i32(2);
  napi_typedarray_type type;
  size_t n = 0;
  void* data = nullptr;
  bool isTyped = false;
  NAPI_CALL(napi_is_typedarray(env, a[1], &isTyped));
  if (!isTyped) throw Error("upload: data must be a Float32Array or an Int32Array");
  NAPI_CALL(napi_get_typedarray_info(env, a[1], &type, &n, &data, nullptr, nullptr));
  const bool toBf16Rows = dt == kBF16 && type == napi_float32_array;
  if (!toBf16Rows && !((dt == kF32 && type == napi_float32_array) || (dt == kI32 && type == napi_int32_array))) {
    throw Error("upload: dtype code " + std::to_string(dt) + " does not match the typed array");
  }
  if (n == 0) return undefinedValue(env);
  const size_t bytes = n * dtypeBytes(dt);
  Staging* s = bytes <= kStageMax ? stagingFor(bytes) : nullptr;
  std::vector<uint16_t> converted;
  void* src = data;
  if (s != nullptr) {
    src = s->ptr;
    if (toBf16Rows) {
      uint16_t* out = static_cast<uint16_t*>(s->ptr);
      const float* in = static_cast<const float*>(data);
      for (size_t i = 0; i < n; i++) out[i] = toBf16(in[i]);
    } else {
      std::memcpy(s->ptr, data, bytes);
    }
  } else if (toBf16Rows) {
    converted.resize(n);
    const float* in = static_cast<const float*>(data);
    for (size_t i = 0; i < n; i++) converted[i] = toBf16(in[i]);
    src = converted.data();
  }
  // From pageable memory (no staging buffer) the driver copies the source out before returning.
  cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g.stream));
  if (s != nullptr) cudaCheck(cudaEventRecord(s->done, g.stream));
  return undefinedValue(env);
}

// ----------------------------------------------------------------------------
// waiting for the GPU without blocking the event loop

struct Wait {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  napi_ref buffer = nullptr;  // the ArrayBuffer the result lands in (downloads only)
  void* out = nullptr;        // its data
  void* staging = nullptr;    // pinned copy of the device data
  size_t stagingSize = 0;
  cudaEvent_t event = nullptr;
  size_t n = 0;
  int dtype = kF32;
  int device = 0;
  std::string error;
};

// How long a waiting worker polls its event before it sleeps on it (TANDEM_WAIT_SPIN_US, default
// 20000; 0: sleep at once). A blocking-sync event wakes its thread through the driver's interrupt
// path; most waits are one decode step of a few ms, which polling catches as soon as it ends, at
// the cost of one busy worker thread meanwhile. Long waits (training slices) still sleep.
long long waitSpinMicros() {
  static const long long us = [] {
    const char* v = std::getenv("TANDEM_WAIT_SPIN_US");
    if (v == nullptr) return 20000LL;
    const long long x = std::atoll(v);
    return x > 0 ? x : 0LL;
  }();
  return us;
}

// Microseconds between two polls of a waiting worker (TANDEM_WAIT_POLL_US, default 0: only a yield
// between them). Each poll is a CUDA call, and a worker polling in a tight loop may contend with
// the main thread's kernel launches for the driver's locks (an eager step launches ~1000 kernels
// while the previous step's wait polls); a pause trades up to that long of wake-up latency for
// far fewer calls. The thread's timer slack is set to 1 us so short pauses stay short. For A/B runs
// (bench/peer/device-ab-round.sh) until measured.
long long waitPollMicros() {
  static const long long us = [] {
    const char* v = std::getenv("TANDEM_WAIT_POLL_US");
    if (v == nullptr) return 0LL;
    const long long x = std::atoll(v);
    return x > 0 ? std::min(x, 1000LL) : 0LL;
  }();
  return us;
}

cudaError_t waitForEvent(cudaEvent_t event) {
  const long long spin = waitSpinMicros();
  const long long poll = waitPollMicros();
  if (spin > 0 && poll > 0) {
    thread_local bool slackSet = false;  // per thread (libuv's workers live as long as the process)
    if (!slackSet) {
      prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);  // 1 us; a failure only means coarser pauses
      slackSet = true;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  while (spin > 0) {
    const cudaError_t err = cudaEventQuery(event);
    if (err != cudaErrorNotReady) return err;
    const auto waited = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
    if (waited.count() >= spin) break;
    if (poll > 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(poll));
    } else {
      std::this_thread::yield();
    }
  }
  return cudaEventSynchronize(event);
}

void waitExecute(napi_env, void* data) {  // on a libuv worker thread: no N-API calls here
  Wait* w = static_cast<Wait*>(data);
  cudaError_t err = cudaSetDevice(w->device);
  if (err == cudaSuccess) err = waitForEvent(w->event);
  if (err != cudaSuccess) {
    w->error = where(__FILE__, __LINE__) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
               ") while waiting for the GPU; the failing op is any one queued before this wait";
    return;
  }
  if (w->n == 0) return;
  if (w->dtype == kBF16) {
    const uint16_t* src = static_cast<const uint16_t*>(w->staging);
    float* dst = static_cast<float*>(w->out);
    for (size_t i = 0; i < w->n; i++) {
      const uint32_t u = static_cast<uint32_t>(src[i]) << 16;
      std::memcpy(dst + i, &u, 4);
    }
  } else {
    std::memcpy(w->out, w->staging, w->n * 4);
  }
}

void waitComplete(napi_env env, napi_status status, void* data) {  // back on the main thread
  Wait* w = static_cast<Wait*>(data);
  g.events.push_back(w->event);
  if (w->staging != nullptr) pinnedGive(w->staging, w->stagingSize);
  napi_value result = nullptr;
  if (status != napi_ok && w->error.empty()) w->error = "tandem_cuda: the wait for the GPU was cancelled";
  if (w->error.empty()) {
    if (w->buffer != nullptr) {
      napi_value ab;
      const napi_typedarray_type type = w->dtype == kI32 ? napi_int32_array : napi_float32_array;
      if (napi_get_reference_value(env, w->buffer, &ab) != napi_ok ||
          napi_create_typedarray(env, type, w->n, ab, 0, &result) != napi_ok) {
        w->error = "tandem_cuda: could not create the downloaded array";
      }
    } else {
      napi_get_undefined(env, &result);
    }
  }
  if (w->error.empty()) {
    napi_resolve_deferred(env, w->deferred, result);
  } else {
    napi_value msg, err;
    napi_create_string_utf8(env, w->error.c_str(), w->error.size(), &msg);
    napi_create_error(env, nullptr, msg, &err);
    napi_reject_deferred(env, w->deferred, err);
  }
  if (w->buffer != nullptr) napi_delete_reference(env, w->buffer);
  napi_delete_async_work(env, w->work);
  delete w;
}

// Queue the event (after whatever copy the caller queued) and the worker that waits for it.
napi_value startWait(napi_env env, Wait* w) {
  napi_value promise, name;
  w->device = g.device;
  try {
    w->event = eventTake();
    cudaCheck(cudaEventRecord(w->event, g.stream));
    NAPI_CALL(napi_create_promise(env, &w->deferred, &promise));
    NAPI_CALL(napi_create_string_utf8(env, "tandem_cuda.wait", NAPI_AUTO_LENGTH, &name));
    NAPI_CALL(napi_create_async_work(env, nullptr, name, waitExecute, waitComplete, w, &w->work));
    NAPI_CALL(napi_queue_async_work(env, w->work));
  } catch (...) {
    // (a created promise is dropped unsettled: the caller gets the exception instead)
    if (w->event != nullptr) g.events.push_back(w->event);
    if (w->staging != nullptr) pinnedGive(w->staging, w->stagingSize);
    if (w->buffer != nullptr) napi_delete_reference(env, w->buffer);
    if (w->work != nullptr) napi_delete_async_work(env, w->work);
    delete w;
    throw;
  }
  return promise;
}

// download(src, n, dtype) -> Promise<Float32Array | Int32Array>: f32 and bf16 give f32, i32 gives i32.
napi_value Download(napi_env env, napi_callback_info info) {
  Args a(env, info, 3, "download");
  requireReady("download");
  const void* src = a.ptr(0);
  const size_t n = a.size(1);
  const int dt = a.i32(2);
  if (dt != kF32 && dt != kBF16 && dt != kI32) throw Error("download: bad dtype code " + std::to_string(dt));
  Wait* w = new Wait();
  w->n = n;
  w->dtype = dt;
  try {
    napi_value ab;
    NAPI_CALL(napi_create_arraybuffer(env, n * 4, &w->out, &ab));
    NAPI_CALL(napi_create_reference(env, ab, 1, &w->buffer));
    if (n > 0) {
      const size_t bytes = n * dtypeBytes(dt);
      w->staging = pinnedTake(bytes, &w->stagingSize);
      cudaCheck(cudaMemcpyAsync(w->staging, src, bytes, cudaMemcpyDeviceToHost, g.stream));
    }
  } catch (...) {
    if (w->staging != nullptr) pinnedGive(w->staging, w->stagingSize);
    if (w->buffer != nullptr) napi_delete_reference(env, w->buffer);
    delete w;
    throw;
  }
  return startWait(env, w);
}

// synchronize() -> Promise<undefined>, settled once everything queued so far has run.
napi_value Synchronize(napi_env env, napi_callback_info) {
  requireReady("synchronize");
  return startWait(env, new Wait());
}

}  // namespace
}  // namespace tandem

NAPI_MODULE_INIT() {
  using namespace tandem;
  const napi_property_descriptor props[] = {
      TANDEM_FN("probe", Probe),
      TANDEM_FN("init", Init),
      TANDEM_FN("malloc", Malloc),
      TANDEM_FN("free", Free),
      TANDEM_FN("emptyCache", EmptyCache),
      TANDEM_FN("memStats", MemStats),
      TANDEM_FN("zero", Zero),
      TANDEM_FN("copy", Copy),
      TANDEM_FN("upload", Upload),
      TANDEM_FN("download", Download),
      TANDEM_FN("synchronize", Synchronize),
  };
  try {
    defineFunctions(env, exports, props, sizeof(props) / sizeof(props[0]));
    registerForwardOps(env, exports);
    registerTrainingOps(env, exports);
    registerSampling(env, exports);
    registerGraphs(env, exports);
  } catch (...) {
    return nullptr;
  }
  return exports;
}
