/*
Sampling on the device: one token per row of logits, so only ids and logprobs go to the host.
  logits is (S, V) f32 or bf16; params is (S) RowParams (src/backend/cuda/sampling-params.ts
  packs them); penalties holds each row's (id, output count) entries, ids ascending;
  pendingIds (or null) the previous step's ids, of which a row's `pending` index names one more
  output token for its penalties (the engine's async scheduling: the host has not seen it yet);
  ids (S) i32, logprobs (S) f32, topIds / topLogprobs (S, topStride) for rows asking for them.

The contract is the CPU sampler's (src/backend/cpu/sampling.ts, penalties.ts, top-logprobs.ts):
  penalties    on the raw logits: repetition (prompt and output), then frequency and presence
               (output counts), in the CPU's double arithmetic, rounded to f32;
  temperature 0   argmax of the penalised logits, lowest id on ties;
  otherwise    w = exp((x - max) / temperature), summed in double; top-k keeps the k first tokens of
               the order (value desc, id asc); top-p the shortest prefix whose weight reaches
               topP of the top-k set's (or the row's); min-p the tokens with w >= minP; the draw
               takes the first kept token whose cumulative weight exceeds u * (kept weight),
               u = uniformAt(seed, step) (Philox4x32-10, src/backend/rng.ts, bit for bit);
  logprobs     of the raw log-softmax at the chosen id, and the topLogprobs most likely raw
               tokens (ties by lower id).

One block of kThreads per row. Pass 1 takes the raw log-sum-exp and the penalised max and argmax
(the whole job of a greedy row). A sampled row then locates at most three positions of its
order (sampling-order.cuh): the k-th token (top-k, and the weight of the top-k set), the top-p
cut, and the draw; min-p needs none, its count and weight come with the histogram. Nothing sorts
the row: with top-k or without it, top-p on a 151936-token row costs a histogram pass and a
walk of one bin per position, plus up to four refinement passes where a bin is crowded (flat rows).

Penalised ids are marked in a bitmap in shared memory (V / 8 bytes), so the passes test one bit
per token and only marked tokens search the row's sorted entries.
*/
#include "sampling-order.cuh"

namespace tandem {
namespace sampling {

// The per-row parameters, 80 bytes; src/backend/cuda/sampling-params.ts writes this layout.
struct RowParams {
  double temperature;  // 0: greedy
  double topP;         // 1: off
  double minP;         // 0: off
  double repetition;   // 1: off
  double frequency;
  double presence;
  int topK;         // 0: off (the host maps k <= 0 and k >= V to 0)
  int topLogprobs;  // 0: none
  unsigned seedLo, seedHi, stepLo, stepHi;
  int penaltyOffset;  // first entry of the row in `penalties`
  int penaltyCount;
  int pending;  // index into pendingIds of one more output token the host has not seen, or -1
  int pad;
};
static_assert(sizeof(RowParams) == 88, "RowParams must match sampling-params.ts");

// uniformAt(seed, step) of src/backend/rng.ts: Philox4x32-10, key = seed, counter = (step, 0, 0).
__host__ __device__ inline float philoxUniform(unsigned seedLo, unsigned seedHi, unsigned stepLo, unsigned stepHi) {
  unsigned c0 = stepLo, c1 = stepHi, c2 = 0, c3 = 0, k0 = seedLo, k1 = seedHi;
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k0 += 0x9e3779b9u;
      k1 += 0xbb67ae85u;
    }
    const unsigned long long p0 = 0xd2511f53ull * c0;
    const unsigned long long p1 = 0xcd9e8d57ull * c2;
    c0 = static_cast<unsigned>(p1 >> 32) ^ c1 ^ k0;
    c1 = static_cast<unsigned>(p1);
    c2 = static_cast<unsigned>(p0 >> 32) ^ c3 ^ k1;
    c3 = static_cast<unsigned>(p0);
  }
  return static_cast<float>(c0 >> 8) * 5.9604644775390625e-8f;  // 2^-24
}

// ----------------------------------------------------------------------------
// CUDA kernels

template <int NT>
struct SampleShared {
  OrderShared<NT> order;
  float redF[64];
  int redI[32];
};

// The token drawn from a row with temperature > 0 and a finite max (see the file comment).
template <int NT, typename T>
__device__ int drawToken(const RowView<T>& view, OrderShared<NT>& sh, const RowParams& p) {
  int keptCount;
  double keptMass;
  const double total = histogramLevel0<NT>(view, sh, p.minP, &keptCount, &keptMass);
  int n = view.V;
  double mass = total;
  double topKMass = total;
  if (p.topK > 0) {
    const Found f = locate<NT>(view, sh, kCount, p.topK);
    n = p.topK;
    mass = topKMass = f.cum;
  }
  if (p.minP > 0 && keptCount < n) {
    n = keptCount;
    mass = keptMass;
  }
  if (p.topP < 1) {
    const double target = p.topP * topKMass;
    if (mass >= target) {
      const Found f = locate<NT>(view, sh, kMassGE, target);
      if (f.pos < n) {
        n = f.pos;
        mass = f.cum;
      }
    }
  }
  const double u = philoxUniform(p.seedLo, p.seedHi, p.stepLo, p.stepHi);
  Found f = locate<NT>(view, sh, kMassGT, u * mass);
  if (f.pos > n) f = locate<NT>(view, sh, kCount, n);  // only through rounding at the end
  return f.id;
}

