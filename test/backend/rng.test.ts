import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mulhi32, philox4x32, uniformAt } from '../../src/backend/rng.ts';

describe('rng: Philox4x32-10 counter-based uniforms', () => {
  it('matches the Random123 known-answer vectors', () => {
    // From Random123's kat_vectors: counter (4 words), key (2 words) -> output (4 words).
    const kat: [number[], number[], number[]][] = [
      [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
      [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
      [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]],
    ];
    for (const [ctr, key, want] of kat) assert.deepEqual(Array.from(philox4x32(ctr, key)), want);
  });

  it('mulhi32 is the high word of the exact 64-bit product', () => {
    const pairs = [[0, 0], [1, 1], [0xffffffff, 0xffffffff], [0xd2511f53, 0x12345678], [0xcd9e8d57, 0x80000000], [65536, 65536]];
    for (const [a, b] of pairs) assert.equal(mulhi32(a, b), Number((BigInt(a) * BigInt(b)) >> 32n), `${a} * ${b}`);
  });

  it('uniformAt is the first Philox word of (counter = step, key = seed), top 24 bits', () => {
    assert.equal(uniformAt(0, 0), (0x6627e8d5 >>> 8) / 2 ** 24);
    const seed = 0x123456789; // above 2^32: the high word goes to key[1]
    const word = philox4x32([5, 0, 0, 0], [seed >>> 0, Math.floor(seed / 2 ** 32)])[0];
    assert.equal(uniformAt(seed, 5), (word >>> 8) / 2 ** 24);
    // Negative seeds are 64-bit two's complement: -1 is all ones.
    assert.equal(uniformAt(-1, 0), (philox4x32([0, 0, 0, 0], [0xffffffff, 0xffffffff])[0] >>> 8) / 2 ** 24);
  });

  it('is a pure function of (seed, step), in [0, 1) on a 2^-24 grid', () => {
    for (let i = 0; i < 1000; i++) {
      const u = uniformAt(i * 7919, i);
      assert.equal(u, uniformAt(i * 7919, i));
      assert.ok(u >= 0 && u < 1);
      assert.ok(Number.isInteger(u * 2 ** 24));
      assert.equal(Math.fround(u), u, 'exact in f32, so a CUDA kernel gets the same float');
    }
  });

  it('looks uniform over seeds and over steps (chi-square, 16 bins)', () => {
    const chi2 = (draw: (i: number) => number, n: number): number => {
      const bins = new Array(16).fill(0);
      for (let i = 0; i < n; i++) bins[Math.floor(draw(i) * 16)]++;
      return bins.reduce((s, c) => s + (c - n / 16) ** 2 / (n / 16), 0);
    };
    // 15 degrees of freedom: P(chi2 > 37.7) = 0.001. Deterministic inputs, so no flakes.
    assert.ok(chi2((i) => uniformAt(i, 0), 20000) < 37.7);
    assert.ok(chi2((i) => uniformAt(42, i), 20000) < 37.7);
    assert.ok(chi2((i) => uniformAt(i, i), 20000) < 37.7);
  });

  it('neighbouring seeds and steps are uncorrelated', () => {
    let sum = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) sum += (uniformAt(i, 0) - 0.5) * (uniformAt(i + 1, 0) - 0.5) + (uniformAt(3, i) - 0.5) * (uniformAt(3, i + 1) - 0.5);
    // Each product has sd 1/12; the mean of 2n of them has sd ~0.0004.
    assert.ok(Math.abs(sum / (2 * n)) < 0.002);
  });

  it('rejects seeds and steps that are not safe integers', () => {
    assert.throws(() => uniformAt(1.5, 0), /seed/);
    assert.throws(() => uniformAt(2 ** 60, 0), /seed/);
    assert.throws(() => uniformAt(0, -1), /step/);
    assert.throws(() => uniformAt(0, NaN), /step/);
  });
});
