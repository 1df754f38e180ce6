/** Elementwise closeness with a tolerance, for the backend conformance suites. */
import assert from 'node:assert/strict';

export interface Tolerance {
  atol: number;
  rtol: number;
}

/** Assert |got - ref| <= atol + rtol * |ref| everywhere; on failure report the worst element. */
export function expectClose(what: string, got: ArrayLike<number>, ref: ArrayLike<number>, tol: Tolerance): void {
  assert.equal(got.length, ref.length, `${what}: got ${got.length} elements, expected ${ref.length}`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < ref.length; i++) {
    const g = got[i];
    const r = ref[i];
    let excess = 0;
    if (g !== r && !(Number.isNaN(g) && Number.isNaN(r))) {
      excess = Math.abs(g - r) - (tol.atol + tol.rtol * Math.abs(r));
      if (Number.isNaN(excess)) excess = Infinity; // a NaN or an infinity on one side only
    }
    if (excess > worstExcess) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    assert.fail(
      `${what}: element ${worst} of ${ref.length} is ${got[worst]}, reference ${ref[worst]} (|diff| ${Math.abs(got[worst] - ref[worst])}, allowed ${tol.atol} + ${tol.rtol} * |ref|)`,
    );
  }
}
