/*
Flash-style prefill attention over the paged KV cache, bf16 on tensor cores (WMMA 16x16x16,
fp32 accumulation). Shapes and paging as in attention.cu; D is 64 or 128.

A block takes a tile of kTileQ query vectors of one sequence and one KV head, a query vector
being one (row, head) pair of the head's GQA group, flattened as r = row * G + g, so a tile holds
all G heads of kTileQ / G rows and every K/V tile is loaded into shared memory once for all of
them. Per K/V tile of kTileK keys (up to the tile's last position, causal):
  S = Q K^T          each warp 16 query vectors x 64 keys, into shared memory (fp32)
  online softmax     per query vector: mask (key > position, unreadable block), running max
                     m and sum l, P = exp(S * scale - m) rounded to bf16 (l sums the rounded P,
                     so numerator and denominator see the same weights)
  O = O * c + P V    O lives in shared memory (fp32): WMMA gives no per-row access to its
                     accumulators, and the rescale by c = e^(m_old - m_new) is per row.
The output is O / l. Sequences with a single query row are left to the decode kernel.

Grid: (ceil(T * G / kTileQ) + S, Hkv) covers every sequence's tiles; a block finds its
(sequence, tile) by walking cuSeqlensQ, and blocks past the last tile return at once.
*/
#pragma once

#include <mma.h>

#include <cstdint>

#include "common.cuh"

