/*
Order statistics over one row of logits, for one thread block of NT threads (sampling.cu).

The order: tokens by value descending, ties by lower id (value = the penalised logit, or the raw
one for top logprobs). Every sampling filter keeps a prefix of this order, and the draw picks one
position inside it, so a row is sampled by finding a few positions of the order, each given by
a count ("the k-th token") or by a cumulative weight ("the first token where the weight summed
along the order reaches / exceeds t"), with weight w = exp((value - max) / temperature), formed
in double (float for weights under e^-14, whose rounding cannot move a draw) and summed in double.

locate() finds such a position without sorting the row:
  level 0  a histogram pass puts every token in one of NT log-weight bins (kBinsPerNat bins per
           nat below the max, the last bin catching the rest) with its count and weight; the bins
           are a partition of the order into consecutive runs, so an inclusive scan of them says
           which bin holds the position, and what count and weight lie above it. This histogram
           is made once per row and serves every later position of that row.
  refine   while the bin (the window) holds more than NT tokens, a pass splits its key range into
           NT equal sub-ranges (keys are the values' bits in order) and keeps the one holding the
           position: at most four passes from 2^32 keys to one.
  walk     a window of <= NT tokens is collected into shared memory, bitonic-sorted by
           (value desc, id asc), its weights prefix-summed from the weight above it, and the
           thread whose token crosses the target reports it.
  ties     a window of more than NT tokens that all share one key (a flat row): the position
           among them is arithmetic, and the token is the j-th by id, found by a scan in id order.
Each pass reads the row once. A peaked row (the usual case) needs the histogram and one walk
per position; the row stays in L2 for the passes after the first.

Counts are exact; weight sums are double sums in an order other than the CPU sampler's
sequential one, so a draw can differ from the CPU's only where u sits within ~1e-15 of a
boundary (the conformance references flag draws within 1e-6 of one as ambiguous).
NaN logits are treated as -inf.
*/
#pragma once

#include "common.cuh"

