/*
Causal grouped-query attention over the paged KV cache (packed prefill and decode alike).
  q and out are (T, H, D); kPool and vPool are one layer's (numBlocks, blockSize, Hkv, D);
  cuSeqlensQ is (S+1), contextLens is (S), blockTables is (S, maxBlocks), all i32; dtype T
  (f32 or bf16) for q, the pools and out; f32 arithmetic throughout.
Sequence s owns query rows [cuSeqlensQ[s], cuSeqlensQ[s+1]), its last qlen tokens: row i sits at
position ctx - qlen + i and attends to cache positions [0, that position]. Position p lives in
block blockTables[s, p / blockSize] at offset p % blockSize. Query head h reads KV head
h / (H / Hkv). Blocks outside [0, numBlocks) are skipped (their keys count as absent).

Three kernels share the rows (attention() below picks):
  flashPrefillKernel (attention-prefill.cuh)   bf16, D 64 or 128: rows of sequences with more
      than one query row, a tile of (row, head) pairs per block on tensor cores;
  tiledDecodeKernel (attention-decode-tiled.cuh)   bf16, D 64 or 128, up to 8 query heads per KV
      head: every other row, K/V tiles through shared memory, split-K as below;
  groupedDecodeKernel (attention-decode.cuh)   f32 (or TANDEM_TILED_DECODE=0), D 64 or 128, up to 8 query heads per KV head:
      every other row, one block per (row, KV head, context split), split-K when the batch
      is too small to fill the GPU, then mergeSplitsKernel;
  pagedAttentionKernel (below)                 anything else (D 32 or 256, wide GQA groups):
      one block per (row, head).

pagedAttentionKernel: one block of WARPS (8) warps per (query row, head). A warp owns runs of
UNROLL consecutive keys (strided by the block), lane l holds dims [l*VEC, (l+1)*VEC) of q, K, V
and the output (D = 32 * VEC), so a key row is one coalesced 2*D-byte read. Per run: UNROLL K
and V rows are loaded before any use, UNROLL dot products are reduced with shuffles, and the
warp's online softmax (running max m, sum l, accumulator acc) absorbs them with one rescale.
The warps' states merge through shared memory at the end.
*/
#include "attention-decode-tiled.cuh"
#include "attention-decode.cuh"
#include "attention-prefill.cuh"
#include "common.cuh"

