/**
 * The optimizer's two tensor ops.
 *   adamw:       param, grad, m, v are (n) f32; one torch.optim.AdamW step in place.
 *   sumSquares:  x is (n) f32; sum of x^2 in double, for the global gradient norm.
 *
 * adamw repeats src/train/optimizer.ts's adamwStep operation for operation (the same
 * double-precision expressions in the same order, m and v rounded to f32 when stored and read
 * back, as the host reference reads its Float32Arrays), so with gradScale 1 both give the same
 * floats. A gradScale other than 1 first forms g = fround(grad * gradScale), which is what the
 * host does when clipGradNorm scales its f32 grads in place before adamwStep: the fused op and
 * that pair agree bit for bit too.
 */
import type { AdamWStep } from '../backend.ts';

export function adamwUpdate(param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, n: number, h: AdamWStep): void {
  const { lr, beta1, beta2, eps, weightDecay, step, gradScale } = h;
  const bc1 = 1 - beta1 ** step;
  const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
  const decay = 1 - lr * weightDecay;
  const stepSize = lr / bc1;
  for (let i = 0; i < n; i++) {
    const g = gradScale === 1 ? grad[i] : Math.fround(grad[i] * gradScale);
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    param[i] = param[i] * decay - (stepSize * m[i]) / (Math.sqrt(v[i]) / bc2Sqrt + eps);
  }
}

/** Sum of squares over i ascending; NaN if any element is NaN, Infinity if any is infinite. */
export function sumSquares(x: Float32Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += x[i] * x[i];
  return s;
}