// The K most likely raw tokens, best first, into outIds / outLogprobs.
template <int NT, typename T>
__device__ void topTokens(const RowView<T>& raw, OrderShared<NT>& sh, int K, float lse, int* outIds, float* outLogprobs) {
  int unusedC;
  double unusedM;
  histogramLevel0<NT>(raw, sh, 0.0, &unusedC, &unusedM);
  const Found kth = locate<NT>(raw, sh, kCount, K);
  const int t = threadIdx.x;
  if (t == 0) sh.ncand = 0;
  __syncthreads();
  const bool fits = kth.above + kth.tieCount <= NT;
  if (fits) {
    // Every token with the K-th key or a larger one fits: collect them, the sort orders the ties.
    for (int i = t; i < raw.V; i += NT) {
      const unsigned key = orderKey(raw.raw(i));
      if (key >= kth.key) sh.cand[atomicAdd(&sh.ncand, 1)] = sortKey(key, i);
    }
  } else {
    // Too many ties (a flat row): the larger keys land anywhere in [0, above), the first
    // tieRank ties after them in id order, through a scan in id order.
    int running = 0;
    for (int base = 0; base < raw.V; base += NT) {
      const int i = base + t;
      unsigned key = 0;
      if (i < raw.V) key = orderKey(raw.raw(i));
      const bool tie = i < raw.V && key == kth.key;
      if (i < raw.V && key > kth.key) sh.cand[atomicAdd(&sh.ncand, 1)] = sortKey(key, i);
      int chunk;
      const int rank = running + blockInclusiveScan<NT>(tie ? 1 : 0, sh.warpI, &chunk);
      if (tie && rank <= kth.tieRank) sh.cand[kth.above + rank - 1] = sortKey(key, i);
      running += chunk;
    }
  }
  __syncthreads();
  if (t >= (fits ? sh.ncand : K)) sh.cand[t] = ~0ull;
  __syncthreads();
  bitonicSort<NT>(sh.cand);
  if (t < K) {
    const int id = static_cast<int>(sh.cand[t] & 0xffffffffu);
    outIds[t] = id;
    outLogprobs[t] = toF(raw.x[id]) - lse;
  }
  __syncthreads();
}

template <typename T, int NT>
__global__ void __launch_bounds__(NT)
    sampleKernel(int* ids, float* logprobs, int* topIds, float* topLogprobs, int topStride, const T* logits, int V,
                 const RowParams* params, const PenaltyEntry* penalties, const int* pendingIds) {
  extern __shared__ float4 dynamicSmem[];  // the penalty bitmap, when any row has penalties
  __shared__ SampleShared<NT> sh;
  const int row = blockIdx.x;
  const int t = threadIdx.x;
  const RowParams p = params[row];
  const T* x = logits + static_cast<size_t>(row) * V;

  RowView<T> view{x, V, nullptr, penalties + p.penaltyOffset, p.penaltyCount, p.repetition, p.frequency, p.presence,
                  0.0, 1.0, 1.0};
  // The previous step's id of this row, kept on the device: one more output token to count.
  int pendingId = p.pending >= 0 && pendingIds != nullptr ? pendingIds[p.pending] : -1;
  if (pendingId >= V) pendingId = -1;
  view.pending = pendingId;
  if (p.penaltyCount > 0 || pendingId >= 0) {
    unsigned* bitmap = reinterpret_cast<unsigned*>(dynamicSmem);
    for (int i = t; i < (V + 31) / 32; i += NT) bitmap[i] = 0;
    __syncthreads();
    for (int e = t; e < p.penaltyCount; e += NT) {
      const int id = view.pen[e].id;
      atomicOr(&bitmap[id >> 5], 1u << (id & 31));
    }
    if (t == 0 && pendingId >= 0) atomicOr(&bitmap[pendingId >> 5], 1u << (pendingId & 31));
    __syncthreads();
    view.bitmap = bitmap;
  }

  // Pass 1: raw log-sum-exp (logprobs) and the penalised argmax, lowest id on ties.
  MaxSum raw{-INFINITY, 0.0f};
  float best = -INFINITY;
  int bestIdx = V;
  for (int i = t; i < V; i += NT) {
    const float r = view.raw(i);
    if (r > raw.m) {
      raw.s = raw.s * expf(raw.m - r) + 1.0f;
      raw.m = r;
    } else if (raw.m != -INFINITY) {
      raw.s += expf(r - raw.m);
    }
    const float v = view.bitmap == nullptr ? r : view.value(i);
    if (v > best || (bestIdx == V && v == best)) {
      best = v;
      bestIdx = i;
    }
  }
  raw = blockMaxSum(raw, sh.redF);
  const float lse = raw.m + logf(raw.s);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float v = __shfl_xor_sync(0xffffffffu, best, off);
    const int j = __shfl_xor_sync(0xffffffffu, bestIdx, off);
    if (v > best || (v == best && j < bestIdx)) {
      best = v;
      bestIdx = j;
    }
  }
  __syncthreads();
  if (t % 32 == 0) {
    sh.redF[t / 32] = best;
    sh.redI[t / 32] = bestIdx;
  }
  __syncthreads();
  best = sh.redF[0];
  bestIdx = sh.redI[0];
  for (int w = 1; w < NT / 32; w++) {
    if (sh.redF[w] > best || (sh.redF[w] == best && sh.redI[w] < bestIdx)) {
      best = sh.redF[w];
      bestIdx = sh.redI[w];
    }
  }
  __syncthreads();
  const int top = bestIdx < V ? bestIdx : 0;  // all -inf (or NaN): id 0, as the CPU argmax

  int chosen = top;
  if (p.temperature > 0 && best > -INFINITY && best < INFINITY) {
    view.m = best;
    view.temp = p.temperature;
    view.invTemp = 1.0 / p.temperature;
    chosen = drawToken<NT>(view, sh.order, p);
  }
  if (t == 0) {
    ids[row] = chosen;
    logprobs[row] = toF(x[chosen]) - lse;
  }
  if (p.topLogprobs > 0) {
    RowView<T> rawView{x, V, nullptr, nullptr, 0, 1.0, 0.0, 0.0, raw.m, 1.0, 1.0};
    const int K = min(p.topLogprobs, V);
    if (raw.m > -INFINITY && raw.m < INFINITY) {
      topTokens<NT>(rawView, sh.order, K, lse, topIds + static_cast<size_t>(row) * topStride,
                    topLogprobs + static_cast<size_t>(row) * topStride);
    } else if (t < K) {  // infinite max: ranks are meaningless; report the first tokens, as NaN
      topIds[static_cast<size_t>(row) * topStride + t] = t;
      topLogprobs[static_cast<size_t>(row) * topStride + t] = toF(x[t]) - lse;
    }
  }
}