namespace tandem {

// ----------------------------------------------------------------------------
// CUDA kernels

template <typename T, int VEC, int WARPS, int UNROLL>
__global__ void __launch_bounds__(WARPS * 32)
    pagedAttentionKernel(T* out, const T* q, const T* kPool, const T* vPool, const int* cuSeqlensQ,
                         const int* contextLens, const int* blockTables, int S, int H, int Hkv, int blockSize,
                         int maxBlocks, int numBlocks, float scale, int skipMulti) {
  constexpr int D = 32 * VEC;
  __shared__ float sharedM[WARPS];
  __shared__ float sharedL[WARPS];
  __shared__ float sharedAcc[WARPS][D];
  const int t = blockIdx.x;
  const int h = blockIdx.y;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;

  const int s = sequenceOfRow(cuSeqlensQ, S, t);
  const int qlen = cuSeqlensQ[s + 1] - cuSeqlensQ[s];
  if (skipMulti && qlen > 1) return;  // (block-uniform) the prefill kernel's row
  const int ctx = contextLens[s];
  const int keys = min(ctx, ctx - qlen + (t - cuSeqlensQ[s]) + 1);  // causal: positions [0, keys)
  const int kvHead = h / (H / Hkv);
  const int* table = blockTables + static_cast<size_t>(s) * maxBlocks;
  const size_t rowStride = static_cast<size_t>(Hkv) * D;
  const size_t headOffset = static_cast<size_t>(kvHead) * D + lane * VEC;

  float qv[VEC];
  loadFloats<VEC>(q + (static_cast<size_t>(t) * H + h) * D + lane * VEC, qv);
#pragma unroll
  for (int i = 0; i < VEC; i++) qv[i] *= scale;

  float m = -INFINITY;
  float l = 0.0f;
  float acc[VEC];
#pragma unroll
  for (int i = 0; i < VEC; i++) acc[i] = 0.0f;

  for (int p0 = warp * UNROLL; p0 < keys; p0 += WARPS * UNROLL) {
    float kf[UNROLL][VEC];
    float vf[UNROLL][VEC];
    bool ok[UNROLL];
    loadKvRun<T, VEC, UNROLL>(kf, vf, ok, kPool, vPool, table, p0, keys, blockSize, numBlocks, rowStride, headOffset);
    float score[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < VEC; i++) dot += qv[i] * kf[u][i];
      score[u] = dot;
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) score[u] = warpSum(score[u]);
    float mNew = m;
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      if (!ok[u]) score[u] = -INFINITY;
      mNew = fmaxf(mNew, score[u]);
    }
    if (mNew == -INFINITY) continue;  // (warp-uniform) nothing readable in this run
    const float correction = __expf(m - mNew);
    l *= correction;
#pragma unroll
    for (int i = 0; i < VEC; i++) acc[i] *= correction;
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      const float pu = __expf(score[u] - mNew);
      l += pu;
#pragma unroll
      for (int i = 0; i < VEC; i++) acc[i] += pu * vf[u][i];
    }
    m = mNew;
  }

  if (lane == 0) {
    sharedM[warp] = m;
    sharedL[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < VEC; i++) sharedAcc[warp][lane * VEC + i] = acc[i];
  __syncthreads();
  float mAll = -INFINITY;
#pragma unroll
  for (int w = 0; w < WARPS; w++) mAll = fmaxf(mAll, sharedM[w]);
  float weight[WARPS];
  float lAll = 0.0f;
#pragma unroll
  for (int w = 0; w < WARPS; w++) {
    weight[w] = sharedM[w] == -INFINITY ? 0.0f : __expf(sharedM[w] - mAll);
    lAll += sharedL[w] * weight[w];
  }
  const float inv = lAll > 0.0f ? 1.0f / lAll : 0.0f;
  T* o = out + (static_cast<size_t>(t) * H + h) * D;
  for (int d = threadIdx.x; d < D; d += WARPS * 32) {
    float v = 0.0f;
#pragma unroll
    for (int w = 0; w < WARPS; w++) v += sharedAcc[w][d] * weight[w];
    o[d] = fromF<T>(v * inv);
  }
}

// ----------------------------------------------------------------------------
// kernel launchers

