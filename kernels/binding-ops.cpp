/*
Node-API launchers of the forward kernels (ops.h): each reads its arguments, checks init, and
queues the kernel on the shared stream. Registered by registerForwardOps().
*/
#include "binding.h"

namespace tandem {
namespace {

// ----------------------------------------------------------------------------
// ops (argument order as in ops.h; see the TS wrapper for shapes)

napi_value Embedding(napi_env env, napi_callback_info info) {  // (out, ids, table, T, V, rowBytes)
  Args a(env, info, 6, "embedding");
  requireReady("embedding");
  gatherRows(a.ptr(0), a.ptr(2), a.iptr(1), a.i32(3), a.i32(4), a.size(5), bindingStream());
  return undefinedValue(env);
}

napi_value ScatterRows(napi_env env, napi_callback_info info) {  // (pool, rows, slots, T, numSlots, rowBytes)
  Args a(env, info, 6, "scatterRows");
  requireReady("scatterRows");
  scatterRows(a.ptr(0), a.ptr(1), a.iptr(2), a.i32(3), a.i32(4), a.size(5), bindingStream());
  return undefinedValue(env);
}

napi_value SplitColumns(napi_env env, napi_callback_info info) {  // (src, T, count, out0, bytes0, out1, bytes1, out2, bytes2)
  Args a(env, info, 9, "splitColumns");
  requireReady("splitColumns");
  const int count = a.i32(2);
  void* outs[3] = {a.ptr(3), a.ptr(5), a.ptr(7)};
  const size_t bytes[3] = {a.size(4), a.size(6), a.size(8)};
  splitColumns(outs, bytes, count, a.ptr(0), a.i32(1), bindingStream());
  return undefinedValue(env);
}

napi_value Rmsnorm(napi_env env, napi_callback_info info) {  // (y, sum, x, residual, w, eps, R, C, dt)
  Args a(env, info, 9, "rmsnorm");
  requireReady("rmsnorm");
  rmsnorm(a.ptr(0), a.ptr(1), a.ptr(2), a.ptr(3), a.ptr(4), a.f32(5), a.i32(6), a.i32(7), a.i32(8), bindingStream());
  return undefinedValue(env);
}

// (out, outDt, x, w, xwDt, alpha, T, K, N) -> whether it ran (false: nothing did; linear + axpy instead)
napi_value LinearAdd(napi_env env, napi_callback_info info) {
  Args a(env, info, 9, "linearAdd");
  requireReady("linearAdd");
  return boolValue(env, linearAdd(a.ptr(0), a.i32(1), a.ptr(2), a.ptr(3), a.i32(4), a.f32(5), a.i32(6), a.i32(7),
                                  a.i32(8), bindingStream()));
}

napi_value Linear(napi_env env, napi_callback_info info) {  // (out, outDt, x, w, xwDt, bias, biasDt, T, K, N)
  Args a(env, info, 10, "linear");
  requireReady("linear");
  linear(a.ptr(0), a.i32(1), a.ptr(2), a.ptr(3), a.i32(4), a.ptr(5), a.i32(6), a.i32(7), a.i32(8), a.i32(9),
         bindingStream());
  return undefinedValue(env);
}

// The optional fused rmsnorm of gemvMany / gemvSwiglu: (x, residual, w, sum, eps) from argument i; x = 0: none.
const GemvNorm* normAt(const Args& a, size_t i, GemvNorm& norm) {
  if (a.ptr(i) == nullptr) return nullptr;
  norm = GemvNorm{a.ptr(i), a.ptr(i + 1), a.ptr(i + 2), a.ptr(i + 3), a.f32(i + 4)};
  return &norm;
}

// (outDt, x, xwDt, T, K, normX, normResidual, normW, normSum, normEps, count, then 3 x (out, w, bias, biasDt, N))
// -> whether the decode kernel took it
napi_value GemvMany(napi_env env, napi_callback_info info) {
  Args a(env, info, 26, "gemvMany");
  requireReady("gemvMany");
  const int count = a.i32(10);
  if (count < 1 || count > 3) throw Error("gemvMany: count must be 1, 2 or 3, got " + std::to_string(count));
  GemvPart parts[3] = {};
  for (int p = 0; p < count; p++) {
    const int o = 11 + 5 * p;
    parts[p] = GemvPart{a.ptr(o), a.ptr(o + 1), a.ptr(o + 2), a.i32(o + 3), a.i32(o + 4)};
  }
  GemvNorm norm;
  const GemvNorm* nm = normAt(a, 5, norm);
  return boolValue(env, gemvMany(parts, count, a.i32(0), a.ptr(1), a.i32(2), a.i32(3), a.i32(4), nm, bindingStream()));
}

// (out, x, xwDt, T, K, N, wGate, gateBias, gateBiasDt, wUp, upBias, upBiasDt, normX, normResidual, normW, normSum,
//  normEps) -> whether the decode kernel took it
napi_value GemvSwiglu(napi_env env, napi_callback_info info) {
  Args a(env, info, 17, "gemvSwiglu");
  requireReady("gemvSwiglu");
  const int N = a.i32(5);
  const GemvPart gate{nullptr, a.ptr(6), a.ptr(7), a.i32(8), N};
  const GemvPart up{nullptr, a.ptr(9), a.ptr(10), a.i32(11), N};
  GemvNorm norm;
  const GemvNorm* nm = normAt(a, 12, norm);
  return boolValue(env, gemvSwiglu(a.ptr(0), a.ptr(1), gate, up, a.i32(2), a.i32(3), a.i32(4), nm, bindingStream()));
}

// (q, k, v, positions, invFreq, freqDt, kPool, vPool, slots, numSlots, T, H, Hkv, D, dt)
napi_value RopeWriteKv(napi_env env, napi_callback_info info) {
  Args a(env, info, 15, "ropeWriteKv");
  requireReady("ropeWriteKv");
  ropeWriteKv(a.ptr(0), a.ptr(1), a.ptr(2), a.iptr(3), a.ptr(4), a.i32(5), a.ptr(6), a.ptr(7), a.iptr(8), a.i32(9),
              a.i32(10), a.i32(11), a.i32(12), a.i32(13), a.i32(14), bindingStream());
  return undefinedValue(env);
}

napi_value Rope(napi_env env, napi_callback_info info) {  // (q, k, positions, invFreq, freqDt, T, H, Hkv, D, dt)
  Args a(env, info, 10, "rope");
  requireReady("rope");
  rope(a.ptr(0), a.ptr(1), a.iptr(2), a.ptr(3), a.i32(4), a.i32(5), a.i32(6), a.i32(7), a.i32(8), a.i32(9), bindingStream());
  return undefinedValue(env);
}

// (out, q, kPool, vPool, cuSeqlensQ, contextLens, blockTables, T, S, H, Hkv, D, blockSize, maxBlocks, numBlocks, scale, dt,
//  maxSeqlenQ, splits, workspace)
napi_value Attention(napi_env env, napi_callback_info info) {
  Args a(env, info, 20, "attention");
  requireReady("attention");
  attention(a.ptr(0), a.ptr(1), a.ptr(2), a.ptr(3), a.iptr(4), a.iptr(5), a.iptr(6), a.i32(7), a.i32(8), a.i32(9),
            a.i32(10), a.i32(11), a.i32(12), a.i32(13), a.i32(14), a.f32(15), a.i32(16), a.i32(17), a.i32(18), a.ptr(19),
            bindingStream());
  return undefinedValue(env);
}

// (out, q, k, v, positions, invFreq, freqDt, kPool, vPool, slots, numSlots, cuSeqlensQ, contextLens, blockTables, T, S,
//  H, Hkv, D, blockSize, maxBlocks, numBlocks, scale, dt, splits, workspace) -> whether the fused kernel took it
napi_value RopeAttentionDecode(napi_env env, napi_callback_info info) {
  Args a(env, info, 26, "ropeAttentionDecode");
  requireReady("ropeAttentionDecode");
  return boolValue(env, ropeAttentionDecode(a.ptr(0), a.ptr(1), a.ptr(2), a.ptr(3), a.iptr(4), a.ptr(5), a.i32(6),
                                            a.ptr(7), a.ptr(8), a.iptr(9), a.i32(10), a.iptr(11), a.iptr(12), a.iptr(13),
                                            a.i32(14), a.i32(15), a.i32(16), a.i32(17), a.i32(18), a.i32(19), a.i32(20),
                                            a.i32(21), a.f32(22), a.i32(23), a.i32(24), a.ptr(25), bindingStream()));
}

// attentionPlan(T, H, Hkv, D, maxContextLen) -> { splits, workspaceBytes } for attention().
napi_value AttentionPlan(napi_env env, napi_callback_info info) {
  Args a(env, info, 5, "attentionPlan");
  requireReady("attentionPlan");
  const int splits = attentionSplits(a.i32(0), a.i32(1), a.i32(2), a.i32(3), a.i32(4));
  napi_value obj;
  NAPI_CALL(napi_create_object(env, &obj));
  setNumber(env, obj, "splits", splits);
  setNumber(env, obj, "workspaceBytes", static_cast<double>(attentionWorkspaceBytes(a.i32(0), a.i32(1), a.i32(3), splits)));
  return obj;
}

napi_value AttentionHeadDimSupported(napi_env env, napi_callback_info info) {
  Args a(env, info, 1, "attentionHeadDimSupported");
  napi_value v;
  NAPI_CALL(napi_get_boolean(env, attentionHeadDimSupported(a.i32(0)), &v));
  return v;
}

napi_value Swiglu(napi_env env, napi_callback_info info) {  // (out, gate, up, n, dt)
  Args a(env, info, 5, "swiglu");
  requireReady("swiglu");
  swiglu(a.ptr(0), a.ptr(1), a.ptr(2), a.size(3), a.i32(4), bindingStream());
  return undefinedValue(env);
}

napi_value Add(napi_env env, napi_callback_info info) {  // (out, a, b, n, dt)
  Args a(env, info, 5, "add");
  requireReady("add");
  add(a.ptr(0), a.ptr(1), a.ptr(2), a.size(3), a.i32(4), bindingStream());
  return undefinedValue(env);
}

napi_value Cast(napi_env env, napi_callback_info info) {  // (out, outDt, x, xDt, n)
  Args a(env, info, 5, "cast");
  requireReady("cast");
  cast(a.ptr(0), a.i32(1), a.ptr(2), a.i32(3), a.size(4), bindingStream());
  return undefinedValue(env);
}

napi_value LogSoftmax(napi_env env, napi_callback_info info) {  // (out f32, x, S, V, dt)
  Args a(env, info, 5, "logSoftmax");
  requireReady("logSoftmax");
  logSoftmax(static_cast<float*>(a.ptr(0)), a.ptr(1), a.i32(2), a.i32(3), a.i32(4), bindingStream());
  return undefinedValue(env);
}

// (ids i32 [S], keep i32 [S] or 0, logprobs f32 [S], logits, S, V, dt, workspace)
napi_value GreedySample(napi_env env, napi_callback_info info) {
  Args a(env, info, 8, "greedySample");
  requireReady("greedySample");
  greedySample(static_cast<int*>(a.ptr(0)), static_cast<int*>(a.ptr(1)), static_cast<float*>(a.ptr(2)), a.ptr(3),
               a.i32(4), a.i32(5), a.i32(6), a.ptr(7), bindingStream());
  return undefinedValue(env);
}

napi_value GreedySampleWorkspaceBytes(napi_env env, napi_callback_info info) {  // (S, V) -> bytes
  Args a(env, info, 2, "greedySampleWorkspaceBytes");
  return numberValue(env, static_cast<double>(greedySampleWorkspaceBytes(a.i32(0), a.i32(1))));
}

}  // namespace

void registerForwardOps(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      TANDEM_FN("embedding", Embedding),
      TANDEM_FN("scatterRows", ScatterRows),
      TANDEM_FN("splitColumns", SplitColumns),
      TANDEM_FN("rmsnorm", Rmsnorm),
      TANDEM_FN("linear", Linear),
      TANDEM_FN("gemvMany", GemvMany),
      TANDEM_FN("gemvSwiglu", GemvSwiglu),
      TANDEM_FN("linearAdd", LinearAdd),
      TANDEM_FN("ropeWriteKv", RopeWriteKv),
      TANDEM_FN("rope", Rope),
      TANDEM_FN("attention", Attention),
      TANDEM_FN("ropeAttentionDecode", RopeAttentionDecode),
      TANDEM_FN("attentionPlan", AttentionPlan),
      TANDEM_FN("attentionHeadDimSupported", AttentionHeadDimSupported),
      TANDEM_FN("swiglu", Swiglu),
      TANDEM_FN("add", Add),
      TANDEM_FN("cast", Cast),
      TANDEM_FN("logSoftmax", LogSoftmax),
      TANDEM_FN("greedySample", GreedySample),
      TANDEM_FN("greedySampleWorkspaceBytes", GreedySampleWorkspaceBytes),
  };
  defineFunctions(env, exports, props, sizeof(props) / sizeof(props[0]));
}

}  // namespace tandem
