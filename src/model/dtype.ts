/**
 * Whole-array conversions between f32 and the two 16-bit float formats checkpoints use.
 *
 * bf16 is the top half of an f32 (same exponent range), so widening is a shift and narrowing
 * is a rounding of the low 16 bits. f16 (IEEE binary16) has a 5-bit exponent, so narrowing must
 * handle overflow to inf and underflow into subnormals. Both narrowings round to nearest,
 * ties to even, like torch's `.to(torch.bfloat16)` / `.half()`.
 *
 * All functions work on bit patterns through typed-array views: no per-element allocation.
 * Pass `out` to reuse a buffer (it must have the same length as `src`).
 */

/** Widens bf16 bit patterns to f32. Exact: every bf16 value is an f32 value. */
export function bf16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLengths(src.length, out.length);
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
  return out;
}

/** Narrows f32 to bf16 bit patterns, round to nearest even; NaN stays NaN (quietened, sign kept). */
export function f32ToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLengths(src.length, out.length);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToBf16Bits(bits[i]);
  return out;
}

/** Widens IEEE half bit patterns to f32. Exact (subnormals, inf and NaN included). */
export function f16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  checkLengths(src.length, out.length);
  // Copy bit patterns, not numbers: reading an f32 NaN into a JS number may alter its payload.
  const table = f16Table();
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = table[src[i]];
  return out;
}

/** Narrows f32 to IEEE half bit patterns, round to nearest even, overflow to inf. */
export function f32ToF16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  checkLengths(src.length, out.length);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32BitsToF16Bits(bits[i]);
  return out;
}

/** One f32 bit pattern (as an unsigned 32-bit number) to a bf16 bit pattern. */
export function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) {
    // NaN: keep sign and top payload bits; if those are all zero, set the quiet bit so the
    // result does not collapse to inf. bf16 NaNs thus round-trip bit-exactly.
    const top = (x >>> 16) & 0xffff;
    return (top & 0x7f) === 0 ? top | 0x40 : top;
  }
  // Adding 0x7fff plus the lowest kept bit rounds ties to even; a carry into the exponent is
  // the correct result (up to inf for the largest finite values).
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** One f32 bit pattern (as an unsigned 32-bit number) to an IEEE half bit pattern. */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) {
    if (mant === 0) return sign | 0x7c00;
    // NaN: keep the top payload bits (so half NaNs round-trip), never collapse to inf.
    const payload = mant >>> 13;
    return sign | 0x7c00 | (payload === 0 ? 0x200 : payload);
  }
  const halfExp = exp - 127 + 15;
  if (halfExp >= 0x1f) return sign | 0x7c00;
  if (halfExp <= 0) {
    // Subnormal half: value = m * 2^-24. Below 2^-25 everything rounds to zero (2^-25 itself
    // is a tie that goes to the even value 0).
    if (halfExp < -10) return sign;
    const full = mant | 0x800000;
    const shift = 14 - halfExp;
    return sign | roundShift(full, shift);
  }
  // A carry out of the mantissa bumps the exponent, which is the correct rounding (65520 -> inf).
  return (sign | (halfExp << 10)) + roundShift(mant, 13);
}

/** value >> shift, rounded to nearest with ties to even. */
function roundShift(value: number, shift: number): number {
  const kept = value >>> shift;
  const rest = value & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && (kept & 1) === 1) ? kept + 1 : kept;
}

let f16Lookup: Uint32Array | undefined;

/** f32 bit patterns of all 65536 halves (256 KiB), built once: a lookup beats bit assembly. */
function f16Table(): Uint32Array {
  if (f16Lookup) return f16Lookup;
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) table[h] = f16BitsToF32Bits(h);
  f16Lookup = table;
  return table;
}

function f16BitsToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half: normalise so the leading 1 becomes the implicit bit of the f32.
  let e = -14;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | ((e + 127) << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

function checkLengths(srcLength: number, outLength: number): void {
  if (srcLength !== outLength) {
    throw new Error(`dtype conversion: output has ${outLength} elements, input has ${srcLength}`);
  }
}