namespace {

constexpr int kWarps = 8;  // a long context needs many loads in flight per block
constexpr int kUnroll = 4;

int smCount() {
  static int count = 0;  // one process drives one GPU
  if (count == 0) {
    int device = 0;
    cudaCheck(cudaGetDevice(&device));
    cudaCheck(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  }
  return count;
}

// Shared memory a block may ask for (227 KiB on Hopper, 163 on A100, 99 on an RTX 4090).
int maxSmemPerBlock() {
  static int bytes = 0;
  if (bytes == 0) {
    int device = 0;
    cudaCheck(cudaGetDevice(&device));
    cudaCheck(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  }
  return bytes;
}

// TANDEM_TILED_DECODE=0: bf16 decode rows take the grouped kernel too (for comparisons).
bool tiledOff() {
  static const bool off = envSwitchOff("TANDEM_TILED_DECODE");
  return off;
}

// Grouped tiles: grids of the tiled kernel that leave SMs idle (small batches) run kTileGroups
// tiles side by side in each block, combined in shared memory, with min split keys of kTileGroups
// tiles (so a context of up to 128 keys is one block per KV head and no merge). Batch 1 / 64
// decode steps 0.028 / 0.068 ms faster on an H100 (bench/results/decode-replay-grouped-tiles-
// 2026-12-07-h100.json). TANDEM_DECODE_GROUPED_TILES=0 turns it off (for comparisons).
bool groupedTilesOn() {
  static const bool on = !envSwitchOff("TANDEM_DECODE_GROUPED_TILES");
  return on;
}

bool groupedSupported(int H, int Hkv, int D) { return (D == 64 || D == 128) && H / Hkv <= 8; }
bool flashSupported(int dt, int D) { return dt == kBF16 && (D == 64 || D == 128); }

struct AttnArgs {
  void* out;
  const void* q;
  const void* kPool;
  const void* vPool;
  const int* cuSeqlensQ;
  const int* contextLens;
  const int* blockTables;
  int T, S, H, Hkv, D, blockSize, maxBlocks, numBlocks;
  float scale;
  cudaStream_t stream;
};

template <typename T, int VEC>
void launchPerRow(const AttnArgs& a, int skipMulti) {
  const dim3 grid(static_cast<unsigned>(a.T), static_cast<unsigned>(a.H));
  pagedAttentionKernel<T, VEC, kWarps, kUnroll><<<grid, kWarps * 32, 0, a.stream>>>(
      static_cast<T*>(a.out), static_cast<const T*>(a.q), static_cast<const T*>(a.kPool), static_cast<const T*>(a.vPool),
      a.cuSeqlensQ, a.contextLens, a.blockTables, a.S, a.H, a.Hkv, a.blockSize, a.maxBlocks, a.numBlocks, a.scale,
      skipMulti);
}

// With ROPE the kernel also applies rope and stores the new tokens' K/V (nkv); the pools are then
// written, so AttnArgs' const pointers are cast back (ropeAttentionDecode got them writable).
// QS > 1: that many blocks per KV head, each with kTiledWarps * HPW of its query heads.
template <int D, int HPW, bool ROPE, int NG, int QS = 1>
void launchTiled(const AttnArgs& a, int splits, float* partial, int skipMulti, const NewKv& nkv) {
  const dim3 grid(static_cast<unsigned>(a.T), static_cast<unsigned>(a.Hkv * QS), static_cast<unsigned>(splits));
  auto kernel = tiledDecodeKernel<D, HPW, ROPE, NG, QS>;
  constexpr size_t bytes = sizeof(TiledSmem<D, HPW, NG>);
  if constexpr (bytes > 48 * 1024) {
    static bool granted = false;  // shared memory past 48 KiB must be asked for, once
    if (!granted) {
      cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
      granted = true;
    }
  }
  // Rows of multi-row sequences belong to the prefill kernel (skipMulti): it writes their output.
  launchPdl(kernel, grid, dim3(NG * kTiledWarps * 32), bytes, a.stream,
            static_cast<__nv_bfloat16*>(a.out), partial, static_cast<const __nv_bfloat16*>(a.q),
            static_cast<__nv_bfloat16*>(const_cast<void*>(a.kPool)),
            static_cast<__nv_bfloat16*>(const_cast<void*>(a.vPool)), a.cuSeqlensQ, a.contextLens, a.blockTables, a.S,
            a.H, a.Hkv, a.blockSize, a.maxBlocks, a.numBlocks, a.scale, splits, skipMulti, nkv);
  if (splits > 1) {
    const dim3 mergeGrid(static_cast<unsigned>(a.T), static_cast<unsigned>(a.H));
    launchPdl(mergeSplitsKernel<__nv_bfloat16>, mergeGrid, dim3(128), 0, a.stream, static_cast<__nv_bfloat16*>(a.out),
              static_cast<const float*>(partial), a.cuSeqlensQ, a.contextLens, a.S, a.H, a.D, splits, skipMulti);
  }
}

// Grouped-tile grids with 5-8 query heads per KV head run two blocks per KV head, each with one
// head per warp, instead of one block with two heads per warp: twice the SMs, half of each block's
// score and P.V chains (2.526 vs 2.616 ms per batch-1 decode step of a 3B model replayed on an
// H100, bench/results/decode-replay-ab-2026-12-07-run6-h100.json). TANDEM_DECODE_Q_SPLIT=1 keeps
// one block per KV head, for A/B runs.
int querySplit() {
  static const int split = [] {
    const char* v = std::getenv("TANDEM_DECODE_Q_SPLIT");
    if (v == nullptr || *v == '\0' || std::strcmp(v, "2") == 0) return 2;
    if (std::strcmp(v, "1") == 0) return 1;
    throw Error(std::string("TANDEM_DECODE_Q_SPLIT must be 1 or 2, got '") + v + "'");
  }();
  return split;
}

// bf16 decode rows go to the tiled kernel (attention-decode-tiled.cuh), f32 ones to the grouped one.
template <bool ROPE>
void dispatchTiled(const AttnArgs& a, int splits, float* partial, int skipMulti, const NewKv& nkv) {
  const bool one = a.H / a.Hkv <= kTiledWarps;  // query heads per warp: 1, else 2
  // Grouped tiles where the grid leaves SMs idle and the device holds their shared memory.
  const size_t groupedBytes = a.D == 64 ? sizeof(TiledSmem<64, 2, kTileGroups>) : sizeof(TiledSmem<128, 2, kTileGroups>);
  if (groupedTilesOn() && a.T * a.Hkv < smCount() && groupedBytes <= static_cast<size_t>(maxSmemPerBlock())) {
    if (!one && querySplit() == 2 && a.T * a.Hkv * 2 < smCount()) {
      if (a.D == 64) launchTiled<64, 1, ROPE, kTileGroups, 2>(a, splits, partial, skipMulti, nkv);
      else launchTiled<128, 1, ROPE, kTileGroups, 2>(a, splits, partial, skipMulti, nkv);
      return;
    }
    if (a.D == 64) {
      if (one) launchTiled<64, 1, ROPE, kTileGroups>(a, splits, partial, skipMulti, nkv);
      else launchTiled<64, 2, ROPE, kTileGroups>(a, splits, partial, skipMulti, nkv);
    } else {
      if (one) launchTiled<128, 1, ROPE, kTileGroups>(a, splits, partial, skipMulti, nkv);
      else launchTiled<128, 2, ROPE, kTileGroups>(a, splits, partial, skipMulti, nkv);
    }
    return;
  }
  if (a.D == 64) {
    if (one) launchTiled<64, 1, ROPE, 1>(a, splits, partial, skipMulti, nkv);
    else launchTiled<64, 2, ROPE, 1>(a, splits, partial, skipMulti, nkv);
  } else {
    if (one) launchTiled<128, 1, ROPE, 1>(a, splits, partial, skipMulti, nkv);
    else launchTiled<128, 2, ROPE, 1>(a, splits, partial, skipMulti, nkv);
  }
}

template <typename T, int VEC, int GMAX>
void launchGrouped(const AttnArgs& a, int splits, float* partial, int skipMulti) {
  // 8 warps x 4 keys: faster than 8 x 2 at all 9 decode shapes timed for 8-head groups (Qwen2.5-3B,
  // bench/results/cuda-attention-h200.json), the fastest of 8x2, 8x4, 4x4, 4x2 at 5 of them.
  constexpr int unroll = 4;
  const dim3 grid(static_cast<unsigned>(a.T), static_cast<unsigned>(a.Hkv), static_cast<unsigned>(splits));
  launchPdl(groupedDecodeKernel<T, VEC, GMAX, kWarps, unroll>, grid, dim3(kWarps * 32), 0, a.stream,
            static_cast<T*>(a.out), partial, static_cast<const T*>(a.q), static_cast<const T*>(a.kPool),
            static_cast<const T*>(a.vPool), a.cuSeqlensQ, a.contextLens, a.blockTables, a.S, a.H, a.Hkv, a.blockSize,
            a.maxBlocks, a.numBlocks, a.scale, splits, skipMulti);
  if (splits > 1) {
    const dim3 mergeGrid(static_cast<unsigned>(a.T), static_cast<unsigned>(a.H));
    launchPdl(mergeSplitsKernel<T>, mergeGrid, dim3(128), 0, a.stream, static_cast<T*>(a.out),
              static_cast<const float*>(partial), a.cuSeqlensQ, a.contextLens, a.S, a.H, a.D, splits, skipMulti);
  }
}

template <typename T, int VEC>
void dispatchGroup(const AttnArgs& a, int splits, float* partial, int skipMulti) {
  const int G = a.H / a.Hkv;
  if (G <= 1) launchGrouped<T, VEC, 1>(a, splits, partial, skipMulti);
  else if (G <= 2) launchGrouped<T, VEC, 2>(a, splits, partial, skipMulti);
  else if (G <= 4) launchGrouped<T, VEC, 4>(a, splits, partial, skipMulti);
  else launchGrouped<T, VEC, 8>(a, splits, partial, skipMulti);
}

template <int D>
void launchFlash(const AttnArgs& a) {
  auto kernel = flashPrefillKernel<D>;
  constexpr size_t bytes = PrefillSmem<D>::bytes;
  static bool granted = false;  // shared memory past 48 KiB must be asked for, once
  if (!granted) {
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
    granted = true;
  }
  const int G = a.H / a.Hkv;
  const long long tiles = CEIL_DIV(static_cast<long long>(a.T) * G, kTileQ) + a.S;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(a.Hkv));
  kernel<<<grid, kPrefillThreads, bytes, a.stream>>>(
      static_cast<__nv_bfloat16*>(a.out), static_cast<const __nv_bfloat16*>(a.q),
      static_cast<const __nv_bfloat16*>(a.kPool), static_cast<const __nv_bfloat16*>(a.vPool), a.cuSeqlensQ,
      a.contextLens, a.blockTables, a.S, a.H, a.Hkv, a.blockSize, a.maxBlocks, a.numBlocks, a.scale);
}

}  // namespace

// TANDEM_DECODE_MIN_SPLIT_KEYS: the fewest keys a context split of the decode kernels takes (a
// multiple of 32 from 32 to 8192; default kTileGroups tiles with grouped tiles, else
// kDefaultMinSplitKeys). Larger values run short contexts in fewer blocks with more tiles
// each (and skip the merge); for A/B runs.
int minSplitKeysFromEnv() {
  const char* v = std::getenv("TANDEM_DECODE_MIN_SPLIT_KEYS");
  if (v == nullptr || *v == '\0') return groupedTilesOn() ? kTileGroups * kTiledKeys : kDefaultMinSplitKeys;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < 32 || n > 8192 || n % 32 != 0) {
    throw Error(std::string("TANDEM_DECODE_MIN_SPLIT_KEYS must be a multiple of 32 from 32 to 8192, got '") + v + "'");
  }
  return static_cast<int>(n);
}

