/*
Node-API launchers of the training kernels (ops-train.h): each reads its arguments, checks init,
and queues the kernel on the shared stream. Registered by registerTrainingOps(). Argument orders
are the ones src/backend/cuda/native.ts declares; shapes and dtypes are checked on the TS side
(src/backend/cuda/training-ops.ts).
*/
#include "binding.h"
#include "ops-train.h"

namespace tandem {
namespace {

napi_value Axpy(napi_env env, napi_callback_info info) {  // (y, yDt, x, xDt, alpha, n)
  Args a(env, info, 6, "axpy");
  requireReady("axpy");
  axpy(a.ptr(0), a.i32(1), a.ptr(2), a.i32(3), a.f32(4), a.size(5), bindingStream());
  return undefinedValue(env);
}

napi_value LinearBackwardInput(napi_env env, napi_callback_info info) {  // (dx, dxDt, dy, w, abDt, T, K, N)
  Args a(env, info, 8, "linearBackwardInput");
  requireReady("linearBackwardInput");
  linearBackwardInput(a.ptr(0), a.i32(1), a.ptr(2), a.ptr(3), a.i32(4), a.i32(5), a.i32(6), a.i32(7), bindingStream());
  return undefinedValue(env);
}

napi_value LinearBackwardWeight(napi_env env, napi_callback_info info) {  // (dw, dwDt, dy, x, abDt, T, K, N, alpha)
  Args a(env, info, 9, "linearBackwardWeight");
  requireReady("linearBackwardWeight");
  linearBackwardWeight(a.ptr(0), a.i32(1), a.ptr(2), a.ptr(3), a.i32(4), a.i32(5), a.i32(6), a.i32(7), a.f32(8),
                       bindingStream());
  return undefinedValue(env);
}

napi_value RmsnormBackward(napi_env env, napi_callback_info info) {  // (dx, dy, gDt, x, xDt, w, wDt, eps, R, C)
  Args a(env, info, 10, "rmsnormBackward");
  requireReady("rmsnormBackward");
  rmsnormBackward(a.ptr(0), a.ptr(1), a.i32(2), a.ptr(3), a.i32(4), a.ptr(5), a.i32(6), a.f32(7), a.i32(8), a.i32(9),
                  bindingStream());
  return undefinedValue(env);
}

napi_value RopeBackward(napi_env env, napi_callback_info info) {  // (dq, dk, positions, invFreq, freqDt, T, H, Hkv, D, dt)
  Args a(env, info, 10, "ropeBackward");
  requireReady("ropeBackward");
  ropeBackward(a.ptr(0), a.ptr(1), a.iptr(2), a.ptr(3), a.i32(4), a.i32(5), a.i32(6), a.i32(7), a.i32(8), a.i32(9),
               bindingStream());
  return undefinedValue(env);
}

napi_value SwigluBackward(napi_env env, napi_callback_info info) {  // (dGate, dUp, dy, gDt, gate, up, xDt, n)
  Args a(env, info, 8, "swigluBackward");
  requireReady("swigluBackward");
  swigluBackward(a.ptr(0), a.ptr(1), a.ptr(2), a.i32(3), a.ptr(4), a.ptr(5), a.i32(6), a.size(7), bindingStream());
  return undefinedValue(env);
}

// (out, lse, q, k, v, cuSeqlens, T, S, H, Hkv, D, scale, dt)
napi_value AttentionPacked(napi_env env, napi_callback_info info) {
  Args a(env, info, 13, "attentionPacked");
  requireReady("attentionPacked");
  attentionPacked(a.ptr(0), static_cast<float*>(a.ptr(1)), a.ptr(2), a.ptr(3), a.ptr(4), a.iptr(5), a.i32(6), a.i32(7),
                  a.i32(8), a.i32(9), a.i32(10), a.f32(11), a.i32(12), bindingStream());
  return undefinedValue(env);
}

// (dq, dk, dv, delta, dout, gDt, q, k, v, out, lse, cuSeqlens, T, S, H, Hkv, D, scale, dt)
napi_value AttentionPackedBackward(napi_env env, napi_callback_info info) {
  Args a(env, info, 19, "attentionPackedBackward");
  requireReady("attentionPackedBackward");
  attentionPackedBackward(a.ptr(0), a.ptr(1), a.ptr(2), static_cast<float*>(a.ptr(3)), a.ptr(4), a.i32(5), a.ptr(6),
                          a.ptr(7), a.ptr(8), a.ptr(9), static_cast<const float*>(a.ptr(10)), a.iptr(11), a.i32(12),
                          a.i32(13), a.i32(14), a.i32(15), a.i32(16), a.f32(17), a.i32(18), bindingStream());
  return undefinedValue(env);
}

napi_value AttentionPackedHeadDimSupported(napi_env env, napi_callback_info info) {
  Args a(env, info, 1, "attentionPackedHeadDimSupported");
  napi_value v;
  NAPI_CALL(napi_get_boolean(env, attentionPackedHeadDimSupported(a.i32(0)), &v));
  return v;
}

napi_value TokenLogprobs(napi_env env, napi_callback_info info) {  // (out f32, logits, targets, temperature, R, V, dt)
  Args a(env, info, 7, "tokenLogprobs");
  requireReady("tokenLogprobs");
  tokenLogprobs(static_cast<float*>(a.ptr(0)), a.ptr(1), a.iptr(2), a.f32(3), a.i32(4), a.i32(5), a.i32(6),
                bindingStream());
  return undefinedValue(env);
}

// (dlogits, logits, targets, temperature, dlogp, dlogpDt, R, V, dt)
napi_value TokenLogprobsBackward(napi_env env, napi_callback_info info) {
  Args a(env, info, 9, "tokenLogprobsBackward");
  requireReady("tokenLogprobsBackward");
  tokenLogprobsBackward(a.ptr(0), a.ptr(1), a.iptr(2), a.f32(3), a.ptr(4), a.i32(5), a.i32(6), a.i32(7), a.i32(8),
                        bindingStream());
  return undefinedValue(env);
}

napi_value ScatterAddRows(napi_env env, napi_callback_info info) {  // (out, src, idx, R, T, C, dt, work)
  Args a(env, info, 8, "scatterAddRows");
  requireReady("scatterAddRows");
  scatterAddRows(a.ptr(0), a.ptr(1), a.iptr(2), a.i32(3), a.i32(4), a.i32(5), a.i32(6), static_cast<int*>(a.ptr(7)),
                 bindingStream());
  return undefinedValue(env);
}

napi_value SumSquares(napi_env env, napi_callback_info info) {  // (out f32, x, n, dt, partials)
  Args a(env, info, 5, "sumSquares");
  requireReady("sumSquares");
  sumSquares(static_cast<float*>(a.ptr(0)), a.ptr(1), a.size(2), a.i32(3), static_cast<double*>(a.ptr(4)),
             bindingStream());
  return undefinedValue(env);
}

// (param, grad, m, v, n, beta1, beta2, eps, decay, stepSize, bc2Sqrt, gradScale): the step's
// constants come from the host in double (training-ops.ts), as optimizer.ts forms them.
napi_value Adamw(napi_env env, napi_callback_info info) {
  Args a(env, info, 12, "adamw");
  requireReady("adamw");
  const AdamWArgs h{a.num(5), a.num(6), a.num(7), a.num(8), a.num(9), a.num(10), a.num(11)};
  adamw(static_cast<float*>(a.ptr(0)), static_cast<const float*>(a.ptr(1)), static_cast<float*>(a.ptr(2)),
        static_cast<float*>(a.ptr(3)), a.size(4), h, bindingStream());
  return undefinedValue(env);
}

napi_value SumSquaresPartials(napi_env env, napi_callback_info) { return numberValue(env, kSumSquaresPartials); }

}  // namespace

void registerTrainingOps(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      TANDEM_FN("axpy", Axpy),
      TANDEM_FN("linearBackwardInput", LinearBackwardInput),
      TANDEM_FN("linearBackwardWeight", LinearBackwardWeight),
      TANDEM_FN("rmsnormBackward", RmsnormBackward),
      TANDEM_FN("ropeBackward", RopeBackward),
      TANDEM_FN("swigluBackward", SwigluBackward),
      TANDEM_FN("attentionPacked", AttentionPacked),
      TANDEM_FN("attentionPackedBackward", AttentionPackedBackward),
      TANDEM_FN("attentionPackedHeadDimSupported", AttentionPackedHeadDimSupported),
      TANDEM_FN("tokenLogprobs", TokenLogprobs),
      TANDEM_FN("tokenLogprobsBackward", TokenLogprobsBackward),
      TANDEM_FN("scatterAddRows", ScatterAddRows),
      TANDEM_FN("sumSquares", SumSquares),
      TANDEM_FN("sumSquaresPartials", SumSquaresPartials),
      TANDEM_FN("adamw", Adamw),
  };
  defineFunctions(env, exports, props, sizeof(props) / sizeof(props[0]));
}

}  // namespace tandem
