/**
 * The counter-based random numbers behind sampling, shared by every backend.
 *
 * A draw is a pure function of (seed, step): no generator state, so a sequence gets the same
 * tokens whatever else shares its batch, after preemption and recompute, and on every backend.
 *
 * Algorithm: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11;
 * the generator behind cuRAND's and PyTorch's GPU streams), with
 *   key     = (seed mod 2^32, floor(seed / 2^32) mod 2^32)   (a 64-bit two's-complement seed)
 *   counter = (step mod 2^32, floor(step / 2^32) mod 2^32, 0, 0)
 * and the uniform taken from the first output word: (word >>> 8) * 2^-24, a float in [0, 1)
 * with 24 random bits, exactly representable in f32.
 *
 * Everything is 32-bit unsigned integer arithmetic (Math.imul, >>> 0, and a 32x32 -> 64 bit
 * multiply split into 16-bit halves), so a CUDA kernel reproduces it bit for bit with
 * `__umulhi`, `a * b` on uint32 and `(x >> 8) * 0x1p-24f`. Checked against the Random123
 * known-answer vectors in test/backend/rng.test.ts.
 */

const PHILOX_M0 = 0xd2511f53;
const PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9;
const PHILOX_W1 = 0xbb67ae85;
const TWO_POW_32 = 4294967296;

/** High 32 bits of the 64-bit product of two uint32 values. */
export function mulhi32(a: number, b: number): number {
  const aHi = a >>> 16;
  const aLo = a & 0xffff;
  const bHi = b >>> 16;
  const bLo = b & 0xffff;
  const lo = aLo * bLo; // < 2^32, exact in a double
  const mid1 = aHi * bLo;
  const mid2 = aLo * bHi;
  const carry = ((lo >>> 16) + (mid1 & 0xffff) + (mid2 & 0xffff)) >>> 16;
  return (aHi * bHi + (mid1 >>> 16) + (mid2 >>> 16) + carry) >>> 0;
}

/**
 * Philox4x32 with `rounds` rounds (10 is the standard) on counter c[0..3] and key k[0..1].
 * Returns a new 4-word output; inputs are uint32 values (numbers in [0, 2^32)).
 */
export function philox4x32(counter: readonly number[], key: readonly number[], rounds = 10): Uint32Array {
  let c0 = counter[0] >>> 0;
  let c1 = counter[1] >>> 0;
  let c2 = counter[2] >>> 0;
  let c3 = counter[3] >>> 0;
  let k0 = key[0] >>> 0;
  let k1 = key[1] >>> 0;
  for (let r = 0; r < rounds; r++) {
    if (r > 0) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const hi0 = mulhi32(PHILOX_M0, c0);
    const lo0 = Math.imul(PHILOX_M0, c0) >>> 0;
    const hi1 = mulhi32(PHILOX_M1, c2);
    const lo1 = Math.imul(PHILOX_M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  return Uint32Array.of(c0, c1, c2, c3);
}

/** Low and high 32-bit words of an integer in two's complement (exact for safe integers). */
function split64(x: number): [number, number] {
  return [x >>> 0, Math.floor(x / TWO_POW_32) >>> 0];
}

/**
 * The uniform in [0, 1) for draw `step` of the stream `seed`: a multiple of 2^-24.
 * seed is any safe integer (negative ones are taken as 64-bit two's complement); step >= 0.
 */
export function uniformAt(seed: number, step: number): number {
  if (!Number.isSafeInteger(seed)) throw new Error(`rng: seed must be a safe integer, got ${seed}`);
  if (!Number.isSafeInteger(step) || step < 0) throw new Error(`rng: step must be a non-negative integer, got ${step}`);
  const [s0, s1] = split64(seed);
  const [t0, t1] = split64(step);
  const word = philox4x32([t0, t1, 0, 0], [s0, s1])[0];
  return (word >>> 8) * 5.9604644775390625e-8; // 2^-24
}
