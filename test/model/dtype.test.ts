import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/model/dtype.ts';

/** f32 values from bit patterns, and back, without going through JS numbers. */
function f32FromBits(bits: number[] | Uint32Array): Float32Array {
  return new Float32Array(Uint32Array.from(bits).buffer);
}
function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}
function allPatterns(): Uint16Array {
  return Uint16Array.from({ length: 65536 }, (_, i) => i);
}
function hex(n: number): string {
  return '0x' + n.toString(16);
}

/** Deterministic pseudo-random 32-bit patterns (xorshift32). */
function randomBits(count: number, seed = 0x9e3779b9): Uint32Array {
  const out = new Uint32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s;
  }
  return out;
}

/** Half value of a bit pattern, computed from the IEEE definition in float64. */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  if (exp === 0) return sign * mant * 2 ** -24;
  return sign * 2 ** (exp - 15) * (1 + mant / 1024);
}

/** Nearest half by search over all finite positive halves (monotonic in their bits), ties to even. */
function referenceF16(x: number): number {
  if (Number.isNaN(x)) return -1;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00; // 65504 + half an ulp (16) rounds to even, i.e. to inf
  let lo = 0;
  let hi = 0x7bff;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (halfValue(mid) <= a) lo = mid;
    else hi = mid;
  }
  const dLo = a - halfValue(lo);
  const dHi = halfValue(hi) - a;
  const pick = dLo < dHi ? lo : dHi < dLo ? hi : lo % 2 === 0 ? lo : hi;
  return sign | pick;
}

/** Nearest bf16 by comparing the two truncation candidates in float64, ties to even. */
function referenceBf16(bits: number): number {
  const lo = bits >>> 16;
  const x = f32FromBits([bits])[0];
  const vLo = f32FromBits([(lo << 16) >>> 0])[0];
  const vHi = (lo & 0x7fff) === 0x7f7f ? Math.sign(x) * 2 ** 128 : f32FromBits([((lo + 1) << 16) >>> 0])[0];
  const dLo = Math.abs(x - vLo);
  const dHi = Math.abs(vHi - x);
  return dLo < dHi ? lo : dHi < dLo ? (lo + 1) & 0xffff : lo % 2 === 0 ? lo : (lo + 1) & 0xffff;
}

