/*
Decode attention for bf16 caches with D 64 or 128 and up to 8 query heads per KV head (Qwen2.5,
Llama GQA): one block of 4 warps per (query row, KV head, context split), as the grouped kernel
(attention-decode.cuh), with the work laid out for a short dependency chain and deep loads:

- K and V stream through shared memory in tiles of 32 keys, double-buffered with cp.async: the
  next tile's 16-byte copies are in flight while the current one is used. Keys past the chunk or
  in a block outside the cache are zero-filled and masked.
- Scores: lane l of every warp owns key l of the tile; warp w owns query heads w and w + 4 (HPW =
  2; one head when G <= 4), so a score is one thread's dot product over D (q in shared memory,
  read as broadcasts): no per-key shuffle reductions. Rows are padded by 8 elements so the
  16-byte reads of 8 consecutive lanes hit distinct banks.
- Softmax: per head, one warp max and one warp sum per tile (online: m, l, acc rescaled).
- P.V: lane l accumulates dims [l*VEC, (l+1)*VEC) of its heads' outputs; each key's weight is
  broadcast with a shuffle.
- Each warp ends with its heads complete: no cross-warp merge. With one used split (the chunk
  covers the context) the block writes the output; otherwise its (m, l, acc) go to `partial`,
  and mergeSplitsKernel combines the used splits.

Same arguments, masking and split semantics as groupedDecodeKernel.
*/
#pragma once

#include <cstdint>

#include "attention-decode.cuh"
#include "common.cuh"
#include "pdl.cuh"