void attentionInit() {
  const int minSplitKeys = minSplitKeysFromEnv();
  if (minSplitKeys != kDefaultMinSplitKeys) cudaCheck(cudaMemcpyToSymbol(cMinSplitKeys, &minSplitKeys, sizeof(int)));
  if (envSwitchOff("TANDEM_DECODE_EARLY_LOADS")) {
    const int off = 0;
    cudaCheck(cudaMemcpyToSymbol(cEarlyLoads, &off, sizeof(int)));
  }
  if (envSwitchOff("TANDEM_DECODE_QK_PARTIALS")) {
    const int off = 0;
    cudaCheck(cudaMemcpyToSymbol(cQkPartials, &off, sizeof(int)));
  }
  if (envSwitchOff("TANDEM_DECODE_NEW_KV_WITH_Q")) {
    const int off = 0;
    cudaCheck(cudaMemcpyToSymbol(cNewKvWithQ, &off, sizeof(int)));
  }
}

bool attentionHeadDimSupported(int D) { return D == 32 || D == 64 || D == 128 || D == 256; }

namespace {

// The checks attention() and ropeAttentionDecode() share: dimensions, head dim, splits.
void checkAttentionArgs(const char* op, int S, int H, int Hkv, int D, int blockSize, int splits, bool grouped,
                        const void* workspace) {
  const std::string name(op);
  if (S <= 0 || Hkv <= 0 || H % Hkv != 0 || blockSize <= 0) throw Error(name + ": bad dimensions");
  if (H > 65535) throw Error(name + ": more than 65535 query heads");
  if (!attentionHeadDimSupported(D)) {
    throw Error(name + ": head dim " + std::to_string(D) + " is not supported (32, 64, 128 or 256)");
  }
  if (splits < 1 || splits > 64 || (splits > 1 && !grouped)) {
    throw Error(name + ": " + std::to_string(splits) + " context splits asked for; use attentionSplits()");
  }
  if (splits > 1 && workspace == nullptr) throw Error(name + ": split-K needs attentionWorkspaceBytes() of workspace");
}

}  // namespace