describe('bf16', () => {
  it('all 65536 bit patterns round-trip through f32 exactly (NaNs included)', () => {
    const all = allPatterns();
    const back = f32ToBf16(bf16ToF32(all));
    for (let i = 0; i < 65536; i++) assert.equal(back[i], i, `pattern ${hex(i)} came back as ${hex(back[i])}`);
  });

  it('widening is the upper half of the f32', () => {
    const bits = bitsOf(bf16ToF32(Uint16Array.of(0x3f80, 0xc000, 0x7f80, 0x0001)));
    assert.deepEqual([...bits], [0x3f800000, 0xc0000000, 0x7f800000, 0x00010000]);
  });

  it('rounds edge values to nearest even', () => {
    const cases: [number, number][] = [
      [0x3f800000, 0x3f80], // 1
      [0x3f808000, 0x3f80], // tie, even below
      [0x3f818000, 0x3f82], // tie, odd below: up
      [0x3f808001, 0x3f81], // just above the tie
      [0x3f807fff, 0x3f80], // just below the tie
      [0x7f7fffff, 0x7f80], // largest f32 rounds to inf
      [0x7f7f7fff, 0x7f7f], // stays finite
      [0xff7fffff, 0xff80], // to -inf
      [0x80000000, 0x8000], // -0
      [0x7f800000, 0x7f80], // inf
      [0xff800000, 0xff80], // -inf
      [0x00000001, 0x0000], // tiny subnormal to 0
      [0x00008000, 0x0000], // subnormal tie to even 0
      [0x00018000, 0x0002], // subnormal tie up to even
      [0x007fffff, 0x0080], // largest subnormal rounds up to the smallest normal
    ];
    const out = f32ToBf16(f32FromBits(cases.map((c) => c[0])));
    cases.forEach(([input, want], i) => assert.equal(out[i], want, `${hex(input)} -> ${hex(out[i])}, want ${hex(want)}`));
  });

  it('keeps NaN a NaN, including payloads only in the dropped bits', () => {
    const out = f32ToBf16(f32FromBits([0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fffffff]));
    for (const h of out) assert.ok((h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0, `${hex(h)} is not a bf16 NaN`);
    assert.equal(out[1] & 0x8000, 0x8000, 'sign of NaN kept');
  });

  it('matches a float64 nearest-even reference on 200k random f32s', () => {
    const bits = randomBits(200_000);
    const out = f32ToBf16(f32FromBits(bits));
    for (let i = 0; i < bits.length; i++) {
      if ((bits[i] & 0x7fffffff) > 0x7f800000) continue;
      const want = referenceBf16(bits[i]);
      assert.equal(out[i], want, `${hex(bits[i])} -> ${hex(out[i])}, want ${hex(want)}`);
    }
  });
});

describe('f16', () => {
  it('widens all 65536 bit patterns to the IEEE value', () => {
    const wide = f16ToF32(allPatterns());
    for (let h = 0; h < 65536; h++) {
      const want = halfValue(h);
      if (Number.isNaN(want)) assert.ok(Number.isNaN(wide[h]), `${hex(h)} should be NaN`);
      else assert.ok(Object.is(wide[h], want), `${hex(h)} -> ${wide[h]}, want ${want}`);
    }
  });

  it('all 65536 bit patterns round-trip through f32 exactly (NaNs included)', () => {
    const back = f32ToF16(f16ToF32(allPatterns()));
    for (let i = 0; i < 65536; i++) assert.equal(back[i], i, `pattern ${hex(i)} came back as ${hex(back[i])}`);
  });

  it('rounds edge values: overflow, subnormals, ties, signed zero, inf', () => {
    const cases: [number, number][] = [
      [65504, 0x7bff], // largest half
      [65519.99, 0x7bff], // below the tie
      [65520, 0x7c00], // tie rounds to even = inf
      [1e6, 0x7c00],
      [-1e6, 0xfc00],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // tie between 0 and 2^-24: even is 0
      [2 ** -25 * 1.0000001, 0x0001],
      [3 * 2 ** -25, 0x0002], // tie between 1 and 2 ulps: even is 2
      [2 ** -26, 0x0000],
      [-0, 0x8000],
      [0, 0x0000],
      [1, 0x3c00],
      [1 + 2 ** -11, 0x3c00], // tie, even below
      [1 + 3 * 2 ** -11, 0x3c02], // tie, odd below: up
      [1 / 3, 0x3555],
      [(2 ** -14) * (1 - 2 ** -11), 0x0400], // rounds up from subnormal range into normal
    ];
    const out = f32ToF16(Float32Array.from(cases.map((c) => c[0])));
    cases.forEach(([input, want], i) => assert.equal(out[i], want, `${input} -> ${hex(out[i])}, want ${hex(want)}`));
  });

  it('keeps NaN a NaN with its sign', () => {
    const out = f32ToF16(f32FromBits([0x7fc00000, 0xffc00000, 0x7f800001, 0x7fffffff]));
    for (const h of out) assert.ok((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0, `${hex(h)} is not a half NaN`);
    assert.equal(out[1] & 0x8000, 0x8000);
  });

  it('matches a search-based nearest-even reference on 200k random f32s', () => {
    // Spread exponents over the half range so subnormals, normals and overflow all occur.
    const raw = randomBits(200_000, 12345);
    const bits = raw.map((b) => ((b & 0x807fffff) | (((((b >>> 23) & 0xff) % 48) + 96) << 23)) >>> 0);
    const values = f32FromBits(bits);
    const out = f32ToF16(values);
    for (let i = 0; i < values.length; i++) {
      const want = referenceF16(values[i]);
      assert.equal(out[i], want, `${values[i]} (${hex(bits[i])}) -> ${hex(out[i])}, want ${hex(want)}`);
    }
  });
});

describe('conversion arguments', () => {
  it('fills a caller-provided output and rejects a wrong length', () => {
    const out = new Float32Array(2);
    assert.equal(bf16ToF32(Uint16Array.of(0x3f80, 0x4000), out), out);
    assert.deepEqual([...out], [1, 2]);
    assert.throws(() => f32ToF16(new Float32Array(3), new Uint16Array(2)), /output has 2 elements, input has 3/);
  });

  it('works on subarray views at an offset', () => {
    const base = Float32Array.of(9, 1.5, -2.25, 9);
    const view = base.subarray(1, 3);
    assert.deepEqual([...bf16ToF32(f32ToBf16(view))], [1.5, -2.25]);
    assert.deepEqual([...f16ToF32(f32ToF16(view))], [1.5, -2.25]);
  });
});
