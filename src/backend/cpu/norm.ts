/**
 * rmsnorm: y = x / sqrt(mean(x^2) + eps) * w, optionally on sum = x + residual
 *   x, residual, sum and y are (R, C); w is (C).
 *
 * As transformers' Qwen2RMSNorm: the mean of squares is taken in (at least) f32 and the
 * normalised row is multiplied by the weight afterwards. The fused form serves the pre-norm
 * block: `sum` is the new residual stream and `y` the next sub-block's input.
 *
 * rmsnormBackward: dx (R, C) from dy and x (R, C), w (C) frozen. With rstd = 1 / sqrt(mean(x^2)
 * + eps) and g = w * dy: dx = rstd * g - x * rstd^3 * mean(g * x). Per row in double precision,
 * one rounding on store. (The fused add + norm needs no backward of its own: d(sum) is dx plus
 * the residual stream's gradient, an axpy.)
 */

export function rmsnormForward(
  y: Float32Array,
  x: Float32Array,
  w: Float32Array,
  eps: number,
  R: number,
  C: number,
): void {
  for (let r = 0; r < R; r++) normRow(y, x, w, eps, r * C, C);
}

export function addRmsnormForward(
  y: Float32Array,
  sum: Float32Array,
  x: Float32Array,
  residual: Float32Array,
  w: Float32Array,
  eps: number,
  R: number,
  C: number,
): void {
  const n = R * C;
  // The sum is rounded to f32 before it is normalised, as the unfused x + residual would be.
  for (let i = 0; i < n; i++) sum[i] = x[i] + residual[i];
  for (let r = 0; r < R; r++) normRow(y, sum, w, eps, r * C, C);
}

function normRow(y: Float32Array, x: Float32Array, w: Float32Array, eps: number, o: number, C: number): void {
  let ss = 0;
  for (let c = 0; c < C; c++) {
    const v = x[o + c];
    ss += v * v;
  }
  const rstd = 1 / Math.sqrt(ss / C + eps);
  for (let c = 0; c < C; c++) y[o + c] = w[c] * (x[o + c] * rstd);
}

export function rmsnormBackward(
  dx: Float32Array,
  dy: Float32Array,
  x: Float32Array,
  w: Float32Array,
  eps: number,
  R: number,
  C: number,
): void {
  for (let r = 0; r < R; r++) {
    const o = r * C;
    let ss = 0;
    let gx = 0;
    for (let c = 0; c < C; c++) {
      const v = x[o + c];
      ss += v * v;
      gx += w[c] * dy[o + c] * v;
    }
    const rstd = 1 / Math.sqrt(ss / C + eps);
    const k = (rstd * rstd * rstd * gx) / C;
    for (let c = 0; c < C; c++) dx[o + c] = rstd * w[c] * dy[o + c] - x[o + c] * k;
  }
}