// The uniform of each row, for checking the device's Philox against src/backend/rng.ts.
__global__ void uniformsKernel(float* out, const RowParams* params, int S) {
  const int row = blockIdx.x * blockDim.x + threadIdx.x;
  if (row < S) {
    const RowParams& p = params[row];
    out[row] = philoxUniform(p.seedLo, p.seedHi, p.stepLo, p.stepHi);
  }
}

}  // namespace sampling

// ----------------------------------------------------------------------------
// kernel launchers

namespace {
constexpr int kThreads = 1024;

template <typename T>
void launchSample(int* ids, float* logprobs, int* topIds, float* topLogprobs, int topStride, const void* logits, int S,
                  int V, const void* params, const void* penalties, const int* pendingIds, size_t bitmapBytes,
                  cudaStream_t stream) {
  auto kernel = sampling::sampleKernel<T, kThreads>;
  // Shared memory past 48 KiB must be asked for; remember what this kernel was granted.
  static size_t granted = 0;
  if (bitmapBytes > granted) {
    cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bitmapBytes)));
    granted = bitmapBytes;
  }
  kernel<<<S, kThreads, bitmapBytes, stream>>>(ids, logprobs, topIds, topLogprobs, topStride, static_cast<const T*>(logits),
                                              V, static_cast<const sampling::RowParams*>(params),
                                              static_cast<const sampling::PenaltyEntry*>(penalties), pendingIds);
}
}  // namespace

constexpr size_t kMaxBitmapBytes = size_t{160} << 10;  // + ~41 KiB static: two blocks fit an H100 SM

int sampleMaxTopLogprobs() { return kThreads; }

int sampleMaxPenaltyVocab() { return static_cast<int>(kMaxBitmapBytes * 8); }

size_t samplePenaltyBitmapBytes(int V) { return static_cast<size_t>((V + 31) / 32) * 4; }

void sample(int* ids, float* logprobs, int* topIds, float* topLogprobs, int topStride, const void* logits, int S, int V,
            int dt, const void* params, const void* penalties, const int* pendingIds, bool anyPenalties,
            cudaStream_t stream) {
  if (S == 0) return;
  if (V <= 0) throw Error("sample: empty vocabulary");
  const size_t bitmapBytes = anyPenalties ? samplePenaltyBitmapBytes(V) : 0;
  if (bitmapBytes > kMaxBitmapBytes) {
    throw Error("sample: penalties over a vocabulary of " + std::to_string(V) + " do not fit shared memory");
  }
  DISPATCH_FLOAT(dt, T,
                 launchSample<T>(ids, logprobs, topIds, topLogprobs, topStride, logits, S, V, params, penalties,
                                 pendingIds, bitmapBytes, stream));
  launchCheck();
}

void sampleUniforms(float* out, const void* params, int S, cudaStream_t stream) {
  if (S == 0) return;
  sampling::uniformsKernel<<<CEIL_DIV(S, 256), 256, 0, stream>>>(out, static_cast<const sampling::RowParams*>(params), S);
  launchCheck();
}

}  // namespace tandem