int attentionSplits(int T, int H, int Hkv, int D, int maxContextLen) {
  // Split when the unsplit grid leaves SMs idle, into chunks of at least the min split keys (the
  // device's splitChunk rounds up to them): a block's tiles run one after another, so at batch 1
  // four 32-key blocks and the merge beat one block of four tiles (7 us per layer at 128 keys on
  // an H100, bench/results/decode-replay-ab-2026-12-07-h100.json). The same grid a decode graph
  // planned for long contexts runs at short ones.
  static const int minKeys = minSplitKeysFromEnv();
  if (T <= 0 || Hkv <= 0 || !groupedSupported(H, Hkv, D) || maxContextLen <= minKeys) return 1;
  const int blocks = T * Hkv;
  const int sms = smCount();
  if (blocks >= sms) return 1;
  const int splits = min(CEIL_DIV(2 * sms, blocks), CEIL_DIV(maxContextLen, minKeys));
  return max(1, min(splits, 64));
}

size_t attentionWorkspaceBytes(int T, int H, int D, int splits) {
  return splits > 1 ? static_cast<size_t>(T) * H * splits * (D + 2) * sizeof(float) : 0;
}

void attention(void* out, const void* q, const void* kPool, const void* vPool, const int* cuSeqlensQ,
               const int* contextLens, const int* blockTables, int T, int S, int H, int Hkv, int D, int blockSize,
               int maxBlocks, int numBlocks, float scale, int dt, int maxSeqlenQ, int splits, void* workspace,
               cudaStream_t stream) {
  if (T == 0 || H == 0) return;
  const bool grouped = groupedSupported(H, Hkv, D);
  checkAttentionArgs("attention", S, H, Hkv, D, blockSize, splits, grouped, workspace);
  const AttnArgs a{out, q, kPool, vPool, cuSeqlensQ, contextLens, blockTables, T, S, H, Hkv, D, blockSize, maxBlocks,
                   numBlocks, scale, stream};
  const bool flash = maxSeqlenQ > 1 && flashSupported(dt, D);
  if (flash) {
    if (D == 64) launchFlash<64>(a);
    else launchFlash<128>(a);
    launchCheck();
  }
  const int skipMulti = flash ? 1 : 0;
  float* partial = static_cast<float*>(workspace);
  DISPATCH_FLOAT(dt, E, {
    if (grouped && dt == kBF16 && !tiledOff()) {
      dispatchTiled<false>(a, splits, partial, skipMulti, NewKv{});
    } else if (grouped) {
      if (D == 64) dispatchGroup<E, 2>(a, splits, partial, skipMulti);
      else dispatchGroup<E, 4>(a, splits, partial, skipMulti);
    } else {
      switch (D) {
        case 32: launchPerRow<E, 1>(a, skipMulti); break;
        case 64: launchPerRow<E, 2>(a, skipMulti); break;
        case 128: launchPerRow<E, 4>(a, skipMulti); break;
        default: launchPerRow<E, 8>(a, skipMulti); break;
      }
    }
  });
  launchCheck();
}

