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

/**
 * A row's penalty inputs counted: the distinct ids its penalties touch, ascending, each with its
 * count among the output tokens (0: in the prompt only, which only the repetition penalty reads).
 */
export interface PenaltyCounts {
  ids: Int32Array;
  counts: Int32Array;
}

/**
 * Output tokens not on the host yet, one per row at most (Backend.sample's `pending`): the engine
 * queues a step before the previous one's ids are back, and a penalised row must still count the
 * previous id.
 */
export interface PendingTokens {
  /** The previous step's ids, on the device (its sample()'s keepIds), i32. */
  ids: Tensor;
  /** Per row of this sample: the index into `ids` of the row's pending token, or -1 for none. */
  rows: Int32Array;
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
  /**
   * The same penalty inputs counted already (the engine keeps them per sequence, token by token):
   * when present, backends read this instead of outputTokens / promptTokens.
   */
  penaltyCounts?: PenaltyCounts;
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

/** Hyperparameters of one fused AdamW update (torch.optim.AdamW; see src/train/optimizer.ts). */
export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Optimizer step, counting from 1 (bias correction). */
  step: number;
  /** Multiplies every gradient before use: the clipping coefficient (1 when not clipped). */
  gradScale: number;
}

/** A captured sequence of device work (GraphOps.capture) and the tensor it leaves its result in. */
export interface CapturedGraph {
  readonly id: number;
  /** The work's result: valid after each replay() until free(), across resetScratch(). */
  readonly output: Tensor;
}

/**
 * Record device work once, replay it with one launch. Captured work must read its per-replay
 * inputs from persistent tensors (input(), rewritten with write() before replay()) and may not
 * upload, download or sample; its scratch comes from an arena the graph owns.
 */
export interface GraphOps {
  /** A persistent tensor for a graph's per-replay inputs. Ops skip host-side range checks on it: the caller validates. */
  input(shape: readonly number[], dtype: DType): Tensor;
  /** Run `work` once eagerly (sizing the graph's arena), then capture it. Its inputs must already hold valid data. */
  capture(work: () => Tensor): CapturedGraph;
  /** Queue one replay: the output then holds the work's result for the inputs written now. */
  replay(g: CapturedGraph): void;
  /** Free the graph and its arena; its output dies. */
  free(g: CapturedGraph): void;
}

/** One product of linearMany / linearSwiglu: a weight [N, K] and its optional bias [N]. */
export interface LinearPart {
  w: Tensor;
  bias?: Tensor;
}

/** The rmsnorm in front of normLinearMany / normLinearSwiglu: rmsnorm(x, w, eps, residual). */
export interface NormSpec {
  w: Tensor;
  eps: number;
  residual?: Tensor;
}

export interface Backend {
  readonly name: string;
  /** CUDA graph capture and replay, where the backend has it (cuda); absent on cpu. */
  readonly graphs?: GraphOps;
  /**
   * The dtype the model stores weights, activations, the KV cache and the training workspace in
   * on this backend ('f32' on cpu, 'bf16' on cuda). LoRA parameters, their gradients and Adam
   * moments stay f32 everywhere; backends that compute in one dtype (cpu) ignore dtypes.
   */
  readonly preferredDtype: DType;
  /**
   * Whether loaders place each layer's q, k and v weights (and their biases) one after another in
   * one allocation, so linearMany over them can run as one product (the CUDA backend
   * unless TANDEM_QKV_ONE_GEMM=0; the CPU backend always, which exercises the placement).
   */
  readonly jointProjections: boolean;
  /**
   * Whether ops only queue their work and return before it is done (a GPU stream: true on cuda),
   * so host work can run while the device computes. False where an op has computed its result
   * when it returns (cpu): nothing runs behind the host, so the engine's async scheduling is off
   * there by default (see EngineOptions.asyncScheduling).
   */
  readonly queuesWork: boolean;
  /**
   * The largest vocabulary whose penalised rows sample() draws on the device (keepIds and pending
   * need that); absent: any (cpu). The CUDA sampler marks penalised ids in a shared-memory bitmap.
   */
  readonly devicePenaltyVocab?: number;

