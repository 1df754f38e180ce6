/*
Host launchers of every kernel, callable from plain C++ (binding.cpp). Each enqueues its work on
`stream` and returns at once; each throws tandem::Error on a CUDA or cuBLAS failure, naming
file:line. Pointers are device pointers; dtype arguments are tandem::DType codes. Shapes are
row-major and follow src/backend/backend.ts (T tokens, H/Hkv heads, D head dim, C hidden, ...).
*/
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <stdexcept>
#include <string>

namespace tandem {

// Storage dtypes, as the TS wrapper numbers them.
enum DType : int { kF32 = 0, kBF16 = 1, kI32 = 2 };

inline size_t dtypeBytes(int dt) { return dt == kBF16 ? 2 : 4; }

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// gather.cu: out[r] = src[idx[r]] for rows of rowBytes bytes; an index outside [0, rows)
// gives a zero row (the TS wrapper rejects those beforehand when it knows the indices).
void gatherRows(void* out, const void* src, const int* idx, int R, int rows, size_t rowBytes, cudaStream_t stream);
// gather.cu: pool[slots[t]] = rows[t] for T rows of rowBytes bytes; slots outside [0, numSlots) are skipped.
void scatterRows(void* pool, const void* rows, const int* slots, int T, int numSlots, size_t rowBytes, cudaStream_t stream);
// gather.cu: src (T, sum of bytes[i]) holds `count` (1-3) column blocks side by side; outs[i] (T, bytes[i])
// receives block i (a product over weights laid out one after another, split into its parts).
void splitColumns(void* const* outs, const size_t* bytes, int count, const void* src, int T, cudaStream_t stream);

// rmsnorm.cu: x, residual, sum, y are (R, C); w is (C). With residual (non-null), sum = x + residual
// (rounded to dt) is normalised and stored; without, sum is not written.
void rmsnorm(void* y, void* sum, const void* x, const void* residual, const void* w, float eps, int R, int C, int dt,
             cudaStream_t stream);

// elementwise.cu: n elements each.
void swiglu(void* out, const void* gate, const void* up, size_t n, int dt, cudaStream_t stream);
void add(void* out, const void* a, const void* b, size_t n, int dt, cudaStream_t stream);
void cast(void* out, int outDt, const void* x, int xDt, size_t n, cudaStream_t stream);

// rope.cu: q (T, H, D) and k (T, Hkv, D) rotated in place; positions (T) i32; invFreq (D/2) of freqDt.
void rope(void* q, void* k, const int* positions, const void* invFreq, int freqDt, int T, int H, int Hkv, int D, int dt,
          cudaStream_t stream);
// rope.cu: rope(q, k), then k and v (T, Hkv, D) stored at slots[t] of one layer's pools (numSlots, Hkv, D) of dt.
void ropeWriteKv(void* q, void* k, const void* v, const int* positions, const void* invFreq, int freqDt, void* kPool,
                 void* vPool, const int* slots, int numSlots, int T, int H, int Hkv, int D, int dt, cudaStream_t stream);

// attention.cu: out and q are (T, H, D); kPool, vPool one layer's (numBlocks, blockSize, Hkv, D);
// cuSeqlensQ (S+1), contextLens (S), blockTables (S, maxBlocks) i32, as AttnMeta describes.
// D must be one of attentionHeadDimSupported's. maxSeqlenQ > 1 sends multi-row sequences to the
// flash prefill kernel (bf16, D 64 / 128). Decode rows split their context in `splits` chunks
// (attentionSplits() chooses; > 1 needs attentionWorkspaceBytes() of device workspace).
// attention.cu: once at init, the decode kernels' settings from the environment
// (TANDEM_DECODE_MIN_SPLIT_KEYS).
void attentionInit();
bool attentionHeadDimSupported(int D);
int attentionSplits(int T, int H, int Hkv, int D, int maxContextLen);
size_t attentionWorkspaceBytes(int T, int H, int D, int splits);
void attention(void* out, const void* q, const void* kPool, const void* vPool, const int* cuSeqlensQ,
               const int* contextLens, const int* blockTables, int T, int S, int H, int Hkv, int D, int blockSize,
               int maxBlocks, int numBlocks, float scale, int dt, int maxSeqlenQ, int splits, void* workspace,
               cudaStream_t stream);
// attention.cu: ropeWriteKv(q, k, v, ...) then attention(out, q, ...) in one kernel, for decode batches
// (one query row per sequence: T == S, row t's new token is its last key, stored at slots[t]).
// Returns false, launching nothing, where the fused kernel does not apply (not bf16, T != S, head
// dim other than 64 / 128, more than 8 query heads per KV head, TANDEM_TILED_DECODE=0 or
// TANDEM_FUSED_ROPE_ATTENTION=0): the caller
// runs the two ops. q is not rotated in place (it may be left as it was).
bool ropeAttentionDecode(void* out, const void* q, const void* k, const void* v, const int* positions,
                         const void* invFreq, int freqDt, void* kPool, void* vPool, const int* slots, int numSlots,
                         const int* cuSeqlensQ, const int* contextLens, const int* blockTables, int T, int S, int H,
                         int Hkv, int D, int blockSize, int maxBlocks, int numBlocks, float scale, int dt, int splits,
                         void* workspace, cudaStream_t stream);

// softmax.cu: out (S, V) f32 = log_softmax(x (S, V)).
void logSoftmax(float* out, const void* x, int S, int V, int dt, cudaStream_t stream);
// softmax.cu: per row of logits (S, V): ids[s] = argmax (lowest id on ties), logprobs[s] = its log-softmax;
// keep (S) i32 or null: the ids also stored there (Backend.sample's keepIds). workspace:
// greedySampleWorkspaceBytes(S, V) bytes of device memory (few rows of a large vocabulary split
// each row over several blocks), or null where that is 0.
size_t greedySampleWorkspaceBytes(int S, int V);
void greedySample(int* ids, int* keep, float* logprobs, const void* logits, int S, int V, int dt, void* workspace,
                  cudaStream_t stream);

// sampling.cu: one token per row of logits (S, V) on the device. params holds S RowParams (88 bytes
// each, packed by src/backend/cuda/sampling-params.ts), penalties the rows' (id, count) entries;
// ids (S) i32, logprobs (S) f32, topIds / topLogprobs (S, topStride). pendingIds (or null): the
// previous step's ids; a row's pending index names one more output token its penalties count.
// anyPenalties: some row has entries or a pending token (the kernel then keeps a V-bit bitmap in
// shared memory, V <= sampleMaxPenaltyVocab()). Rows ask for at most sampleMaxTopLogprobs() top logprobs.
int sampleMaxTopLogprobs();
int sampleMaxPenaltyVocab();
size_t samplePenaltyBitmapBytes(int V);
void sample(int* ids, float* logprobs, int* topIds, float* topLogprobs, int topStride, const void* logits, int S, int V,
            int dt, const void* params, const void* penalties, const int* pendingIds, bool anyPenalties,
            cudaStream_t stream);
// sampling.cu: out (S) f32 = the uniform uniformAt(seed, step) of each row of params (a check hook).
void sampleUniforms(float* out, const void* params, int S, cudaStream_t stream);

// gemv.cu: decode-sized products (T <= kGemvMaxRows rows of x), bf16 x and w, fp32 accumulation.
// Each returns false, doing nothing, when the operands don't suit it (then use linear()).
constexpr int kGemvMaxRows = 4;  // measured: at 8 rows cuBLASLt wins (bench/decode-replay.ts, H100)
struct GemvPart {
  void* out;         // (T, N) of the call's outDt
  const void* w;     // (N, K) bf16
  const void* bias;  // (N) of biasDt, or null
  int biasDt;
  int N;
};
// An rmsnorm fused in front (bf16): the products read y = rmsnorm(x + residual) instead of their
// x, and sum (T, K) receives x + residual when residual is given (rmsnorm()'s rounding exactly).
struct GemvNorm {
  const void* x;
  const void* residual;  // or null
  const void* w;         // (K)
  void* sum;             // (T, K), with a residual
  float eps;
};
// Up to 3 products of one x (T, K): parts[i].out = x @ parts[i].w^T + parts[i].bias, one launch.
// norm (or null): x is norm->x, normalised first.
bool gemvMany(const GemvPart* parts, int count, int outDt, const void* x, int xwDt, int T, int K, const GemvNorm* norm,
              cudaStream_t stream);
// out (T, N) += alpha * x @ w^T in place (out of outDt, read and rounded once).
bool gemvAdd(void* out, int outDt, const void* x, const void* w, int xwDt, float alpha, int T, int K, int N,
             cudaStream_t stream);
// out (T, N) = silu(x @ gate.w^T + gate.bias) * (x @ up.w^T + up.bias), both products rounded to xwDt
// first; out has xwDt (gate.out and up.out are ignored). norm as for gemvMany.
bool gemvSwiglu(void* out, const void* x, const GemvPart& gate, const GemvPart& up, int xwDt, int T, int K,
                const GemvNorm* norm, cudaStream_t stream);

// linear.cu: out (T, N) = x (T, K) @ w (N, K)^T + bias (N), fp32 accumulation.
// x and w share xwDt; out has outDt; bias (may be null) has biasDt.
void linearInit();
void linear(void* out, int outDt, const void* x, const void* w, int xwDt, const void* bias, int biasDt, int T, int K,
            int N, cudaStream_t stream);
// out (T, N) += alpha * x (T, K) @ w (N, K)^T in place, fp32 accumulation, out read and rounded once
// (a LoRA branch's expand added to the base output): gemvAdd at decode sizes, else cuBLASLt with
// beta = 1. False, doing nothing, where neither takes it (unaligned operands, no cuBLASLt): then
// linear() into scratch and axpy.
bool linearAdd(void* out, int outDt, const void* x, const void* w, int xwDt, float alpha, int T, int K, int N,
               cudaStream_t stream);
// Bytes of device memory the linear layer keeps for itself (cuBLASLt workspace).
size_t linearWorkspaceBytes();

}  // namespace tandem
