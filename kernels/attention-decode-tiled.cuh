/*
Decode attention for bf16 caches with D 64 or 128 and up to 8 query heads per KV head (Qwen2.5,
Llama GQA): one block of 4 warps per (query row, KV head, context split), as the grouped kernel
(attention-decode.cuh), with the work laid out for a short dependency chain and deep loads:

- K and V stream through shared memory in tiles of 32 keys, double-buffered with cp.async: the
  next tile's 16-byte copies are in flight while the current one is used. Keys past the chunk or
  in a block outside the cache are zero-filled and masked.
- Scores: lane l of every warp owns key l of the tile; warp w owns query heads w and w + 4 (HPW =
  2; one head when G <= 4), so a score is one thread's dot product over D (q in shared memory,
  read as broadcasts): no per-key shuffle reductions. Each key pack read serves all the warp's
  heads, summed as 4 partial sums per head (TANDEM_DECODE_QK_PARTIALS=0: one chain per head).
  Rows are padded by 8 elements so the 16-byte reads of 8 consecutive lanes hit distinct banks.
- Softmax: per head, one warp max and one warp sum per tile (online: m, l, acc rescaled).
- P.V: lane l accumulates dims [l*VEC, (l+1)*VEC) of its heads' outputs; each key's weight is
  broadcast with a shuffle.
- Each warp ends with its heads complete: no cross-warp merge. With one used split (the chunk
  covers the context) the block writes the output; otherwise its (m, l, acc) go to `partial`
  and mergeSplitsKernel combines them. (Folding that merge into the last split block to finish,
  with a counter per (row, KV head), measured 0.15 ms per step slower on an H100 on 2026-12-07.)

Query split (QS = 2, attention.cu's TANDEM_DECODE_Q_SPLIT=2): two blocks per KV head, each with
one query head per warp (HPW = 1) over the same keys; only the first stores the new K/V row.

Grouped tiles (NG = kTileGroups, attention.cu's default where the grid leaves SMs idle): a block
of NG groups of 4 warps, each group with its own double-buffered tiles, takes tile r * NG + g of
its chunk in round r, so a short chunk's tiles run side by side instead of one after another; the
groups' (m, l, acc) are combined in shared memory at the end, as the split merge combines
chunks. A 128-key context is then one block per KV head and needs no merge kernel (four 32-key
split blocks + merge before). Dynamic shared memory: 141 KiB at D 128.

Same arguments, masking and split semantics as groupedDecodeKernel.

With ROPE (ropeAttentionDecode: every sequence has one query row, its new token) the kernel also
does what ropeWriteKv did before it: q is rotated as it is staged into shared memory, and the
block that owns the row's last key (the new token, key keys - 1) for its KV head rotates the new
k, stores k and v at slots[t] of the pools and puts them into its shared tile itself (that key's
cp.async is not issued: the pool row is written by this very block). The rounding is rope.cu's
(rope.cuh), so the output and the stored K/V are bit-identical to ropeWriteKv + attention.
Its first tile's loads, the metadata reads and rope's sincos come before pdlWait() (see the
kernel; TANDEM_DECODE_EARLY_LOADS=0 puts them after it, for A/B runs), and the new token's k and v
are read beside q after it (TANDEM_DECODE_NEW_KV_WITH_Q=0: after q is staged, for A/B runs).
*/
#pragma once

#include <cstdint>

#include "attention-decode.cuh"
#include "common.cuh"
#include "pdl.cuh"
#include "rope.cuh"