namespace tandem {

// 16 bytes global -> shared, asynchronously; zero-filled when !valid.
__device__ __forceinline__ void cpAsync16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;" ::); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

constexpr int kTiledWarps = 4;
constexpr int kTiledKeys = 32;

template <int D, int HPW>
__global__ void __launch_bounds__(kTiledWarps * 32)
    tiledDecodeKernel(__nv_bfloat16* out, float* partial, const __nv_bfloat16* q, const __nv_bfloat16* kPool,
                      const __nv_bfloat16* vPool, const int* cuSeqlensQ, const int* contextLens, const int* blockTables,
                      int S, int H, int Hkv, int blockSize, int maxBlocks, int numBlocks, float scale, int splits,
                      int skipMulti) {
  constexpr int VEC = D / 32;    // output dims per lane
  constexpr int PACKS = D / 8;   // 16-byte packs per row
  constexpr int ROW = D + 8;     // padded shared row, in elements
  constexpr int HEADS = kTiledWarps * HPW;
  __shared__ __align__(16) __nv_bfloat16 kS[2][kTiledKeys][ROW];
  __shared__ __align__(16) __nv_bfloat16 vS[2][kTiledKeys][ROW];
  __shared__ __align__(16) float qS[HEADS][D];
  pdlLaunchDependents();
  pdlWait();
  const int t = blockIdx.x;
  const int kvHead = blockIdx.y;
  const int split = blockIdx.z;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  const int s = sequenceOfRow(cuSeqlensQ, S, t);
  if (skipMulti && cuSeqlensQ[s + 1] - cuSeqlensQ[s] > 1) return;
  const int keys = rowKeys(cuSeqlensQ, contextLens, s, t);
  const int G = H / Hkv;
  const int chunk = splitChunk(keys, splits);
  const int kBegin = split * chunk;
  if (split > 0 && kBegin >= keys) return;  // (block-uniform) past the context: the merge skips it
  const int kEnd = min(keys, kBegin + chunk);
  const int used = usedSplits(keys, splits);
  const int* table = blockTables + static_cast<size_t>(s) * maxBlocks;
  const size_t rowStride = static_cast<size_t>(Hkv) * D;
  const size_t headOffset = static_cast<size_t>(kvHead) * D;

  for (int i = threadIdx.x; i < HEADS * PACKS; i += kTiledWarps * 32) {
    const int g = i / PACKS;
    const int c = (i % PACKS) * 8;
    float v[8];
    if (g < G) loadFloats<8>(q + (static_cast<size_t>(t) * H + kvHead * G + g) * D + c, v);
#pragma unroll
    for (int e = 0; e < 8; e++) qS[g][c + e] = g < G ? v[e] * scale : 0.0f;
  }
  // Position p's row of this KV head, or -1: past the chunk or in a block outside the cache.
  auto rowOf = [&](int p) -> long long {
    if (p >= kEnd) return -1;
    const int block = table[p / blockSize];
    if (block < 0 || block >= numBlocks) return -1;
    return static_cast<long long>((static_cast<size_t>(block) * blockSize + p % blockSize) * rowStride + headOffset);
  };
  auto issue = [&](int buf, int p0) {
    for (int i = threadIdx.x; i < kTiledKeys * PACKS; i += kTiledWarps * 32) {
      const int key = i / PACKS;
      const int c = (i % PACKS) * 8;
      const long long row = rowOf(p0 + key);
      const size_t at = row < 0 ? 0 : static_cast<size_t>(row) + c;
      cpAsync16(&kS[buf][key][c], kPool + at, row >= 0);
      cpAsync16(&vS[buf][key][c], vPool + at, row >= 0);
    }
    cpAsyncCommit();
  };

  float m[HPW];
  float l[HPW];
  float acc[HPW][VEC];
#pragma unroll
  for (int h = 0; h < HPW; h++) {
    m[h] = -INFINITY;
    l[h] = 0.0f;
#pragma unroll
    for (int e = 0; e < VEC; e++) acc[h][e] = 0.0f;
  }
  const int tiles = kEnd > kBegin ? CEIL_DIV(kEnd - kBegin, kTiledKeys) : 0;
  if (tiles > 0) issue(0, kBegin);
  for (int i = 0; i < tiles; i++) {
    const int buf = i & 1;
    if (i + 1 < tiles) {
      issue(buf ^ 1, kBegin + (i + 1) * kTiledKeys);
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();  // the tile (and on the first pass qS) is visible to every warp
    const bool keyOk = rowOf(kBegin + i * kTiledKeys + lane) >= 0;
    float pr[HPW];
#pragma unroll
    for (int h = 0; h < HPW; h++) {
      const int g = warp + h * kTiledWarps;
      float score = -INFINITY;
      if (g < G && keyOk) {
        float dot = 0.0f;
#pragma unroll
        for (int c = 0; c < D; c += 8) {
          float kf[8];
          loadFloats<8>(&kS[buf][lane][c], kf);
#pragma unroll
          for (int e = 0; e < 8; e++) dot = fmaf(qS[g][c + e], kf[e], dot);
        }
        score = dot;
      }
      const float mNew = fmaxf(m[h], warpMax(score));
      if (mNew == -INFINITY) {  // (warp-uniform) nothing readable yet for this head
        pr[h] = 0.0f;
        continue;
      }
      pr[h] = score == -INFINITY ? 0.0f : __expf(score - mNew);
      const float correction = m[h] == -INFINITY ? 0.0f : __expf(m[h] - mNew);
      l[h] = l[h] * correction + warpSum(pr[h]);
#pragma unroll
      for (int e = 0; e < VEC; e++) acc[h][e] *= correction;
      m[h] = mNew;
    }
#pragma unroll 8
    for (int j = 0; j < kTiledKeys; j++) {
      float vf[VEC];
      loadFloats<VEC>(&vS[buf][j][lane * VEC], vf);
#pragma unroll
      for (int h = 0; h < HPW; h++) {
        const float pj = __shfl_sync(0xffffffffu, pr[h], j);
#pragma unroll
        for (int e = 0; e < VEC; e++) acc[h][e] = fmaf(pj, vf[e], acc[h][e]);
      }
    }
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }

#pragma unroll
  for (int h = 0; h < HPW; h++) {
    const int g = warp + h * kTiledWarps;
    if (g >= G) continue;
    const size_t head = static_cast<size_t>(t) * H + kvHead * G + g;
    if (used == 1) {
      float o[VEC];
#pragma unroll
      for (int e = 0; e < VEC; e++) o[e] = l[h] > 0.0f ? acc[h][e] / l[h] : 0.0f;
      storeFloats<VEC>(out + head * D + lane * VEC, o);
    } else {
      float* part = partial + (head * splits + split) * (D + 2);
      if (lane == 0) {
        part[0] = m[h];
        part[1] = l[h];
      }
#pragma unroll
      for (int e = 0; e < VEC; e++) part[2 + lane * VEC + e] = acc[h][e];
    }
  }
}

}  // namespace tandem
