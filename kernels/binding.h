/*
What every binding file shares: CUDA error checks that throw tandem::Error naming file:line, the
argument reader (Args), small value helpers, guarded<> (C++ exceptions become JS errors), and
the process's one stream. binding.cpp owns device memory, copies and the module's init; each
binding-*.cpp adds one family of launchers and registers them through a register* function
declared at the bottom of this file (call it from NAPI_MODULE_INIT in binding.cpp).
*/
#pragma once

#include <node_api.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "ops.h"

namespace tandem {

// ----------------------------------------------------------------------------
// errors

inline const char* baseName(const char* path) {
  const char* slash = std::strrchr(path, '/');
  return slash ? slash + 1 : path;
}

inline std::string where(const char* file, int line) { return std::string(baseName(file)) + ":" + std::to_string(line); }

inline void cudaCheckImpl(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) {
    throw Error(where(file, line) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ") in " + call);
  }
}
#define cudaCheck(call) ::tandem::cudaCheckImpl((call), #call, __FILE__, __LINE__)

// A failed N-API call: usually a JS exception is already pending (a bad argument type).
struct NapiFailure {};

#define NAPI_CALL(call)                  \
  do {                                   \
    if ((call) != napi_ok) throw NapiFailure{}; \
  } while (0)

// ----------------------------------------------------------------------------
// argument helpers

class Args {
 public:
  Args(napi_env env, napi_callback_info info, size_t expected, const char* fn) : env_(env), fn_(fn) {
    size_t argc = kMax;
    NAPI_CALL(napi_get_cb_info(env, info, &argc, argv_, nullptr, nullptr));
    if (argc < expected) {
      throw Error(std::string(fn) + ": expected " + std::to_string(expected) + " arguments, got " +
                  std::to_string(argc));
    }
  }

  napi_value operator[](size_t i) const { return argv_[i]; }

  double num(size_t i) const {
    double v = 0;
    if (napi_get_value_double(env_, argv_[i], &v) != napi_ok) {
      throw Error(std::string(fn_) + ": argument " + std::to_string(i) + " must be a number");
    }
    return v;
  }

  int i32(size_t i) const { return static_cast<int>(num(i)); }
  float f32(size_t i) const { return static_cast<float>(num(i)); }

  size_t size(size_t i) const {
    const double v = num(i);
    if (!(v >= 0) || v > 9007199254740991.0) throw Error(std::string(fn_) + ": argument " + std::to_string(i) + " must be a size");
    return static_cast<size_t>(v);
  }

  // A device pointer; 0 means none.
  void* ptr(size_t i) const { return reinterpret_cast<void*>(static_cast<uintptr_t>(size(i))); }
  const int* iptr(size_t i) const { return static_cast<const int*>(ptr(i)); }

 private:
  static constexpr size_t kMax = 32;
  napi_env env_;
  const char* fn_;
  napi_value argv_[kMax] = {};
};

inline napi_value undefinedValue(napi_env env) {
  napi_value v;
  NAPI_CALL(napi_get_undefined(env, &v));
  return v;
}

inline napi_value boolValue(napi_env env, bool b) {
  napi_value v;
  NAPI_CALL(napi_get_boolean(env, b, &v));
  return v;
}

inline napi_value numberValue(napi_env env, double d) {
  napi_value v;
  NAPI_CALL(napi_create_double(env, d, &v));
  return v;
}

inline napi_value ptrValue(napi_env env, void* p) { return numberValue(env, static_cast<double>(reinterpret_cast<uintptr_t>(p))); }

inline void setNumber(napi_env env, napi_value obj, const char* key, double d) {
  NAPI_CALL(napi_set_named_property(env, obj, key, numberValue(env, d)));
}

// Every exported function runs through this: C++ exceptions become JS errors.
template <napi_value (*F)(napi_env, napi_callback_info)>
napi_value guarded(napi_env env, napi_callback_info info) {
  try {
    return F(env, info);
  } catch (const NapiFailure&) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_error(env, nullptr, "tandem_cuda: a Node-API call failed");
  } catch (const std::exception& e) {
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_error(env, nullptr, e.what());
  }
  return nullptr;
}

// ----------------------------------------------------------------------------
// shared state and registration

// The stream every launch and copy goes on (one process, one GPU, one stream).
cudaStream_t bindingStream();
// Throws unless init() has run.
void requireReady(const char* fn);

#define TANDEM_FN(name, impl) \
  napi_property_descriptor { name, nullptr, ::tandem::guarded<impl>, nullptr, nullptr, nullptr, napi_enumerable, nullptr }

inline void defineFunctions(napi_env env, napi_value exports, const napi_property_descriptor* props, size_t n) {
  if (napi_define_properties(env, exports, n, props) != napi_ok) throw NapiFailure{};
}

// One per binding-*.cpp file.
void registerForwardOps(napi_env env, napi_value exports);  // binding-ops.cpp
void registerTrainingOps(napi_env env, napi_value exports);  // binding-train.cpp
void registerSampling(napi_env env, napi_value exports);     // binding-sampling.cpp
void registerGraphs(napi_env env, napi_value exports);       // binding-graph.cpp

}  // namespace tandem
