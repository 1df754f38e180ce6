/*
Decode attention (and device sampling) timed with CUDA events, on Qwen2.5-3B shapes.

  nvcc -std=c++17 -O3 -Ikernels -gencode=arch=compute_90,code=sm_90 bench/cuda-attention.cu -o /tmp/attn-bench
  /tmp/attn-bench OUT_DIR CARD_TAG "COMMAND"     writes OUT_DIR/cuda-attention-TAG.json, cuda-sampling-TAG.json

Attention: H = 16, Hkv = 2, D = 128, bf16, block size 16, each sequence's blocks scattered over
the pool. For batch 1 / 64 / 256 x context 512 / 2048 / 8192: microseconds per call of
tandem::attention() as the backend calls it (split-K planned by attentionSplits()), next to the
floor = K/V bytes read / measured device copy bandwidth (the same run's cudaMemcpy D2D of 1 GiB);
the unsplit call and the per-(row, head) kernel alone (the previous implementation) for
comparison; a few (warps, unroll) variants of the grouped decode kernel; and checks that the
split-K output and the flash prefill output match the per-row kernel's.

Sampling: tandem::sample() on 151936-token f32 logits (N(0, 2) plus a few lifted tokens, the
shape of a language model's row), batch 1 / 64 / 256, greedy and sampled settings; the floor is
one read of the logits.

Kernels are compiled into this program (the .cu files are included), so it needs no Node.
*/
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../kernels/attention.cu"
#include "../kernels/sampling.cu"

using namespace tandem;

namespace bench {  // named: nvcc's kernel stubs trip over a second anonymous namespace

struct Result {
  std::string name;
  double value;
  std::string unit;
  double floor;  // < 0: none
};

__global__ void fillRandom(__nv_bfloat16* x, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    x[i] = __float2bfloat16_rn((h & 0xffff) / 32768.0f - 1.0f);
  }
}

__global__ void maxAbsDiff(const __nv_bfloat16* a, const __nv_bfloat16* b, size_t n, float* out) {
  float m = 0.0f;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    m = fmaxf(m, fabsf(__bfloat162float(a[i]) - __bfloat162float(b[i])));
  }
  m = warpMax(m);
  if (threadIdx.x % 32 == 0) atomicMax(reinterpret_cast<int*>(out), __float_as_int(m));  // m >= 0: int order
}

template <typename F>
double timeUs(F&& launch, int iters) {
  cudaEvent_t start, stop;
  cudaCheck(cudaEventCreate(&start));
  cudaCheck(cudaEventCreate(&stop));
  for (int i = 0; i < 3; i++) launch();
  cudaCheck(cudaEventRecord(start));
  for (int i = 0; i < iters; i++) launch();
  cudaCheck(cudaEventRecord(stop));
  cudaCheck(cudaEventSynchronize(stop));
  float ms = 0;
  cudaCheck(cudaEventElapsedTime(&ms, start, stop));
  cudaCheck(cudaEventDestroy(start));
  cudaCheck(cudaEventDestroy(stop));
  return 1000.0 * ms / iters;
}

