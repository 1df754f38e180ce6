/**
 * rope: rotary position embedding in place, NeoX / Qwen half-rotation layout
 *   q is (T, H, D), k is (T, Hkv, D), positions is (T), invFreq is (D/2).
 *
 * For pair j < D/2, elements (j, j + D/2) of every head of token t rotate by the angle
 * positions[t] * invFreq[j]:
 *   out[j]       = x[j] * cos - x[j + D/2] * sin
 *   out[j + D/2] = x[j + D/2] * cos + x[j] * sin
 * i.e. transformers' q * cos + rotate_half(q) * sin. The angle is rounded to f32 before cos/sin,
 * as transformers forms `inv_freq @ position_ids` in f32: at position 30,000 that rounding moves
 * the angle by up to ~1e-3 rad, far more than any later rounding, so matching it matters.
 *
 * ropeBackward: the gradient of a rotation is the transposed rotation, i.e. by -angle with the
 * same (f32) cos and sin; it runs in place on dq (T, H, D) and dk (T, Hkv, D) like the forward.
 */

export function ropeForward(
  q: Float32Array,
  k: Float32Array,
  positions: Int32Array,
  invFreq: Float32Array,
  cos: Float64Array,
  sin: Float64Array,
  T: number,
  H: number,
  Hkv: number,
  D: number,
): void {
  rotate(q, k, positions, invFreq, cos, sin, T, H, Hkv, D, 1);
}

export function ropeBackward(
  dq: Float32Array,
  dk: Float32Array,
  positions: Int32Array,
  invFreq: Float32Array,
  cos: Float64Array,
  sin: Float64Array,
  T: number,
  H: number,
  Hkv: number,
  D: number,
): void {
  rotate(dq, dk, positions, invFreq, cos, sin, T, H, Hkv, D, -1);
}

/** Rotate every head by `sign` times its angles (sign -1 negates sin exactly: the transpose). */
function rotate(
  q: Float32Array,
  k: Float32Array,
  positions: Int32Array,
  invFreq: Float32Array,
  cos: Float64Array,
  sin: Float64Array,
  T: number,
  H: number,
  Hkv: number,
  D: number,
  sign: 1 | -1,
): void {
  const half = D >> 1;
  for (let t = 0; t < T; t++) {
    const pos = positions[t];
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(Math.fround(pos) * invFreq[j]);
      // cos/sin of the f32 angle, rounded to f32 like torch's f32 cos/sin.
      cos[j] = Math.fround(Math.cos(angle));
      sin[j] = sign * Math.fround(Math.sin(angle));
    }
    rotateHeads(q, t * H * D, H, D, cos, sin);
    rotateHeads(k, t * Hkv * D, Hkv, D, cos, sin);
  }
}

function rotateHeads(x: Float32Array, base: number, heads: number, D: number, cos: Float64Array, sin: Float64Array): void {
  const half = D >> 1;
  for (let h = 0; h < heads; h++) {
    const o = base + h * D;
    for (let j = 0; j < half; j++) {
      const a = x[o + j];
      const b = x[o + j + half];
      x[o + j] = a * cos[j] - b * sin[j];
      x[o + j + half] = b * cos[j] + a * sin[j];
    }
  }
}
