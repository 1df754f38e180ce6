/*
The device sampler's draw cases that failed on an H100 on 2026-12-07 (bench/NOTES.md), as one
program without Node, so it can run alone and under compute-sanitizer:

  nvcc -std=c++17 -O3 -lineinfo -Ikernels -gencode=arch=compute_90,code=sm_90 bench/cuda-sampling-check.cu -o /tmp/sampling-check
  /tmp/sampling-check                                   exit 0: every case as the host predicts
  compute-sanitizer --tool racecheck /tmp/sampling-check
  compute-sanitizer --tool memcheck /tmp/sampling-check

Cases (what the host expects, computed here from the same Philox as src/backend/rng.ts):
  flat     8 rows of 2^16 equal logits, temperature 1: row s draws floor(u(s, step) * 2^16)
  min-p    400 rows of p = [0.08, 0.3, 0.07, 0.2, 0.25, 0.1], min-p 0.5: draws only {1, 3, 4}, each
  tied     300 rows of [0.5, 1, 1, 0.2, 1, 0.5, 0.5, -1] under top-p 0.5: only the three tied 1s
Each case runs with 1024-thread blocks, as tandem::sample launches them.
*/
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "../kernels/sampling.cu"

using namespace tandem;

namespace check {

struct Case {
  std::string name;
  int S, V;
  std::vector<float> logits;  // S x V
  std::vector<sampling::RowParams> params;
};

sampling::RowParams row(double temperature, double topP, double minP, unsigned seed, unsigned step) {
  return sampling::RowParams{temperature, topP, minP, 1.0, 0.0, 0.0, 0, 0, seed, 0u, step, 0u, 0, 0, -1, 0};
}

std::vector<int> run(const Case& c) {
  float* dLogits;
  sampling::RowParams* dParams;
  int* dOut;
  cudaCheck(cudaMalloc(&dLogits, c.logits.size() * 4));
  cudaCheck(cudaMalloc(&dParams, c.params.size() * sizeof(sampling::RowParams)));
  cudaCheck(cudaMalloc(&dOut, 8 * c.S));
  cudaCheck(cudaMemcpy(dLogits, c.logits.data(), c.logits.size() * 4, cudaMemcpyHostToDevice));
  cudaCheck(cudaMemcpy(dParams, c.params.data(), c.params.size() * sizeof(sampling::RowParams), cudaMemcpyHostToDevice));
  sample(dOut, reinterpret_cast<float*>(dOut + c.S), nullptr, nullptr, 0, dLogits, c.S, c.V, kF32, dParams, nullptr, nullptr,
         false, nullptr);
  cudaCheck(cudaDeviceSynchronize());
  std::vector<int> ids(c.S);
  cudaCheck(cudaMemcpy(ids.data(), dOut, 4 * c.S, cudaMemcpyDeviceToHost));
  cudaCheck(cudaFree(dLogits));
  cudaCheck(cudaFree(dParams));
  cudaCheck(cudaFree(dOut));
  return ids;
}

std::string list(const std::set<int>& s) {
  std::string out;
  for (int x : s) out += (out.empty() ? "" : ",") + std::to_string(x);
  return "{" + out + "}";
}

}  // namespace check

int main() {
  using namespace check;
  int failures = 0;

  {  // flat
    Case c{"flat 2^16", 8, 1 << 16, {}, {}};
    c.logits.assign(static_cast<size_t>(c.S) * c.V, 0.0f);
    for (int s = 0; s < c.S; s++) c.params.push_back(row(1.0, 1.0, 0.0, 17u * s + 1, s % 3));
    const std::vector<int> ids = run(c);
    int bad = 0;
    for (int s = 0; s < c.S; s++) {
      const auto& p = c.params[s];
      const int want = static_cast<int>(std::floor(sampling::philoxUniform(p.seedLo, p.seedHi, p.stepLo, p.stepHi) * c.V));
      if (ids[s] != want) {
        if (bad++ < 4) std::printf("  %s row %d: drew %d, expected %d\n", c.name.c_str(), s, ids[s], want);
      }
    }
    std::printf("%-12s %s (%d of %d rows differ)\n", c.name.c_str(), bad == 0 ? "ok" : "FAIL", bad, c.S);
    failures += bad > 0;
  }

  {  // min-p
    const double probs[6] = {0.08, 0.3, 0.07, 0.2, 0.25, 0.1};
    Case c{"min-p 0.5", 400, 6, {}, {}};
    for (int s = 0; s < c.S; s++) {
      for (double p : probs) c.logits.push_back(static_cast<float>(std::log(p)));
      c.params.push_back(row(1.0, 1.0, 0.5, s, 0));
    }
    const std::vector<int> ids = run(c);
    const std::set<int> seen(ids.begin(), ids.end());
    const bool ok = seen == std::set<int>{1, 3, 4};
    std::printf("%-12s %s (drew %s, expected {1,3,4})\n", c.name.c_str(), ok ? "ok" : "FAIL", list(seen).c_str());
    failures += !ok;
  }

  {  // tied under top-p
    const float row8[8] = {0.5f, 1, 1, 0.2f, 1, 0.5f, 0.5f, -1};
    Case c{"tied top-p", 300, 8, {}, {}};
    for (int s = 0; s < c.S; s++) {
      c.logits.insert(c.logits.end(), row8, row8 + 8);
      c.params.push_back(row(1.0, 0.5, 0.0, 77u + s, 1));
    }
    const std::vector<int> ids = run(c);
    const std::set<int> seen(ids.begin(), ids.end());
    // The three tied 1s hold 3e / (3e + 3e^0.5 + e^0.2 + e^-1) = 0.55 of the mass: top-p 0.5 keeps them.
    const bool ok = seen == std::set<int>{1, 2, 4};
    std::printf("%-12s %s (drew %s, expected {1,2,4})\n", c.name.c_str(), ok ? "ok" : "FAIL", list(seen).c_str());
    failures += !ok;
  }

  std::printf("%s\n", failures == 0 ? "all cases ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