bool ropeAttentionDecode(void* out, const void* q, const void* k, const void* v, const int* positions,
                         const void* invFreq, int freqDt, void* kPool, void* vPool, const int* slots, int numSlots,
                         const int* cuSeqlensQ, const int* contextLens, const int* blockTables, int T, int S, int H,
                         int Hkv, int D, int blockSize, int maxBlocks, int numBlocks, float scale, int dt, int splits,
                         void* workspace, cudaStream_t stream) {
  // Only the tiled kernel has the fused form, and only one query row per sequence keeps every new
  // key inside the block that stores it.
  static const bool fusedOff = envSwitchOff("TANDEM_FUSED_ROPE_ATTENTION");
  if (fusedOff || dt != kBF16 || T != S || tiledOff() || !groupedSupported(H, Hkv, D)) return false;
  if (T == 0 || H == 0) return true;
  checkAttentionArgs("ropeAttentionDecode", S, H, Hkv, D, blockSize, splits, true, workspace);
  const AttnArgs a{out, q, kPool, vPool, cuSeqlensQ, contextLens, blockTables, T, S, H, Hkv, D, blockSize, maxBlocks,
                   numBlocks, scale, stream};
  const NewKv nkv{static_cast<const __nv_bfloat16*>(k), static_cast<const __nv_bfloat16*>(v), positions, invFreq,
                  freqDt, slots, numSlots};
  dispatchTiled<true>(a, splits, static_cast<float*>(workspace), 0, nkv);
  launchCheck();
  return true;
}

}  // namespace tandem
