/*
Node-API launchers of the device sampler (sampling.cu): sample(), its limits, and the hook that
checks the device's Philox uniforms against src/backend/rng.ts. Registered by registerSampling().
*/
#include "binding.h"

namespace tandem {
namespace {

// (ids i32 [S], logprobs f32 [S], topIds i32 [S, topStride], topLogprobs f32 [S, topStride], topStride,
//  logits, S, V, dt, params, penalties, pendingIds (0: none), anyPenalties)
napi_value Sample(napi_env env, napi_callback_info info) {
  Args a(env, info, 13, "sample");
  requireReady("sample");
  sample(static_cast<int*>(a.ptr(0)), static_cast<float*>(a.ptr(1)), static_cast<int*>(a.ptr(2)),
         static_cast<float*>(a.ptr(3)), a.i32(4), a.ptr(5), a.i32(6), a.i32(7), a.i32(8), a.ptr(9), a.ptr(10),
         static_cast<const int*>(a.ptr(11)), a.num(12) != 0, bindingStream());
  return undefinedValue(env);
}

// sampleLimits() -> { maxTopLogprobs, maxPenaltyVocab }: rows beyond these sample on the host.
napi_value SampleLimits(napi_env env, napi_callback_info) {
  napi_value obj;
  NAPI_CALL(napi_create_object(env, &obj));
  setNumber(env, obj, "maxTopLogprobs", sampleMaxTopLogprobs());
  setNumber(env, obj, "maxPenaltyVocab", sampleMaxPenaltyVocab());
  return obj;
}

napi_value SampleUniforms(napi_env env, napi_callback_info info) {  // (out f32 [S], params, S)
  Args a(env, info, 3, "sampleUniforms");
  requireReady("sampleUniforms");
  sampleUniforms(static_cast<float*>(a.ptr(0)), a.ptr(1), a.i32(2), bindingStream());
  return undefinedValue(env);
}

}  // namespace

void registerSampling(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      TANDEM_FN("sample", Sample),
      TANDEM_FN("sampleLimits", SampleLimits),
      TANDEM_FN("sampleUniforms", SampleUniforms),
  };
  defineFunctions(env, exports, props, sizeof(props) / sizeof(props[0]));
}

}  // namespace tandem