namespace tandem {
namespace sampling {

constexpr double kBinsPerNat = 8.0;

// Value order as unsigned keys: larger key = larger value; -0 ties with +0; NaN counts as -inf.
__device__ __forceinline__ unsigned orderKey(float v) {
  unsigned b = __float_as_uint(v != v ? -INFINITY : v);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float keyValue(unsigned k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// (value desc, id asc) as one ascending 64-bit sort key.
__device__ __forceinline__ unsigned long long sortKey(unsigned key, int id) {
  return (static_cast<unsigned long long>(~key) << 32) | static_cast<unsigned>(id);
}

// One penalised token of a row: its id and how often the row's output holds it (0: prompt only).
struct PenaltyEntry {
  int id;
  int count;
};

// How a row's values and weights are computed: raw or penalised logits, max and temperature.
template <typename T>
struct RowView {
  const T* x;
  int V;
  const unsigned* bitmap;  // penalised ids (shared memory), or null: no penalties
  const PenaltyEntry* pen;
  int penCount;
  double repetition, frequency, presence;
  double m;     // the row's max value (the top token weighs exactly 1)
  double temp;  // temperature > 0
  double invTemp;
  int pending = -1;  // one more output token, not among the entries' counts (marked in the bitmap), or -1

  __device__ float raw(int i) const {
    const float v = toF(x[i]);
    return v != v ? -INFINITY : v;
  }

  // The CPU's penalties (src/backend/cpu/penalties.ts), in the same double arithmetic.
  __device__ float value(int i) const {
    float v = raw(i);
    if (bitmap == nullptr || ((bitmap[i >> 5] >> (i & 31)) & 1u) == 0) return v;
    int lo = 0, hi = penCount - 1;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (pen[mid].id < i) lo = mid + 1;
      else hi = mid;
    }
    // (a marked token without an entry is the pending one)
    int count = penCount > 0 && pen[lo].id == i ? pen[lo].count : 0;
    if (i == pending) count++;
    if (repetition != 1.0) {
      const double d = v;
      v = static_cast<float>(d > 0 ? d / repetition : d * repetition);
    }
    if (count > 0) v = static_cast<float>(static_cast<double>(v) - (frequency * count + presence));
    return v;
  }

  // log w: monotone in v, so everything derived from it keeps the order.
  __device__ double logWeight(float v) const { return (static_cast<double>(v) - m) * invTemp; }

  // Weights below e^-14 (~1e-6) in float: their rounding moves no draw, and the bulk of a
  // peaked row is there; the heavy few in double.
  __device__ double weight(float v) const {
    const double a = logWeight(v);
    return a < -14.0 ? static_cast<double>(expf(static_cast<float>(a))) : exp(a);
  }

  // Level-0 bin: kBinsPerNat per nat below the max, the last bin catching the rest (and NaN).
  __device__ int bin0(float v, int nb) const {
    const double d = -logWeight(v) * kBinsPerNat;
    return d < nb - 1 ? static_cast<int>(d) : nb - 1;
  }
};

// A window of the order: the tokens of level-0 bin `bin` whose keys lie in [klo, khi].
struct Window {
  int bin;
  unsigned klo, khi;
  int countAbove;     // tokens before the window in the order
  double massAbove;   // their weight
  int count;          // tokens in the window
};

enum Criterion : int {
  kCount = 0,   // the target-th token (1-based)
  kMassGE = 1,  // the first token whose cumulative weight >= target
  kMassGT = 2,  // the first token whose cumulative weight > target
};

// A located token: its 1-based position, id, key, cumulative weight through it, and how many
// tokens have a larger key (`above`) and its rank among the tokens sharing its key (`tieRank`).
struct Found {
  int pos;
  int id;
  unsigned key;
  double cum;
  int above;
  int tieRank;
  int tieCount;  // tokens sharing its key
};

template <int NT>
struct OrderShared {
  int l0Count[NT];  // level-0 histogram, inclusive-scanned in place
  double l0Mass[NT];
  int subCount[NT];  // refinement histogram, likewise
  double subMass[NT];
  unsigned long long cand[NT];  // a window's tokens, then sorted
  double candCum[NT];
  double warpD[32];
  int warpI[32];
  int found;
  int ncand;
  int first;
  int ties;
};

// ----------------------------------------------------------------------------
// block primitives (every thread of the block must call them)

// Inclusive scan of one value per thread; *total gets the block's sum.
template <int NT, typename V>
__device__ V blockInclusiveScan(V x, V* warpTotals, V* total) {
  constexpr int kWarps = NT / 32;
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const V y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();  // warpTotals may still be read by a previous scan
  if (lane == 31) warpTotals[warp] = x;
  __syncthreads();
  if (warp == 0) {
    V t = lane < kWarps ? warpTotals[lane] : V(0);
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const V y = __shfl_up_sync(0xffffffffu, t, o);
      if (lane >= o) t += y;
    }
    if (lane < kWarps) warpTotals[lane] = t;
  }
  __syncthreads();
  if (warp > 0) x += warpTotals[warp - 1];
  *total = warpTotals[kWarps - 1];
  return x;
}

// Ascending bitonic sort of NT keys in shared memory.
template <int NT>
__device__ void bitonicSort(unsigned long long* a) {
  const int i = threadIdx.x;
  for (int k = 2; k <= NT; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      const int p = i ^ j;
      if (p > i) {
        const unsigned long long x = a[i];
        const unsigned long long y = a[p];
        if ((x > y) == ((i & k) == 0)) {
          a[i] = y;
          a[p] = x;
        }
      }
      __syncthreads();
    }
  }
}

// Does the thread's bin (inclusive scans inc*, bin t, plus the base above them) hold the target?
__device__ __forceinline__ bool crosses(int kind, double target, int beforeC, int afterC, double beforeM, double afterM) {
  if (kind == kCount) return beforeC < target && target <= afterC;
  if (kind == kMassGE) return beforeM < target && target <= afterM;
  return beforeM <= target && target < afterM;
}

// The bin of scanned histogram (incC, incM) holding the target, as a window of level-0 bin `bin`
// (keys from `klo`, `khi` per bin via keyRange); falls back to the last non-empty bin (a target
// at the very end of the weight, past it by rounding).
template <int NT, typename KeyRange>
__device__ Window crossingWindow(OrderShared<NT>& sh, const int* incC, const double* incM, int countAbove,
                                 double massAbove, int kind, double target, KeyRange keyRange, int bin) {
  const int t = threadIdx.x;
  if (t == 0) sh.found = NT;
  __syncthreads();
  const int beforeC = countAbove + (t > 0 ? incC[t - 1] : 0);
  const int afterC = countAbove + incC[t];
  const double beforeM = massAbove + (t > 0 ? incM[t - 1] : 0.0);
  const double afterM = massAbove + incM[t];
  if (crosses(kind, target, beforeC, afterC, beforeM, afterM)) atomicMin(&sh.found, t);
  __syncthreads();
  if (sh.found == NT) {
    __syncthreads();
    if (t == 0) sh.found = -1;
    __syncthreads();
    if (afterC > beforeC) atomicMax(&sh.found, t);
    __syncthreads();
  }
  const int b = sh.found;
  Window w;
  w.bin = bin < 0 ? b : bin;
  keyRange(b, &w.klo, &w.khi);
  w.countAbove = countAbove + (b > 0 ? incC[b - 1] : 0);
  w.massAbove = massAbove + (b > 0 ? incM[b - 1] : 0.0);
  w.count = incC[b] - (b > 0 ? incC[b - 1] : 0);
  __syncthreads();  // everyone has read sh.found
  return w;
}

// ----------------------------------------------------------------------------
// passes

// A thread's run of consecutive tokens in one bin, added to the shared histogram in one go: a
// crowded bin (a flat row puts the whole vocabulary in one) would otherwise serialise the block
// on shared-memory atomics, which for doubles are compare-and-swap loops.
struct BinRun {
  int bin = -1;
  int count = 0;
  double mass = 0.0;

