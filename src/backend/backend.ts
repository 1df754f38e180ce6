/**
 * The Backend contract: the only code that computes on tensors lives behind it.
 *
 * Shapes are row-major. Names used in shape comments:
 *   T tokens in a packed batch, S sequences, H / Hkv query / key-value heads, D head dim,
 *   C hidden size, F MLP width, V vocabulary, K / N a linear layer's input / output width.
 *
 * Memory rules (see DESIGN.md):
 * - `upload` and `alloc(..., 'persistent')` make long-lived tensors (weights, KV pool,
 *   adapters, optimizer state). They live until `free`.
 * - Every op output is a scratch tensor taken from the backend's arena. `resetScratch()`
 *   (after each step / micro-batch) invalidates all of them at once; using a scratch tensor
 *   after a reset is an error, not silent garbage.
 *
 * Every backend (cpu now, cuda later) implements this same contract and passes the same
 * conformance suite (test/backend/*.test.ts). The model never touches a TypedArray of
 * activations; it only calls these ops.
 */

export type DType = 'f32' | 'bf16' | 'f16' | 'i32';

/** An opaque handle. Backends attach their own storage; callers only read shape/dtype. */
export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Name of the backend that owns it ('cpu', 'cuda'); mixing backends is an error. */
  readonly backend: string;
}

export type Lifetime = 'persistent' | 'scratch';

/** Paged KV cache: per layer, K and V pools of [numBlocks, blockSize, Hkv, D]. */
export interface KvCacheSpec {
  numLayers: number;
  numBlocks: number;
  blockSize: number;
  numKvHeads: number;
  headDim: number;
  dtype: DType;
}

export interface KvCache {
  readonly spec: KvCacheSpec;
  readonly backend: string;
}

/**
 * Describes a packed batch for attention. Sequence s owns query rows
 * [cuSeqlensQ[s], cuSeqlensQ[s+1]) of q; those are its *last* qlen tokens, so query row i of
 * sequence s sits at position contextLens[s] - qlen_s + i and attends causally to cache
 * positions [0, that position]. Decode is the case qlen_s = 1; prefill of a fresh sequence is
 * qlen_s = contextLens[s]; prefill after a cached prefix is anything in between.
 * Cache position p of sequence s lives in block blockTables[s, floor(p / blockSize)] at
 * offset p % blockSize. Unused block-table entries must be -1 or any valid block.
 */
export interface AttnMeta {
  cuSeqlensQ: Tensor; // [S+1] i32
  contextLens: Tensor; // [S] i32
  blockTables: Tensor; // [S, maxBlocksPerSeq] i32
  /** Largest qlen in the batch and largest context, for kernels that size grids by them. */
  maxSeqlenQ: number;
  maxContextLen: number;
}

/** Per-row sampling parameters. A row is greedy when temperature is 0. */
export interface SamplingParams {
  temperature: number; // 0 = greedy (argmax)
  topK: number; // <= 0 or >= V: disabled
  topP: number; // 1: disabled
  minP: number; // 0: disabled
  /** Seed of the row's random stream; with `step` it fully determines the draw. */
  seed: number;
  /** Index of this draw in the row's stream (usually the number of tokens generated so far). */
  step: number;
  /**
   * Penalties, applied to the raw logits before temperature (vLLM / OpenAI semantics):
   * logit -= frequencyPenalty * count + presencePenalty * (count > 0), counting `outputTokens`;
   * repetitionPenalty (HF/CTRL) divides positive and multiplies negative logits of every token
   * in `promptTokens` or `outputTokens`. Defaults: 0, 0, 1 (off).
   */
  presencePenalty?: number;
  frequencyPenalty?: number;
  repetitionPenalty?: number;
  /** Tokens generated so far by this row (penalties). */
  outputTokens?: readonly number[];
  /** The row's prompt (repetition penalty only). */
  promptTokens?: readonly number[];
  /** Also return this many most likely tokens with their logprobs (0 or absent: none). */
  topLogprobs?: number;
}