namespace tandem {

constexpr int kTileQ = 64;  // query vectors per block (4 warps x 16)
constexpr int kTileK = 64;  // keys per K/V tile
constexpr int kPrefillThreads = 128;

// Shared memory layout (bytes from a 128-byte aligned base); row pads keep WMMA pointers
// 32-byte aligned and spread rows over banks.
template <int D>
struct PrefillSmem {
  static constexpr int ldQ = D + 8;        // bf16: Q, K, V tiles
  static constexpr int ldS = kTileK + 4;   // f32 scores
  static constexpr int ldP = kTileK + 8;   // bf16 probabilities
  static constexpr int ldO = D + 4;        // f32 output accumulators
  static constexpr size_t q = 0;
  static constexpr size_t k = q + kTileQ * ldQ * 2;
  static constexpr size_t v = k + kTileK * ldQ * 2;
  static constexpr size_t s = v + kTileK * ldQ * 2;
  static constexpr size_t p = s + kTileQ * ldS * 4;
  static constexpr size_t o = p + kTileQ * ldP * 2;
  static constexpr size_t rowM = o + kTileQ * ldO * 4;
  static constexpr size_t rowL = rowM + kTileQ * 4;
  static constexpr size_t rowPos = rowL + kTileQ * 4;
  static constexpr size_t keyOk = rowPos + kTileQ * 4;
  static constexpr size_t bytes = keyOk + kTileK * 4 + 128;  // + alignment slack
};

template <int D>
__global__ void __launch_bounds__(kPrefillThreads)
    flashPrefillKernel(__nv_bfloat16* out, const __nv_bfloat16* q, const __nv_bfloat16* kPool,
                       const __nv_bfloat16* vPool, const int* cuSeqlensQ, const int* contextLens, const int* blockTables,
                       int S, int H, int Hkv, int blockSize, int maxBlocks, int numBlocks, float scale) {
  using namespace nvcuda;
  using L = PrefillSmem<D>;
  using bf16 = __nv_bfloat16;
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  extern __shared__ float4 dynamicSmem[];
  unsigned char* base = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(dynamicSmem) + 127) / 128 * 128);
  bf16* Qs = reinterpret_cast<bf16*>(base + L::q);
  bf16* Ks = reinterpret_cast<bf16*>(base + L::k);
  bf16* Vs = reinterpret_cast<bf16*>(base + L::v);
  float* Ss = reinterpret_cast<float*>(base + L::s);
  bf16* Ps = reinterpret_cast<bf16*>(base + L::p);
  float* Os = reinterpret_cast<float*>(base + L::o);
  float* rowM = reinterpret_cast<float*>(base + L::rowM);
  float* rowL = reinterpret_cast<float*>(base + L::rowL);
  int* rowPos = reinterpret_cast<int*>(base + L::rowPos);
  int* keyOk = reinterpret_cast<int*>(base + L::keyOk);

  const int G = H / Hkv;
  const int kvHead = blockIdx.y;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;

  // This block's (sequence, tile): tiles of multi-row sequences, in order.
  int s = 0;
  int tile = blockIdx.x;
  for (; s < S; s++) {
    const int qlen = cuSeqlensQ[s + 1] - cuSeqlensQ[s];
    if (qlen <= 1) continue;
    const int tiles = (qlen * G + kTileQ - 1) / kTileQ;
    if (tile < tiles) break;
    tile -= tiles;
  }
  if (s == S) return;
  const int row0 = cuSeqlensQ[s];
  const int qlen = cuSeqlensQ[s + 1] - row0;
  const int ctx = contextLens[s];
  const int vec0 = tile * kTileQ;
  const int vecs = min(kTileQ, qlen * G - vec0);
  const int* table = blockTables + static_cast<size_t>(s) * maxBlocks;
  const int lastPos = ctx - qlen + (vec0 + vecs - 1) / G;

  // Q tile, row state, O = 0.
  for (int c = tid; c < kTileQ * kChunks; c += kPrefillThreads) {
    const int r = c / kChunks;
    const int dc = c % kChunks;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < vecs) {
      const int i = (vec0 + r) / G;
      const int h = kvHead * G + (vec0 + r) % G;
      val = *reinterpret_cast<const uint4*>(q + (static_cast<size_t>(row0 + i) * H + h) * D + dc * 8);
    }
    *reinterpret_cast<uint4*>(Qs + r * L::ldQ + dc * 8) = val;
  }
  for (int r = tid; r < kTileQ; r += kPrefillThreads) {
    rowM[r] = -INFINITY;
    rowL[r] = 0.0f;
    rowPos[r] = r < vecs ? ctx - qlen + (vec0 + r) / G : -1;
  }
  for (int e = tid; e < kTileQ * L::ldO; e += kPrefillThreads) Os[e] = 0.0f;

  const size_t rowStride = static_cast<size_t>(Hkv) * D;
  for (int k0 = 0; k0 <= lastPos; k0 += kTileK) {
    __syncthreads();  // the previous tile's K, V (and the setup above) are done with
    for (int c = tid; c < kTileK * kChunks; c += kPrefillThreads) {
      const int j = c / kChunks;
      const int dc = c % kChunks;
      const int p = k0 + j;
      const int block = p < ctx ? table[p / blockSize] : -1;
      const bool ok = block >= 0 && block < numBlocks;
      uint4 kv = make_uint4(0, 0, 0, 0);
      uint4 vv = make_uint4(0, 0, 0, 0);
      if (ok) {
        const size_t off = (static_cast<size_t>(block) * blockSize + p % blockSize) * rowStride +
                           static_cast<size_t>(kvHead) * D + dc * 8;
        kv = *reinterpret_cast<const uint4*>(kPool + off);
        vv = *reinterpret_cast<const uint4*>(vPool + off);
      }
      *reinterpret_cast<uint4*>(Ks + j * L::ldQ + dc * 8) = kv;
      *reinterpret_cast<uint4*>(Vs + j * L::ldQ + dc * 8) = vv;
      if (dc == 0) keyOk[j] = ok;
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 query vectors.
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> sc[kTileK / 16];
#pragma unroll
      for (int n = 0; n < kTileK / 16; n++) wmma::fill_fragment(sc[n], 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::load_matrix_sync(a, Qs + warp * 16 * L::ldQ + kk * 16, L::ldQ);
#pragma unroll
        for (int n = 0; n < kTileK / 16; n++) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b;
          wmma::load_matrix_sync(b, Ks + n * 16 * L::ldQ + kk * 16, L::ldQ);
          wmma::mma_sync(sc[n], a, b, sc[n]);
        }
      }
#pragma unroll
      for (int n = 0; n < kTileK / 16; n++) {
        wmma::store_matrix_sync(Ss + warp * 16 * L::ldS + n * 16, sc[n], L::ldS, wmma::mem_row_major);
      }
    }
    __syncwarp();

    // Online softmax: two lanes per query vector, 32 keys each.
    {
      const int r = warp * 16 + lane / 2;
      const int c0 = (lane % 2) * (kTileK / 2);
      const int pos = rowPos[r];
      float tileMax = -INFINITY;
      for (int c = c0; c < c0 + kTileK / 2; c++) {
        const bool live = k0 + c <= pos && keyOk[c];
        if (live) tileMax = fmaxf(tileMax, Ss[r * L::ldS + c] * scale);
      }
      tileMax = fmaxf(tileMax, __shfl_xor_sync(0xffffffffu, tileMax, 1));
      const float mOld = rowM[r];
      const float mNew = fmaxf(mOld, tileMax);
      const float correction = mNew == -INFINITY ? 1.0f : __expf(mOld - mNew);
      float sum = 0.0f;
      for (int c = c0; c < c0 + kTileK / 2; c++) {
        const bool live = k0 + c <= pos && keyOk[c];
        const bf16 pb = __float2bfloat16_rn(live ? __expf(Ss[r * L::ldS + c] * scale - mNew) : 0.0f);
        Ps[r * L::ldP + c] = pb;
        sum += __bfloat162float(pb);
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      for (int d = (lane % 2) * (D / 2); d < (lane % 2 + 1) * (D / 2); d++) Os[r * L::ldO + d] *= correction;
      __syncwarp();
      if (lane % 2 == 0) {
        rowM[r] = mNew;
        rowL[r] = rowL[r] * correction + sum;
      }
    }
    __syncwarp();

    // O += P V for this warp's 16 query vectors.
#pragma unroll
    for (int j = 0; j < D / 16; j++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      float* op = Os + warp * 16 * L::ldO + j * 16;
      wmma::load_matrix_sync(o, op, L::ldO, wmma::mem_row_major);
#pragma unroll
      for (int kc = 0; kc < kTileK / 16; kc++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> b;
        wmma::load_matrix_sync(a, Ps + warp * 16 * L::ldP + kc * 16, L::ldP);
        wmma::load_matrix_sync(b, Vs + kc * 16 * L::ldQ + j * 16, L::ldQ);
        wmma::mma_sync(o, a, b, o);
      }
      wmma::store_matrix_sync(op, o, L::ldO, wmma::mem_row_major);
    }
    __syncwarp();
  }
  __syncthreads();

  for (int e = tid; e < vecs * D; e += kPrefillThreads) {
    const int r = e / D;
    const int d = e % D;
    const int i = (vec0 + r) / G;
    const int h = kvHead * G + (vec0 + r) % G;
    const float l = rowL[r];
    out[(static_cast<size_t>(row0 + i) * H + h) * D + d] = __float2bfloat16_rn(l > 0.0f ? Os[r * L::ldO + d] / l : 0.0f);
  }
}

}  // namespace tandem