  __device__ void add(int b, double w, int* counts, double* masses) {
    if (b != bin) {
      flush(counts, masses);
      bin = b;
    }
    count++;
    mass += w;
  }

  __device__ void flush(int* counts, double* masses) {
    if (count > 0) {
      atomicAdd(&counts[bin], count);
      atomicAdd(&masses[bin], mass);
    }
    count = 0;
    mass = 0.0;
  }
};

// Level-0 histogram of the view into sh.l0Count / l0Mass, scanned; also the count and weight of
// tokens with w >= minW (min-p). Returns the total weight.
template <int NT, typename T>
__device__ double histogramLevel0(const RowView<T>& view, OrderShared<NT>& sh, double minW, int* keptCount,
                                  double* keptMass) {
  const int t = threadIdx.x;
  sh.l0Count[t] = 0;
  sh.l0Mass[t] = 0.0;
  __syncthreads();
  BinRun run;  // tokens far below the max pile into the last bins
  int nMin = 0;
  double mMin = 0.0;
  for (int i = t; i < view.V; i += NT) {
    const float v = view.value(i);
    const double w = view.weight(v);
    run.add(view.bin0(v, NT), w, sh.l0Count, sh.l0Mass);
    if (w >= minW) {
      nMin++;
      mMin += w;
    }
  }
  run.flush(sh.l0Count, sh.l0Mass);
  __syncthreads();
  int totalC;
  double totalM;
  const int c = blockInclusiveScan<NT>(sh.l0Count[t], sh.warpI, &totalC);
  const double m = blockInclusiveScan<NT>(sh.l0Mass[t], sh.warpD, &totalM);
  sh.l0Count[t] = c;
  sh.l0Mass[t] = m;
  int nMinAll;
  double mMinAll;
  blockInclusiveScan<NT>(nMin, sh.warpI, &nMinAll);
  blockInclusiveScan<NT>(mMin, sh.warpD, &mMinAll);
  *keptCount = nMinAll;
  *keptMass = mMinAll;
  __syncthreads();
  return totalM;
}

// Keys that level-0 bin b can hold, widened by two float ulps each side (the window test also
// checks the bin, so a wide range only costs precision, never correctness).
template <typename T>
__device__ void level0KeyRange(const RowView<T>& view, int b, int nb, unsigned* klo, unsigned* khi) {
  const float hi = static_cast<float>(view.m - b * view.temp / kBinsPerNat);
  *khi = orderKey(nextafterf(nextafterf(hi, INFINITY), INFINITY));
  if (b == nb - 1) {
    *klo = orderKey(-INFINITY);
  } else {
    const float lo = static_cast<float>(view.m - (b + 1) * view.temp / kBinsPerNat);
    *klo = orderKey(nextafterf(nextafterf(lo, -INFINITY), -INFINITY));
  }
  if (*klo > *khi) *klo = *khi;
}

template <typename T>
__device__ __forceinline__ bool inWindow(const RowView<T>& view, const Window& w, float v, unsigned key, int nb) {
  return key >= w.klo && key <= w.khi && view.bin0(v, nb) == w.bin;
}

// Sub-range j of [klo, khi] split into NT equal parts, sub-range 0 holding the largest keys.
template <int NT>
__device__ __forceinline__ int subIndex(const Window& w, unsigned key) {
  const unsigned long long span = static_cast<unsigned long long>(w.khi - w.klo) + 1;
  return static_cast<int>(static_cast<unsigned long long>(w.khi - key) * NT / span);
}

template <int NT>
__device__ __forceinline__ void subRange(const Window& w, int j, unsigned* klo, unsigned* khi) {
  const unsigned long long span = static_cast<unsigned long long>(w.khi - w.klo) + 1;
  const unsigned long long first = (static_cast<unsigned long long>(j) * span + NT - 1) / NT;
  const unsigned long long next = (static_cast<unsigned long long>(j + 1) * span + NT - 1) / NT;
  *khi = w.khi - static_cast<unsigned>(first);
  *klo = w.khi - static_cast<unsigned>(next - 1);
}

// One refinement pass: the sub-range of the window that holds the target.
template <int NT, typename T>
__device__ Window refine(const RowView<T>& view, OrderShared<NT>& sh, const Window& w, int kind, double target) {
  const int t = threadIdx.x;
  sh.subCount[t] = 0;
  sh.subMass[t] = 0.0;
  __syncthreads();
  BinRun run;
  for (int i = t; i < view.V; i += NT) {
    const float v = view.value(i);
    const unsigned key = orderKey(v);
    if (inWindow(view, w, v, key, NT)) run.add(subIndex<NT>(w, key), view.weight(v), sh.subCount, sh.subMass);
  }
  run.flush(sh.subCount, sh.subMass);
  __syncthreads();
  int totalC;
  double totalM;
  const int c = blockInclusiveScan<NT>(sh.subCount[t], sh.warpI, &totalC);
  const double m = blockInclusiveScan<NT>(sh.subMass[t], sh.warpD, &totalM);
  sh.subCount[t] = c;
  sh.subMass[t] = m;
  __syncthreads();
  return crossingWindow<NT>(sh, sh.subCount, sh.subMass, w.countAbove, w.massAbove, kind, target,
                            [&](int j, unsigned* lo, unsigned* hi) { subRange<NT>(w, j, lo, hi); }, w.bin);
}

// Collect a window of <= NT tokens, sort it, and find the target in it.
template <int NT, typename T>
__device__ Found walk(const RowView<T>& view, OrderShared<NT>& sh, const Window& w, int kind, double target) {
  const int t = threadIdx.x;
  if (t == 0) sh.ncand = 0;
  __syncthreads();
  for (int i = t; i < view.V; i += NT) {
    const float v = view.value(i);
    const unsigned key = orderKey(v);
    if (inWindow(view, w, v, key, NT)) sh.cand[atomicAdd(&sh.ncand, 1)] = sortKey(key, i);
  }
  __syncthreads();
  const int n = sh.ncand;
  if (t >= n) sh.cand[t] = ~0ull;
  __syncthreads();
  bitonicSort<NT>(sh.cand);
  const unsigned key = ~static_cast<unsigned>(sh.cand[t] >> 32);
  const double wt = t < n ? view.weight(keyValue(key)) : 0.0;
  double total;
  const double cum = w.massAbove + blockInclusiveScan<NT>(wt, sh.warpD, &total);
  sh.candCum[t] = cum;
  if (t == 0) sh.found = NT;
  __syncthreads();
  const double prev = t > 0 ? sh.candCum[t - 1] : w.massAbove;
  const int pos = w.countAbove + t + 1;
  if (t < n && crosses(kind, target, pos - 1, pos, prev, cum)) atomicMin(&sh.found, t);
  __syncthreads();
  const int f = sh.found < n ? sh.found : n - 1;  // past the end only by rounding: the last token
  const unsigned fkey = ~static_cast<unsigned>(sh.cand[f] >> 32);
  if (t == 0) sh.ties = 0;
  __syncthreads();
  if (t < n && key == fkey) {
    atomicAdd(&sh.ties, 1);
    if (t == 0 || ~static_cast<unsigned>(sh.cand[t - 1] >> 32) != fkey) sh.first = t;
  }
  __syncthreads();
  Found r;
  r.pos = w.countAbove + f + 1;
  r.id = static_cast<int>(sh.cand[f] & 0xffffffffu);
  r.key = fkey;
  r.cum = sh.candCum[f];
  r.above = w.countAbove + sh.first;
  r.tieRank = f - sh.first + 1;
  r.tieCount = sh.ties;
  __syncthreads();  // shared state is reused by the next call
  return r;
}

// The j-th token (1-based, by id) of a window whose tokens all share one key.
template <int NT, typename T>
__device__ int nthTieById(const RowView<T>& view, OrderShared<NT>& sh, const Window& w, int j) {
  const int t = threadIdx.x;
  if (t == 0) sh.found = 0;
  int running = 0;
  for (int base = 0; base < view.V && running < j; base += NT) {
    const int i = base + t;
    bool tie = false;
    if (i < view.V) {
      const float v = view.value(i);
      tie = inWindow(view, w, v, orderKey(v), NT);
    }
    int chunk;
    const int rank = running + blockInclusiveScan<NT>(tie ? 1 : 0, sh.warpI, &chunk);
    if (tie && rank == j) sh.found = i;
    running += chunk;
  }
  __syncthreads();
  const int id = sh.found;
  __syncthreads();
  return id;
}

template <int NT, typename T>
__device__ Found ties(const RowView<T>& view, OrderShared<NT>& sh, const Window& w, int kind, double target) {
  const double wt = view.weight(keyValue(w.klo));
  double j;
  if (kind == kCount) j = target - w.countAbove;
  else if (!(wt > 0)) j = w.count;
  else if (kind == kMassGE) j = ceil((target - w.massAbove) / wt);
  else j = floor((target - w.massAbove) / wt) + 1;
  const int jj = static_cast<int>(fmin(fmax(j, 1.0), static_cast<double>(w.count)));
  Found r;
  r.pos = w.countAbove + jj;
  r.id = nthTieById<NT>(view, sh, w, jj);
  r.key = w.klo;
  r.cum = w.massAbove + jj * wt;
  r.above = w.countAbove;
  r.tieRank = jj;
  r.tieCount = w.count;
  return r;
}

// The token at the target (see Criterion), given the scanned level-0 histogram of the view.
template <int NT, typename T>
__device__ Found locate(const RowView<T>& view, OrderShared<NT>& sh, int kind, double target) {
  Window w = crossingWindow<NT>(sh, sh.l0Count, sh.l0Mass, 0, 0.0, kind, target,
                                [&](int b, unsigned* lo, unsigned* hi) { level0KeyRange(view, b, NT, lo, hi); }, -1);
  while (w.count > NT && w.klo != w.khi) w = refine<NT>(view, sh, w, kind, target);
  return w.count > NT ? ties<NT>(view, sh, w, kind, target) : walk<NT>(view, sh, w, kind, target);
}

}  // namespace sampling
}  // namespace tandem