namespace tandem {

constexpr int kTiledWarps = 4;
constexpr int kTiledKeys = 32;
// Tile groups of the grouped-tile form (see above).
constexpr int kTileGroups = 4;

// The new tokens' k and v (T, Hkv, D) before rope, their positions and cache slots (a slot outside
// [0, numSlots) is not stored, as ropeWriteKv skips it): what ROPE kernels add to attention's arguments.
struct NewKv {
  const __nv_bfloat16* k;
  const __nv_bfloat16* v;
  const int* positions;
  const void* invFreq;
  int freqDt;
  const int* slots;
  int numSlots;
};

// The kernel's shared memory (dynamic: NG groups of double-buffered tiles pass 48 KiB). Once the
// tiles are consumed, NG > 1 blocks reuse their space to combine the groups' softmax states.
template <int D, int HPW, int NG>
struct TiledSmem {
  static constexpr int ROW = D + 8;  // padded shared row, in elements
  static constexpr int HEADS = kTiledWarps * HPW;
  union {
    struct {
      __nv_bfloat16 k[NG][2][kTiledKeys][ROW];
      __nv_bfloat16 v[NG][2][kTiledKeys][ROW];
    } tiles;
    struct {
      float m[NG][HEADS];
      float l[NG][HEADS];
      float acc[NG][HEADS][D];
    } combine;
  };
  float q[HEADS][D];
  float cosS[D / 2];
  float sinS[D / 2];
};

// QS: blocks per KV head, each with a slice of Smem::HEADS of its query heads (attention.cu's
// TANDEM_DECODE_Q_SPLIT); 1: one block takes them all.
template <int D, int HPW, bool ROPE, int NG, int QS = 1>
__global__ void __launch_bounds__(NG * kTiledWarps * 32)
    tiledDecodeKernel(__nv_bfloat16* out, float* partial, const __nv_bfloat16* q, __nv_bfloat16* kPool,
                      __nv_bfloat16* vPool, const int* cuSeqlensQ, const int* contextLens, const int* blockTables,
                      int S, int H, int Hkv, int blockSize, int maxBlocks, int numBlocks, float scale, int splits,
                      int skipMulti, NewKv nkv) {
  constexpr int VEC = D / 32;    // output dims per lane
  constexpr int PACKS = D / 8;   // 16-byte packs per row
  constexpr int GROUP_THREADS = kTiledWarps * 32;
  constexpr int THREADS = NG * GROUP_THREADS;
  using Smem = TiledSmem<D, HPW, NG>;
  extern __shared__ __align__(16) unsigned char smemBytes[];
  Smem& sm = *reinterpret_cast<Smem*>(smemBytes);
  // This thread's tile group: its own K/V buffers, and its own tiles of the chunk.
  const int group = NG == 1 ? 0 : threadIdx.x / GROUP_THREADS;
  const int groupThread = threadIdx.x % GROUP_THREADS;
  auto& kS = sm.tiles.k[group];
  auto& vS = sm.tiles.v[group];
  auto& qS = sm.q;
  auto& cosS = sm.cosS;
  auto& sinS = sm.sinS;
  pdlLaunchDependents();
  // Early loads (ROPE, cEarlyLoads): the step's metadata, the first K/V tile and rope's sincos are
  // read before pdlWait(), overlapping the q/k/v product's tail. Legal because none of them is
  // written by a kernel of this step: the metadata is copied from the host before the step's first
  // kernel (a copy is a full barrier in the stream, as is a graph launch), older K/V rows were
  // written by earlier steps, and the new key, the one row this step writes, is placed by this
  // block after the wait (placeNew). Without ROPE the keys may come from a ropeWriteKv just before.
  const bool early = ROPE && cEarlyLoads != 0;
  if (!early) pdlWait();
  const int t = blockIdx.x;
  const int kvHead = QS == 1 ? blockIdx.y : blockIdx.y / QS;
  const int headBase = QS == 1 ? 0 : (blockIdx.y % QS) * Smem::HEADS;
  const int split = blockIdx.z;
  const int warp = groupThread / 32;
  const int lane = threadIdx.x % 32;

  const DecodeChunk chunk = decodeChunk(cuSeqlensQ, contextLens, S, t, split, splits, skipMulti);
  if (chunk.skip) {
    if (early) pdlWait();  // so this grid's end still implies the previous kernel's
    return;
  }
  const int kBegin = chunk.kBegin;
  const int kEnd = chunk.kEnd;
  const int G = H / Hkv;
  const int Gb = QS == 1 ? G : min(Smem::HEADS, G - headBase);  // this block's query heads (G <= HEADS at QS 1)
  const int* table = blockTables + static_cast<size_t>(chunk.s) * maxBlocks;
  const size_t rowStride = static_cast<size_t>(Hkv) * D;
  const size_t headOffset = static_cast<size_t>(kvHead) * D;
  // ROPE: the new token is the row's last key; -1 when this block's chunk does not hold it.
  const int newKey = ROPE && chunk.keys - 1 >= kBegin && chunk.keys - 1 < kEnd ? chunk.keys - 1 : -1;
  // Position p's row of this KV head, or -1: past the chunk or in a block outside the cache.
  auto rowOf = [&](int p) -> long long {
    if (p >= kEnd) return -1;
    const int block = table[p / blockSize];
    if (block < 0 || block >= numBlocks) return -1;
    return static_cast<long long>((static_cast<size_t>(block) * blockSize + p % blockSize) * rowStride + headOffset);
  };
  auto issue = [&](int buf, int p0) {
    for (int i = groupThread; i < kTiledKeys * PACKS; i += GROUP_THREADS) {
      const int key = i / PACKS;
      const int c = (i % PACKS) * 8;
      if (ROPE && p0 + key == newKey) continue;  // placeNew() fills it
      const long long row = rowOf(p0 + key);
      const size_t at = row < 0 ? 0 : static_cast<size_t>(row) + c;
      cpAsync16(&kS[buf][key][c], kPool + at, row >= 0);
      cpAsync16(&vS[buf][key][c], vPool + at, row >= 0);
    }
    cpAsyncCommit();
  };
  // ROPE: the new token's k and v as this thread places them (element j = groupThread and j + D/2
  // of its KV head; a thread past D/2 places none), read from the product's output.
  static_assert(D / 2 <= GROUP_THREADS, "one thread per rotated pair of the new key");
  const size_t newFrom = (static_cast<size_t>(t) * Hkv + kvHead) * D;
  auto loadNew = [&](__nv_bfloat16 (&kv)[4]) {
    kv[0] = nkv.k[newFrom + groupThread];
    kv[1] = nkv.k[newFrom + groupThread + D / 2];
    kv[2] = nkv.v[newFrom + groupThread];
    kv[3] = nkv.v[newFrom + groupThread + D / 2];
  };
  // cNewKvWithQ: the placing threads read them right after pdlWait(), beside q (below), so the two
  // reads' latencies overlap instead of following each other.
  const bool newWithQ = ROPE && cNewKvWithQ != 0;
  __nv_bfloat16 newKv[4];
  int newSlot = -1;
  // ROPE: the new token's k (rotated) and v into the tile starting at p0 if it holds newKey, and
  // into the pools at slots[t]. Needs cosS / sinS; visible to the block after the next barrier.
  auto placeNew = [&](int buf, int p0) {
    if (!ROPE || newKey < p0 || newKey >= p0 + kTiledKeys || groupThread >= D / 2) return;
    const int key = newKey - p0;
    const int slot = newWithQ ? newSlot : nkv.slots[t];
    const bool store = slot >= 0 && slot < nkv.numSlots && headBase == 0;  // one block of the KV head stores it
    const size_t to = static_cast<size_t>(slot) * rowStride + headOffset;
    {
      const int j = groupThread;
      __nv_bfloat16 kv[4];
      if (newWithQ) {
#pragma unroll
        for (int e = 0; e < 4; e++) kv[e] = newKv[e];
      } else {
        loadNew(kv);
      }
      float ra, rb;
      ropeRotate(toF(kv[0]), toF(kv[1]), cosS[j], sinS[j], &ra, &rb);
      const __nv_bfloat16 k0 = fromF<__nv_bfloat16>(ra);
      const __nv_bfloat16 k1 = fromF<__nv_bfloat16>(rb);
      const __nv_bfloat16 v0 = kv[2];
      const __nv_bfloat16 v1 = kv[3];
      kS[buf][key][j] = k0;
      kS[buf][key][j + D / 2] = k1;
      vS[buf][key][j] = v0;
      vS[buf][key][j + D / 2] = v1;
      if (store) {
        kPool[to + j] = k0;
        kPool[to + j + D / 2] = k1;
        vPool[to + j] = v0;
        vPool[to + j + D / 2] = v1;
      }
    }
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
  // Round r: group g takes tile r * NG + g (a group past the last tile takes none: it still
  // commits an empty copy group and meets every barrier).
  const int rounds = CEIL_DIV(tiles, NG);
  auto tileStart = [&](int r) { return kBegin + (r * NG + group) * kTiledKeys; };
  auto hasTile = [&](int r) { return r * NG + group < tiles; };
  // First, so the loads overlap q's staging (and rope's sincos).
  if (rounds > 0) {
    if (hasTile(0)) issue(0, tileStart(0));
    else cpAsyncCommit();
  }
  if (ROPE) {
    const int position = nkv.positions[t];
    for (int j = threadIdx.x; j < D / 2; j += THREADS) {
      ropeCosSin(position, nkv.invFreq, nkv.freqDt, j, &cosS[j], &sinS[j]);
    }
    __syncthreads();
  }
  if (early) pdlWait();  // q and the new k / v come from the product before
  // The threads that place the new key (its group: the one whose tile holds it) read it now.
  if (newWithQ && newKey >= 0 && groupThread < D / 2 && ((newKey - kBegin) / kTiledKeys) % NG == group) {
    loadNew(newKv);
    newSlot = nkv.slots[t];
  }
  // q scaled into shared memory (rotated first with ROPE, rounded to bf16 as ropeWriteKv stores it).
  constexpr int HALF_PACKS = PACKS / 2;
  for (int i = threadIdx.x; i < Smem::HEADS * (ROPE ? HALF_PACKS : PACKS); i += THREADS) {
    const int g = ROPE ? i / HALF_PACKS : i / PACKS;
    const int c = (ROPE ? i % HALF_PACKS : i % PACKS) * 8;
    const __nv_bfloat16* qh = q + (static_cast<size_t>(t) * H + kvHead * G + headBase + g) * D;
    float a[8];
    float b[8];
    if (g < Gb) {
      loadFloats<8>(qh + c, a);
      if (ROPE) loadFloats<8>(qh + c + D / 2, b);
    }
#pragma unroll
    for (int e = 0; e < 8; e++) {
      if (ROPE) {
        float ra = 0.0f, rb = 0.0f;
        if (g < Gb) ropeRotate(a[e], b[e], cosS[c + e], sinS[c + e], &ra, &rb);
        qS[g][c + e] = roundTo<__nv_bfloat16>(ra) * scale;
        qS[g][c + e + D / 2] = roundTo<__nv_bfloat16>(rb) * scale;
      } else {
        qS[g][c + e] = g < Gb ? a[e] * scale : 0.0f;
      }
    }
  }
  if (rounds > 0 && hasTile(0)) placeNew(0, tileStart(0));
  for (int i = 0; i < rounds; i++) {
    const int buf = i & 1;
    if (i + 1 < rounds) {
      if (hasTile(i + 1)) {
        issue(buf ^ 1, tileStart(i + 1));
        placeNew(buf ^ 1, tileStart(i + 1));
      } else {
        cpAsyncCommit();
      }
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();  // the tile (and on the first pass qS) is visible to every warp
    if (!hasTile(i)) {  // (group-uniform) no tile for this group this round
      __syncthreads();
      continue;
    }
    const bool keyOk = rowOf(tileStart(i) + lane) >= 0;
    // Lane l's score of key l for each of the warp's heads.
    float scores[HPW];
    if (cQkPartials != 0) {
      // 4 partial sums per head (pack c / 8 adds into sum (c / 8) % 4), each key pack read once
      // for all heads: chains of D / 4 multiply-adds instead of D. Rows of qS past Gb are zeros.
      float part[HPW][4];
#pragma unroll
      for (int h = 0; h < HPW; h++) {
#pragma unroll
        for (int p = 0; p < 4; p++) part[h][p] = 0.0f;
      }
#pragma unroll
      for (int c = 0; c < D; c += 8) {
        float kf[8];
        loadFloats<8>(&kS[buf][lane][c], kf);
#pragma unroll
        for (int h = 0; h < HPW; h++) {
          const int g = warp + h * kTiledWarps;
#pragma unroll
          for (int e = 0; e < 8; e++) part[h][(c / 8) % 4] = fmaf(qS[g][c + e], kf[e], part[h][(c / 8) % 4]);
        }
      }
#pragma unroll
      for (int h = 0; h < HPW; h++) {
        const int g = warp + h * kTiledWarps;
        scores[h] = g < Gb && keyOk ? (part[h][0] + part[h][1]) + (part[h][2] + part[h][3]) : -INFINITY;
      }
    } else {
#pragma unroll
      for (int h = 0; h < HPW; h++) {
        const int g = warp + h * kTiledWarps;
        float dot = -INFINITY;
        if (g < Gb && keyOk) {
          dot = 0.0f;
#pragma unroll
          for (int c = 0; c < D; c += 8) {
            float kf[8];
            loadFloats<8>(&kS[buf][lane][c], kf);
#pragma unroll
            for (int e = 0; e < 8; e++) dot = fmaf(qS[g][c + e], kf[e], dot);
          }
        }
        scores[h] = dot;
      }
    }
    float pr[HPW];
#pragma unroll
    for (int h = 0; h < HPW; h++) {
      const float score = scores[h];
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

  if constexpr (NG > 1) {
    // The groups' states of each head into shared memory (over the tiles: the loop's last
    // barrier saw every read of them), then group 0 combines them as the split merge does.
#pragma unroll
    for (int h = 0; h < HPW; h++) {
      const int g = warp + h * kTiledWarps;
      if (g >= Gb) continue;
      if (lane == 0) {
        sm.combine.m[group][g] = m[h];
        sm.combine.l[group][g] = l[h];
      }
#pragma unroll
      for (int e = 0; e < VEC; e++) sm.combine.acc[group][g][lane * VEC + e] = acc[h][e];
    }
    __syncthreads();
    if (group != 0) return;
#pragma unroll
    for (int h = 0; h < HPW; h++) {
      const int g = warp + h * kTiledWarps;
      if (g >= Gb) continue;
      float top = -INFINITY;
#pragma unroll
      for (int x = 0; x < NG; x++) top = fmaxf(top, sm.combine.m[x][g]);
      m[h] = top;
      l[h] = 0.0f;
#pragma unroll
      for (int e = 0; e < VEC; e++) acc[h][e] = 0.0f;
      if (top == -INFINITY) continue;  // no readable key in the chunk
#pragma unroll
      for (int x = 0; x < NG; x++) {
        const float mx = sm.combine.m[x][g];
        const float w = mx == -INFINITY ? 0.0f : __expf(mx - top);
        l[h] = fmaf(sm.combine.l[x][g], w, l[h]);
#pragma unroll
        for (int e = 0; e < VEC; e++) acc[h][e] = fmaf(sm.combine.acc[x][g][lane * VEC + e], w, acc[h][e]);
      }
    }
  }

#pragma unroll
  for (int h = 0; h < HPW; h++) {
    const int g = warp + h * kTiledWarps;
    if (g >= Gb) continue;
    const size_t head = static_cast<size_t>(t) * H + kvHead * G + headBase + g;
    if (chunk.used == 1) {
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
