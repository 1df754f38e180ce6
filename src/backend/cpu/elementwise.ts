/**
 * Elementwise ops: every tensor of one call has the same element count n.
 *   swiglu: gate, up, out are (T, F): out = silu(gate) * up, silu(g) = g / (1 + exp(-g))
 *   add:    a, b, out are any shape:  out = a + b
 *   axpy:   y, x any shape:            y += alpha * x (in place; sums in double, one rounding)
 *   swigluBackward: dy, gate, up, dGate, dUp are (.., F), with s = sigmoid(gate):
 *     dUp = dy * silu(gate),  dGate = dy * up * s * (1 + gate * (1 - s))
 */

export function swigluForward(out: Float32Array, gate: Float32Array, up: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    // g / (1 + exp(-g)): exp overflows to inf for very negative g, giving -0 / 0 -> the right limit 0.
    out[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
}

export function addForward(out: Float32Array, a: Float32Array, b: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) out[i] = a[i] + b[i];
}

export function axpyForward(y: Float32Array, x: Float32Array, alpha: number, n: number): void {
  for (let i = 0; i < n; i++) y[i] += alpha * x[i];
}

export function swigluBackward(
  dGate: Float32Array,
  dUp: Float32Array,
  dy: Float32Array,
  gate: Float32Array,
  up: Float32Array,
  n: number,
): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    // exp(-g) overflows to inf for g < -709: s = 0 and both gradients go to their limit 0.
    const s = 1 / (1 + Math.exp(-g));
    dUp[i] = dy[i] * g * s;
    dGate[i] = dy[i] * up[i] * s * (1 + g * (1 - s));
  }
}