  // ---- memory ----
  /**
   * Copy host data into a new tensor: persistent by default; 'scratch' for per-step inputs
   * (token ids, positions, block tables) that die at the next resetScratch(). f32 data may be
   * stored narrower (dtype).
   */
  upload(data: Float32Array | Int32Array, shape: readonly number[], dtype?: DType, lifetime?: Lifetime): Tensor;
  /** A zero-filled tensor. */
  alloc(shape: readonly number[], dtype: DType, lifetime: Lifetime): Tensor;
  /**
   * Overwrite an existing tensor's contents with host data of its element count (f32 data for
   * float tensors, i32 for i32 ones), queued in order with other device work: the inputs of a
   * replayed CUDA graph are rewritten this way before each replay.
   */
  write(t: Tensor, data: Float32Array | Int32Array): void;
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
  /**
   * x [T, K], w [N, K], bias [N] -> x @ w^T + bias : [T, N], in x's dtype unless `outDtype`
   * asks for another (f32 logits from bf16 activations). w may be stored wider than x (f32 LoRA
   * matrices with bf16 activations). Backends that compute in one dtype ignore dtypes.
   */
  linear(x: Tensor, w: Tensor, bias?: Tensor, outDtype?: DType): Tensor;
  /**
   * y [T, N] += alpha * x [T, K] @ w [N, K]^T in place (a LoRA branch's expand added to the base
   * projection): one product where the backend can, the sum rounded once into y's dtype. w may be
   * stored wider than x, as for linear().
   */
  linearAdd(y: Tensor, x: Tensor, w: Tensor, alpha: number): void;
  /**
   * linear(x, part.w, part.bias) for each part, in x's dtype: [T, N_i] each. A backend may run
   * them as one launch (q, k and v of a decode step).
   */
  linearMany(x: Tensor, parts: readonly LinearPart[]): Tensor[];
  /**
   * swiglu(linear(x, gate.w, gate.bias), linear(x, up.w, up.bias)) -> [T, F]: the first half of
   * the MLP. A backend may fuse it (one launch, no gate / up tensors), rounding the two products
   * to x's dtype before the SwiGLU as the unfused ops do.
   */
  linearSwiglu(x: Tensor, gate: LinearPart, up: LinearPart): Tensor;
  /**
   * rmsnorm(x, norm.w, norm.eps, norm.residual) then linearMany of its y: the products and the
   * norm's sum (the residual stream; x itself without a residual). A backend may fuse the norm
   * into the products (no y tensor), keeping rmsnorm's rounding.
   */
  normLinearMany(x: Tensor, norm: NormSpec, parts: readonly LinearPart[]): { outs: Tensor[]; sum: Tensor };
  /** rmsnorm then linearSwiglu of its y, as normLinearMany: the MLP's first half from the residual stream. */
  normLinearSwiglu(x: Tensor, norm: NormSpec, gate: LinearPart, up: LinearPart): { out: Tensor; sum: Tensor };
  /**
   * Rotary embedding in place, NeoX / Qwen half-rotation layout: for pair j < D/2 the
   * elements (j, j + D/2) rotate by angle positions[t] * invFreq[j].
   * q [T, H, D], k [T, Hkv, D], positions [T] i32, invFreq [D/2] f32 (from config.ts, so
   * rope scaling variants live in one place).
   */
  rope(q: Tensor, k: Tensor, positions: Tensor, invFreq: Tensor): void;
  /** Store k, v [T, Hkv, D] at cache slots slots[t] = block * blockSize + offset, layer `layer`. */
  writeKv(cache: KvCache, layer: number, k: Tensor, v: Tensor, slots: Tensor): void;
  /** rope(q, k, positions, invFreq), then writeKv(cache, layer, k, v, slots); one launch where the backend can. */
  ropeWriteKv(
    q: Tensor, k: Tensor, v: Tensor, positions: Tensor, invFreq: Tensor, cache: KvCache, layer: number, slots: Tensor,
  ): void;
  /** Causal GQA attention of q [T, H, D] over the paged cache (see AttnMeta) -> [T, H, D]. */
  attention(q: Tensor, cache: KvCache, layer: number, meta: AttnMeta, scale: number): Tensor;
  /**
   * ropeWriteKv(q, k, v, positions, invFreq, cache, layer, slots), then attention(q, cache, layer,
   * meta, scale): the output, and the cache as the two ops leave it, for any batch. A backend may
   * fuse them for decode batches (meta.maxSeqlenQ 1 and one row per sequence, so slots[t] holds
   * row t's last key), with the same bits; q and k may be left rotated or not.
   */
  ropeAttentionDecode(
    q: Tensor, k: Tensor, v: Tensor, positions: Tensor, invFreq: Tensor, cache: KvCache, layer: number, slots: Tensor,
    meta: AttnMeta, scale: number,
  ): Tensor;
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
   * keepIds (an i32 tensor of at least S elements): the ids are also stored there, on the device,
   * ahead of any op queued after this call returns; a backend that would draw these rows on the
   * host throws instead (nothing queued).
   * pending: one more output token per row that the host does not have yet (the previous step's
   * id, kept on the device by that step's keepIds), counted by the row's penalties; rows without
   * penalties ignore it. Same host-drawn rule as keepIds.
   */
  sample(logits: Tensor, params: readonly SamplingParams[], keepIds?: Tensor, pending?: PendingTokens): Promise<SampleResult>;
  /**
   * dst[slots[i]] = src[i] along the first dim, in place, for every i whose slot is a row of dst
   * (others, e.g. -1, are skipped); dst and src share dtype and row size, slots is [src rows] i32.
   * With sample()'s keepIds this feeds a step's sampled ids to the next step's tokens on the
   * device, the next step queued before the ids reach the host (the engine's async scheduling).
   */
  placeRows(dst: Tensor, src: Tensor, slots: Tensor): void;

  // ---- in-place helpers (any lifetime; used by LoRA and training) ----
  /**
   * A view of `shape` starting at element `offset` of t (no copy): a row range of a packed
   * batch, or one adapter matrix inside a flat parameter buffer. Same lifetime as t.
   */
  viewAt(t: Tensor, offset: number, shape: readonly number[]): Tensor;
  /** dst <- src, equal element counts (shapes may differ). */
  copy(dst: Tensor, src: Tensor): void;
  /** t <- 0 */
  zero(t: Tensor): void;
  /** y <- y + alpha * x, same element count. */
  axpy(y: Tensor, x: Tensor, alpha: number): void;

  // ---- backward and training ops (outputs are scratch unless written in place) ----
  /** Gradient of linear w.r.t. its input: dy [T, N], w [N, K] -> dy @ w : [T, K]. */
  linearBackwardInput(dy: Tensor, w: Tensor): Tensor;
  /** Gradient of linear w.r.t. its weight, accumulated: dw [N, K] += alpha * dy^T @ x, dy [T, N], x [T, K]. */
  linearBackwardWeight(dy: Tensor, x: Tensor, dw: Tensor, alpha: number): void;
  /** Gradient of y = rmsnorm(x, w, eps) w.r.t. x (w is frozen): dy, x [R, C], w [C] -> dx [R, C]. */
  rmsnormBackward(dy: Tensor, x: Tensor, w: Tensor, eps: number): Tensor;
  /** Gradient of rope: rotates dq [T, H, D] and dk [T, Hkv, D] back by the same angles, in place. */
  ropeBackward(dq: Tensor, dk: Tensor, positions: Tensor, invFreq: Tensor): void;
  /** Gradient of swiglu: dy, gate, up [.., F] -> dGate, dUp. */
  swigluBackward(dy: Tensor, gate: Tensor, up: Tensor): { dGate: Tensor; dUp: Tensor };
  /**
   * Causal GQA attention inside each packed sequence, without a KV cache (the training forward):
   * rows [cuSeqlens[s], cuSeqlens[s+1]) form sequence s, row i of it attends to rows 0..i of it.
   * q [T, H, D], k and v [T, Hkv, D], cuSeqlens [S+1] i32 -> out [T, H, D] and
   * lse [T, H] f32 = log-sum-exp of each row's scaled scores (kept for the backward).
   */
  attentionPacked(q: Tensor, k: Tensor, v: Tensor, cuSeqlens: Tensor, scale: number): { out: Tensor; lse: Tensor };
  /** Gradient of attentionPacked: dout [T, H, D] plus the forward's inputs and outputs -> dq, dk, dv. */
  attentionPackedBackward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    cuSeqlens: Tensor,
    scale: number,
  ): { dq: Tensor; dk: Tensor; dv: Tensor };
  /**
   * Log-probability of each row's target under softmax(logits / temperature):
   * logits [R, V], targets [R] i32 -> [R] f32. Callers pass a chunk of rows at a time, so no
   * [tokens, V] tensor is held for a whole batch.
   */
  tokenLogprobs(logits: Tensor, targets: Tensor, temperature: number): Tensor;
  /**
   * Gradient of sum_r dlogp[r] * tokenLogprobs(logits, targets, temperature)[r] w.r.t. logits:
   * (onehot(target) - softmax(logits / temperature)) * dlogp / temperature : [R, V].
   */
  tokenLogprobsBackward(logits: Tensor, targets: Tensor, temperature: number, dlogp: Tensor): Tensor;
  /** Rows of src [R, C] added into rows idx [R] of a zero [T, C] tensor (the adjoint of gatherRows: repeated indices sum). */
  scatterRows(src: Tensor, idx: Tensor, T: number): Tensor;
  /** Sum of squares of all elements as a [1] f32 tensor (NaN or Inf when any element is). */
  sumSquares(x: Tensor): Tensor;
  /** One AdamW update in place of param, m, v (all f32, equal sizes) from grad * h.gradScale. */
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWStep): void;
}