export interface SampleResult {
  ids: Int32Array; // [S]
  /** log-softmax of the raw logits (temperature 1, no filtering) at the chosen ids: [S]. */
  logprobs: Float32Array;
  /**
   * Per row, the topLogprobs most likely tokens under the same raw log-softmax, most likely
   * first (ties: lower id first); an empty list for rows that asked for none.
   */
  top: { ids: Int32Array; logprobs: Float32Array }[];
}

export interface Backend {
  readonly name: string;

  // ---- memory ----
  /**
   * Copy host data into a new tensor: persistent by default; 'scratch' for per-step inputs
   * (token ids, positions, block tables) that die at the next resetScratch(). f32 data may be
   * stored narrower (dtype).
   */
  upload(data: Float32Array | Int32Array, shape: readonly number[], dtype?: DType, lifetime?: Lifetime): Tensor;
  /** A zero-filled tensor. */
  alloc(shape: readonly number[], dtype: DType, lifetime: Lifetime): Tensor;
  /** Read a tensor back to the host as f32 (float dtypes) or i32. Never blocks the event loop. */
  download(t: Tensor): Promise<Float32Array | Int32Array>;
  /** Release a persistent tensor. */
  free(t: Tensor): void;
  /** Invalidate every scratch tensor and recycle their memory. */
  resetScratch(): void;
  /** The same data seen with another shape of equal element count (no copy). */
  view(t: Tensor, shape: readonly number[]): Tensor;
  /** Bytes held, by category, for metrics. */
  memoryUsage(): Record<string, number>;

  // ---- KV cache ----
  allocKvCache(spec: KvCacheSpec): KvCache;
  freeKvCache(cache: KvCache): void;

  // ---- forward ops (outputs are scratch) ----
  /** ids [T] i32, table [V, C] -> [T, C] */
  embedding(ids: Tensor, table: Tensor): Tensor;
  /**
   * RMSNorm over the last dim: y = x / sqrt(mean(x^2) + eps) * w.
   * With `residual`, first forms sum = x + residual and normalises that, returning both
   * (the fused add + norm of a pre-norm transformer block). x [.., C], w [C].
   */
  rmsnorm(x: Tensor, w: Tensor, eps: number, residual?: Tensor): { y: Tensor; sum: Tensor };
  /** x [T, K], w [N, K], bias [N] -> x @ w^T + bias : [T, N] */
  linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor;
  /**
   * Rotary embedding in place, NeoX / Qwen half-rotation layout: for pair j < D/2 the
   * elements (j, j + D/2) rotate by angle positions[t] * invFreq[j].
   * q [T, H, D], k [T, Hkv, D], positions [T] i32, invFreq [D/2] f32 (from config.ts, so
   * rope scaling variants live in one place).
   */
  rope(q: Tensor, k: Tensor, positions: Tensor, invFreq: Tensor): void;
  /** Store k, v [T, Hkv, D] at cache slots slots[t] = block * blockSize + offset, layer `layer`. */
  writeKv(cache: KvCache, layer: number, k: Tensor, v: Tensor, slots: Tensor): void;
  /** Causal GQA attention of q [T, H, D] over the paged cache (see AttnMeta) -> [T, H, D]. */
  attention(q: Tensor, cache: KvCache, layer: number, meta: AttnMeta, scale: number): Tensor;
  /** silu(gate) * up, both [T, F] -> [T, F] */
  swiglu(gate: Tensor, up: Tensor): Tensor;
  /** a + b, same shape */
  add(a: Tensor, b: Tensor): Tensor;
  /** Rows idx [R] i32 of x [T, C] -> [R, C] */
  gatherRows(x: Tensor, idx: Tensor): Tensor;
  /** log-softmax over the last dim, x [S, V] -> [S, V] */
  logSoftmax(x: Tensor): Tensor;
  /**
   * One token per row of logits [S, V] under per-row params. Filters apply in Hugging Face's
   * order: divide by temperature, keep the top-k, keep the smallest prefix of the remaining
   * tokens (renormalised, sorted by probability, ties by lower id) whose mass reaches top-p,
   * drop tokens whose probability is below min-p times the top probability; then draw with a
   * uniform number that is a pure function of (seed, step), so a seed gives the same tokens
   * whatever else shares the batch and on every backend.
   */
  sample(logits: Tensor, params: readonly SamplingParams[]): Promise<SampleResult>;
}