double copyBandwidth() {
  const size_t bytes = size_t{1} << 30;
  void *a, *b;
  cudaCheck(cudaMalloc(&a, bytes));
  cudaCheck(cudaMalloc(&b, bytes));
  cudaCheck(cudaMemset(a, 1, bytes));
  const double us = timeUs([&] { cudaCheck(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 10);
  cudaCheck(cudaFree(a));
  cudaCheck(cudaFree(b));
  return 2.0 * bytes / (us * 1e-6);  // read + write
}

float deviceMaxDiff(const __nv_bfloat16* a, const __nv_bfloat16* b, size_t n) {
  float* d;
  cudaCheck(cudaMalloc(&d, 4));
  cudaCheck(cudaMemset(d, 0, 4));
  maxAbsDiff<<<256, 256>>>(a, b, n, d);
  float h = 0;
  cudaCheck(cudaMemcpy(&h, d, 4, cudaMemcpyDeviceToHost));
  cudaCheck(cudaFree(d));
  return h;
}

// A paged cache and metadata for S sequences of `ctx` tokens, `qlen` query rows each.
struct Batch {
  int S, ctx, qlen, T, maxBlocks, numBlocks;
  __nv_bfloat16 *k, *v, *q, *out, *ref;
  int *cu, *lens, *tables;
  float* workspace;
  size_t workspaceBytes;
};

constexpr int H = 16, Hkv = 2, D = 128, kBlock = 16;

Batch makeBatch(int S, int ctx, int qlen, std::mt19937& rng) {
  Batch b{};
  b.S = S;
  b.ctx = ctx;
  b.qlen = qlen;
  b.T = S * qlen;
  b.maxBlocks = CEIL_DIV(ctx, kBlock);
  b.numBlocks = S * b.maxBlocks;
  const size_t pool = static_cast<size_t>(b.numBlocks) * kBlock * Hkv * D;
  cudaCheck(cudaMalloc(&b.k, pool * 2));
  cudaCheck(cudaMalloc(&b.v, pool * 2));
  cudaCheck(cudaMalloc(&b.q, static_cast<size_t>(b.T) * H * D * 2));
  cudaCheck(cudaMalloc(&b.out, static_cast<size_t>(b.T) * H * D * 2));
  cudaCheck(cudaMalloc(&b.ref, static_cast<size_t>(b.T) * H * D * 2));
  fillRandom<<<1024, 256>>>(b.k, pool, 1);
  fillRandom<<<1024, 256>>>(b.v, pool, 2);
  fillRandom<<<1024, 256>>>(b.q, static_cast<size_t>(b.T) * H * D, 3);
  std::vector<int> perm(b.numBlocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int> cu(S + 1), lens(S, ctx);
  for (int s = 0; s <= S; s++) cu[s] = s * qlen;
  cudaCheck(cudaMalloc(&b.cu, 4 * (S + 1)));
  cudaCheck(cudaMalloc(&b.lens, 4 * S));
  cudaCheck(cudaMalloc(&b.tables, 4 * b.numBlocks));
  cudaCheck(cudaMemcpy(b.cu, cu.data(), 4 * (S + 1), cudaMemcpyHostToDevice));
  cudaCheck(cudaMemcpy(b.lens, lens.data(), 4 * S, cudaMemcpyHostToDevice));
  cudaCheck(cudaMemcpy(b.tables, perm.data(), 4 * b.numBlocks, cudaMemcpyHostToDevice));
  b.workspaceBytes = attentionWorkspaceBytes(b.T, H, D, 64);
  cudaCheck(cudaMalloc(&b.workspace, b.workspaceBytes));
  return b;
}

void freeBatch(Batch& b) {
  for (void* p : {static_cast<void*>(b.k), static_cast<void*>(b.v), static_cast<void*>(b.q), static_cast<void*>(b.out),
                  static_cast<void*>(b.ref), static_cast<void*>(b.cu), static_cast<void*>(b.lens),
                  static_cast<void*>(b.tables), static_cast<void*>(b.workspace)}) {
    cudaCheck(cudaFree(p));
  }
}

void callAttention(const Batch& b, __nv_bfloat16* out, int splits) {
  attention(out, b.q, b.k, b.v, b.cu, b.lens, b.tables, b.T, b.S, H, Hkv, D, kBlock, b.maxBlocks, b.numBlocks,
            1.0f / sqrtf(D), kBF16, b.qlen, splits, b.workspace, nullptr);
}

void callPerRow(const Batch& b, __nv_bfloat16* out) {
  pagedAttentionKernel<__nv_bfloat16, 4, 8, 4><<<dim3(b.T, H), 256>>>(out, b.q, b.k, b.v, b.cu, b.lens, b.tables, b.S, H,
                                                                     Hkv, kBlock, b.maxBlocks, b.numBlocks,
                                                                     1.0f / sqrtf(D), 0);
}

template <int WARPS, int UNROLL>
void callVariant(const Batch& b, int splits) {
  groupedDecodeKernel<__nv_bfloat16, 4, 8, WARPS, UNROLL><<<dim3(b.T, Hkv, splits), WARPS * 32>>>(
      b.out, b.workspace, b.q, b.k, b.v, b.cu, b.lens, b.tables, b.S, H, Hkv, kBlock, b.maxBlocks, b.numBlocks,
      1.0f / sqrtf(D), splits, 0);
  if (splits > 1) mergeSplitsKernel<__nv_bfloat16><<<dim3(b.T, H), 128>>>(b.out, b.workspace, b.cu, b.lens, b.S, H, D, splits, 0);
}

void attentionBench(std::vector<Result>& results, double bandwidth) {
  std::mt19937 rng(7);
  std::printf("%-34s %9s %9s %9s %9s %7s | variants (warps x unroll) us\n", "decode attention", "us", "floor", "unsplit",
              "per-row", "%floor");
  for (int S : {1, 64, 256}) {
    for (int ctx : {512, 2048, 8192}) {
      Batch b = makeBatch(S, ctx, 1, rng);
      const int splits = attentionSplits(b.T, H, Hkv, D, ctx);
      const double bytes = 2.0 * S * ctx * Hkv * D * 2;
      const double floorUs = bytes / bandwidth * 1e6;
      const int iters = S * ctx >= 256 * 2048 ? 20 : 100;
      const double us = timeUs([&] { callAttention(b, b.out, splits); }, iters);
      const double unsplit = timeUs([&] { callAttention(b, b.out, 1); }, iters);
      const double perRow = timeUs([&] { callPerRow(b, b.ref); }, iters);
      callAttention(b, b.out, splits);
      callPerRow(b, b.ref);
      const float diff = deviceMaxDiff(b.out, b.ref, static_cast<size_t>(b.T) * H * D);
      const double v82 = timeUs([&] { callVariant<8, 2>(b, splits); }, iters);
      const double v84 = timeUs([&] { callVariant<8, 4>(b, splits); }, iters);
      const double v44 = timeUs([&] { callVariant<4, 4>(b, splits); }, iters);
      const double v42 = timeUs([&] { callVariant<4, 2>(b, splits); }, iters);
      const std::string tag = "batch " + std::to_string(S) + " ctx " + std::to_string(ctx);
      std::printf("%-26s (s=%2d) %9.2f %9.2f %9.2f %9.2f %6.0f%% | 8x2 %.2f 8x4 %.2f 4x4 %.2f 4x2 %.2f | diff %.2g\n",
                  tag.c_str(), splits, us, floorUs, unsplit, perRow, 100 * floorUs / us, v82, v84, v44, v42, diff);
      results.push_back({"decode attention " + tag + " (split-K " + std::to_string(splits) + ")", us, "us", floorUs});
      results.push_back({"decode attention " + tag + " unsplit", unsplit, "us", floorUs});
      results.push_back({"decode attention " + tag + " per-(row, head) kernel", perRow, "us", floorUs});
      results.push_back({"decode attention " + tag + " grouped 8 warps x unroll 4", v84, "us", floorUs});
      results.push_back({"decode attention " + tag + " grouped 4 warps x unroll 4", v44, "us", floorUs});
      results.push_back({"decode attention " + tag + " grouped 4 warps x unroll 2", v42, "us", floorUs});
      results.push_back({"decode attention " + tag + " max |planned - per-row|", diff, "abs", -1});
      freeBatch(b);
    }
  }
  for (int S : {1, 4}) {
    const int len = S == 1 ? 2048 : 512;
    Batch b = makeBatch(S, len, len, rng);
    const double us = timeUs([&] { callAttention(b, b.out, 1); }, 10);
    const double perRow = timeUs([&] { callPerRow(b, b.ref); }, 10);
    callAttention(b, b.out, 1);
    callPerRow(b, b.ref);
    const float diff = deviceMaxDiff(b.out, b.ref, static_cast<size_t>(b.T) * H * D);
    const double flops = 4.0 * S * (len * (len + 1.0) / 2) * H * D;  // QK^T and PV over the causal half
    const std::string tag = std::to_string(S) + " x " + std::to_string(len) + " tokens";
    std::printf("prefill %-26s flash %9.1f us (%.0f TFLOP/s), per-row %9.1f us, diff %.2g\n", tag.c_str(), us,
                flops / us * 1e-6, perRow, diff);
    results.push_back({"prefill attention " + tag + " flash", us, "us", -1});
    results.push_back({"prefill attention " + tag + " per-(row, head) kernel", perRow, "us", -1});
    results.push_back({"prefill attention " + tag + " max |flash - per-row|", diff, "abs", -1});
    freeBatch(b);
  }
}

void samplingBench(std::vector<Result>& results, double bandwidth) {
  const int V = 151936;
  const int maxS = 256;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> logits(static_cast<size_t>(maxS) * V);
  for (size_t i = 0; i < logits.size(); i++) logits[i] = normal(rng);
  for (int s = 0; s < maxS; s++) {
    for (int j = 0; j < 20; j++) logits[static_cast<size_t>(s) * V + rng() % V] = 8.0f + 0.3f * j;
  }
  float* dLogits;
  cudaCheck(cudaMalloc(&dLogits, logits.size() * 4));
  cudaCheck(cudaMemcpy(dLogits, logits.data(), logits.size() * 4, cudaMemcpyHostToDevice));
  sampling::RowParams* dParams;
  int* dOut;
  cudaCheck(cudaMalloc(&dParams, maxS * sizeof(sampling::RowParams)));
  cudaCheck(cudaMalloc(&dOut, 8 * maxS + 8 * maxS * 20));
  struct Setting {
    const char* name;
    double temperature, topP, minP;
    int topK, topLogprobs;
  };
  const Setting settings[] = {{"greedy", 0, 1, 0, 0, 0},
                              {"T 0.7 top-p 0.9", 0.7, 0.9, 0, 0, 0},
                              {"T 1 top-k 50 top-p 0.95", 1, 0.95, 0, 50, 0},
                              {"T 1 unfiltered", 1, 1, 0, 0, 0},
                              {"T 1 min-p 0.05 + 20 top logprobs", 1, 1, 0.05, 0, 20}};
  std::printf("\n%-40s %10s %10s %10s   (floor: one read of the logits)\n", "sampling, V = 151936", "batch 1", "batch 64",
              "batch 256");
  for (const Setting& st : settings) {
    std::printf("%-40s", st.name);
    for (int S : {1, 64, 256}) {
      std::vector<sampling::RowParams> ps(S);
      for (int s = 0; s < S; s++) {
        ps[s] = sampling::RowParams{st.temperature, st.topP, st.minP, 1.0, 0.0, 0.0, st.topK, st.topLogprobs,
                                    static_cast<unsigned>(s), 0u, 5u, 0u, 0, 0, -1, 0};
      }
      cudaCheck(cudaMemcpy(dParams, ps.data(), S * sizeof(sampling::RowParams), cudaMemcpyHostToDevice));
      const double us = timeUs(
          [&] {
            sample(dOut, reinterpret_cast<float*>(dOut + S), dOut + 2 * S, reinterpret_cast<float*>(dOut + 2 * S + 20 * S),
                   20, dLogits, S, V, kF32, dParams, nullptr, nullptr, false, nullptr);
          },
          20);
      const double floorUs = 4.0 * S * V / bandwidth * 1e6;
      std::printf(" %7.1f us", us);
      results.push_back({std::string("sample ") + st.name + " batch " + std::to_string(S), us, "us", floorUs});
    }
    std::printf("\n");
  }
  cudaCheck(cudaFree(dLogits));
  cudaCheck(cudaFree(dParams));
  cudaCheck(cudaFree(dOut));
}

void writeJson(const std::string& path, const std::string& card, const std::string& command, double bandwidth,
               const std::vector<Result>& results) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw Error("cannot write " + path);
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  std::fprintf(f, "{\n  \"card\": \"%s\",\n  \"date\": \"%s\",\n  \"command\": \"%s\",\n  \"results\": [\n", card.c_str(),
               date, command.c_str());
  std::fprintf(f, "    {\"name\": \"device copy bandwidth (cudaMemcpy D2D, read + write)\", \"value\": %.4g, \"unit\": \"GB/s\"}",
               bandwidth / 1e9);
  for (const Result& r : results) {
    std::fprintf(f, ",\n    {\"name\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"", r.name.c_str(), r.value, r.unit.c_str());
    if (r.floor >= 0) std::fprintf(f, ", \"floor\": %.6g", r.floor);
    std::fprintf(f, "}");
  }
  std::fprintf(f, "\n  ]\n}\n");
  std::fclose(f);
}

}  // namespace bench

int main(int argc, char** argv) {
  using namespace bench;
  try {
    const std::string outDir = argc > 1 ? argv[1] : ".";
    const std::string tag = argc > 2 ? argv[2] : "gpu";
    const std::string command = argc > 3 ? argv[3] : "";
    cudaDeviceProp prop{};
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    const double bandwidth = copyBandwidth();
    std::printf("%s, %d SMs, copy bandwidth %.0f GB/s\n\n", prop.name, prop.multiProcessorCount, bandwidth / 1e9);
    std::vector<Result> attn, samp;
    attentionBench(attn, bandwidth);
    samplingBench(samp, bandwidth);
    writeJson(outDir + "/cuda-attention-" + tag + ".json", prop.name, command, bandwidth, attn);
    writeJson(outDir + "/cuda-sampling-" + tag + ".json", prop.name, command, bandwidth, samp);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
