/*
The rotary embedding's per-pair arithmetic, shared by rope.cu's kernels and the decode attention
that applies rope itself (attention-decode-tiled.cuh), so every path rounds exactly alike.
*/
#pragma once

#include "common.cuh"

namespace tandem {

// cos and sin of pair j's angle at `position`: the angle position * invFreq[j] rounded to f32 (as
// transformers forms inv_freq @ position_ids in f32), its cos / sin taken in double precision and
// rounded to f32 (positions reach tens of thousands of radians, where single-precision range
// reduction would lose digits).
__device__ __forceinline__ void ropeCosSin(int position, const void* invFreq, int freqDt, int j, float* c, float* s) {
  const float angle = __fmul_rn(static_cast<float>(position), loadAny(invFreq, freqDt, j));
  double sd, cd;
  sincos(static_cast<double>(angle), &sd, &cd);
  *c = static_cast<float>(cd);
  *s = static_cast<float>(sd);
}

// The pair (a, b) = (x[j], x[j + D/2]) rotated: (a c - b s, b c + a s), each product and sum
// rounded on its own (no FMA contraction), so a kernel that rotates in registers and one that
// rotates in place get the same bits.
__device__ __forceinline__ void ropeRotate(float a, float b, float c, float s, float* ra, float* rb) {
  *ra = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
  *rb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

}  // namespace tandem
