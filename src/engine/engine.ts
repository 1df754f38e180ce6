/**
 * The serving engine: continuous batching over a paged KV cache with prefix caching.
 *
 * add() validates a request and returns its event stream; the engine's own step loop runs while
 * any request is live. A step is: schedule (scheduler.ts) -> one Transformer.forward over the
 * packed batch -> one backend.sample over the rows that reached their last token -> outputs
 * (output.ts) -> events. Between steps the loop yields to the event loop (setImmediate), so
 * HTTP handlers, aborts and new requests get in between any two steps.
 *
 * LoRA adapters (adapters.ts): a request may name a loaded adapter; its sequence pins the current
 * version when added, and each step's batch is grouped by version so that every version is one
 * contiguous LoRA segment of the forward.
 *
 * Sampling is reproducible per request: row params carry the request's seed and step = tokens
 * generated so far, and the backend's draw is a pure function of (seed, step), so a request
 * gets the same tokens alone, batched with others, or after preemption and recompute.
 */
import type { Backend, KvCache, SampleResult, SamplingParams } from '../backend/backend.ts';
import type { LoadedModel } from '../model/load.ts';
import { packBatch } from '../model/transformer.ts';
import { Metrics } from '../metrics.ts';
import { AdapterRegistry, type AdapterVersion } from './adapters.ts';
import { KvBlockManager } from './kv-cache.ts';
import { OutputProcessor, TokenTexts, type SampledToken } from './output.ts';
import { DeviceQueue } from '../backend/device-queue.ts';
import { RequestStream } from './request-stream.ts';
import { validateRequest } from './validate.ts';
import { Scheduler, type ScheduledSeq, type StepPlan } from './scheduler.ts';
import { Sequence } from './sequence.ts';
import { DecodeGraphs } from './decode-graphs.ts';
import { EngineError, type EngineStats, type FinishReason, type GenerationRequest, type TokenEvent } from './types.ts';

export interface EngineOptions {
  /** Tokens per KV block (default 16). */
  blockSize: number;
  /** KV pool size in blocks. */
  numBlocks: number;
  /** Running sequences at most (e.g. 256). */
  maxNumSeqs: number;
  /** Tokens per step, prefill chunks and decodes together (e.g. 2048). */
  maxNumBatchedTokens: number;
  /** Waiting requests at most; beyond it add() throws EngineError('queue_full'). */
  maxWaiting: number;
  /** Default: the model's max_position_embeddings. */
  maxModelLen?: number;
  /** Where the engine reports; default a fresh Metrics of its own (engine.metrics). */
  metrics?: Metrics;
  /**
   * Shared with a trainer on the same backend: each step's device work runs as one slice of
   * it, so steps and training slices take turns (default: a queue of the engine's own).
   */
  deviceQueue?: DeviceQueue;
  /**
   * Replay all-decode, base-model steps as CUDA graphs per batch-size bucket (decode-graphs.ts);
   * needs a backend with graphs (cuda). Default off.
   */
  cudaGraphs?: boolean;
}

export interface EngineStatsDetail extends EngineStats {
  /** Free blocks that still hold a reusable prefix (not counted in kvBlocksUsed). */
  kvBlocksCachedFree: number;
}

/** A live request: its sequence, its stream and its output state. */
interface Live {
  seq: Sequence;
  stream: RequestStream;
  output: OutputProcessor;
  detachSignal: () => void;
}

const nowSeconds = (): number => performance.now() / 1000;

export class Engine {
  readonly maxModelLen: number;
  readonly options: EngineOptions;
  readonly metrics: Metrics;
  /** The order of device work on this engine's backend (share it with a trainer). */
  readonly deviceQueue: DeviceQueue;
  /** The LoRA adapters requests can name; publish() into it to hot-swap a version. */
  readonly adapters: AdapterRegistry;

  readonly #backend: Backend;
  readonly #cache: KvCache;
  readonly #blocks: KvBlockManager;
  readonly #scheduler: Scheduler;
  readonly #texts: TokenTexts;
  readonly #live = new Map<string, Live>();
  #prefixQueries = 0;
  #prefixHits = 0;
  #looping = false;
  #draining = false;
  #closed = false;
  #idleWaiters: (() => void)[] = [];
  #inStep = false;
  #unpinAfterStep: AdapterVersion[] = [];
  readonly #graphs: DecodeGraphs | null;

  constructor(
    readonly loaded: LoadedModel,
    opts: EngineOptions,
  ) {
    const maxPositions = loaded.config.maxPositionEmbeddings;
    const maxModelLen = opts.maxModelLen ?? maxPositions;
    positiveInt('blockSize', opts.blockSize);
    positiveInt('numBlocks', opts.numBlocks);
    positiveInt('maxNumSeqs', opts.maxNumSeqs);
    positiveInt('maxNumBatchedTokens', opts.maxNumBatchedTokens);
    if (!Number.isInteger(opts.maxWaiting) || opts.maxWaiting < 0) throw new Error(`engine option maxWaiting must be an integer >= 0, got ${opts.maxWaiting}`);
    positiveInt('maxModelLen', maxModelLen);
    if (maxModelLen > maxPositions) {
      throw new Error(`engine option maxModelLen ${maxModelLen} exceeds the model's max_position_embeddings ${maxPositions}`);
    }
    this.options = { ...opts };
    this.maxModelLen = maxModelLen;
    this.#backend = loaded.model.backend;
    this.deviceQueue = opts.deviceQueue ?? new DeviceQueue(this.#backend);
    this.#blocks = new KvBlockManager(opts.numBlocks, opts.blockSize);
    this.#scheduler = new Scheduler(this.#blocks, opts);
    this.#cache = this.#backend.allocKvCache(loaded.model.kvCacheSpec(opts.numBlocks, opts.blockSize));
    this.#texts = new TokenTexts(loaded.tokenizer);
    this.#graphs = opts.cudaGraphs
      ? new DecodeGraphs(loaded.model, this.#cache, { blockSize: opts.blockSize, numBlocks: opts.numBlocks, maxModelLen, maxNumSeqs: opts.maxNumSeqs })
      : null;
    this.adapters = new AdapterRegistry(this.#backend, loaded.config);
    this.metrics = opts.metrics ?? new Metrics();
    this.metrics.bind({
      stats: () => this.stats(),
      memoryUsage: () => this.#backend.memoryUsage(),
      adapterUsage: () => this.adapters.usage(),
    });
  }

  /**
   * Validate (synchronously: EngineError 'model_not_found', 'invalid_request',
   * 'context_length_exceeded', 'out_of_capacity', 'queue_full', 'shutting_down') and queue a
   * request, pinning its adapter's current version. The returned stream
   * yields its events; leaving the iteration early aborts the request and frees its blocks.
   */
  add(req: GenerationRequest): AsyncIterable<TokenEvent> {
    if (this.#draining || this.#closed) throw new EngineError('shutting_down', 'the server is shutting down and takes no new requests; retry on another instance');
    const adapter = this.#adapterOf(req);
    validateRequest(req, { live: (id) => this.#live.has(id), vocabSize: this.loaded.config.vocabSize, maxModelLen: this.maxModelLen, blocks: this.#blocks });
    if (this.#scheduler.waiting.length >= this.options.maxWaiting) {
      throw new EngineError('queue_full', `the request queue is full (${this.options.maxWaiting} waiting); retry later`);
    }
    const s = req.sampling;
    const seq = new Sequence(
      req.requestId,
      req.promptIds,
      req.maxTokens,
      {
        temperature: s.temperature,
        topK: s.topK,
        topP: s.topP,
        minP: s.minP,
        seed: s.seed ?? Math.floor(Math.random() * 2 ** 32),
        presencePenalty: s.presencePenalty,
        frequencyPenalty: s.frequencyPenalty,
        repetitionPenalty: s.repetitionPenalty,
        topLogprobs: req.logprobs ?? 0,
      },
      req.priority,
      nowSeconds(),
      adapter,
    );
    const stream = new RequestStream(() => this.abort(req.requestId));
    const output = new OutputProcessor(this.loaded.tokenizer, this.#texts, {
      stop: req.stop,
      logprobs: req.logprobs,
      skipSpecialTokens: req.skipSpecialTokens,
      maxTokens: req.maxTokens,
      eosTokenIds: this.loaded.tokenizer.eosTokenIds,
    });
    const live: Live = { seq, stream, output, detachSignal: () => {} };
    if (adapter) this.adapters.pin(adapter); // unpinned by #end, however the request ends
    this.#live.set(req.requestId, live);
    this.#scheduler.add(seq);
    const signal = req.signal;
    if (signal) {
      const onAbort = () => this.abort(req.requestId);
      signal.addEventListener('abort', onAbort, { once: true });
      live.detachSignal = () => signal.removeEventListener('abort', onAbort);
      if (signal.aborted) this.abort(req.requestId);
    }
    this.#kick();
    return stream;
  }

  /** End a live request now: its blocks are freed and its stream ends with finishReason 'abort'. */
  abort(requestId: string): void {
    const live = this.#live.get(requestId);
    if (!live) return;
    this.#finish(live, { tokenIds: [], text: '', finishReason: 'abort', stopReason: null });
  }

  /** Abort every live request. */
  abortAll(): void {
    for (const id of [...this.#live.keys()]) this.abort(id);
  }

  stats(): EngineStatsDetail {
    return {
      running: this.#scheduler.running.length,
      waiting: this.#scheduler.waiting.length,
      kvBlocksUsed: this.#blocks.numUsed,
      kvBlocksTotal: this.#blocks.numBlocks,
      kvBlocksCachedFree: this.#blocks.numCachedFree,
      prefixCacheHits: this.#prefixHits,
      prefixCacheQueries: this.#prefixQueries,
    };
  }

  /** Stop admitting (add() throws 'shutting_down'); resolves once every live request has ended. */
  drain(): Promise<void> {
    this.#draining = true;
    return this.#whenIdle();
  }

  /** Abort everything, wait for an in-flight step, and free the KV cache. The engine is unusable after. */
  async close(): Promise<void> {
    this.#closed = true;
    this.abortAll();
    await this.#whenIdle();
    this.#graphs?.free();
    this.#backend.freeKvCache(this.#cache);
    this.adapters.unloadAll();
  }

  // ---- validation ----

  /** The current version of the request's adapter (null: base model). */
  #adapterOf(req: GenerationRequest): AdapterVersion | null {
    const name = req.adapter;
    if (name === undefined || name === null) return null;
    const v = typeof name === 'string' ? this.adapters.get(name) : undefined;
    if (v) return v;
    const loaded = this.adapters.list().map((a) => `'${a.name}'`);
    throw new EngineError(
      'model_not_found',
      `The model '${String(name)}' does not exist: no adapter of that name is loaded (loaded: ${loaded.length > 0 ? loaded.join(', ') : 'none'}).`,
      'model',
    );
  }

  // ---- the step loop ----

  #kick(): void {
    if (this.#looping || !this.#scheduler.hasWork()) return;
    this.#looping = true;
    setImmediate(() => void this.#loop());
  }

  async #loop(): Promise<void> {
    try {
      while (this.#scheduler.hasWork()) {
        this.#inStep = true;
        try {
          await this.#step();
        } catch (err) {
          // #step handles its own failures; this is the last line against a hung request.
          for (const live of [...this.#live.values()]) this.#fail(live, err);
        } finally {
          this.#inStep = false;
          for (const v of this.#unpinAfterStep.splice(0)) this.adapters.unpin(v);
        }
        if (this.#scheduler.hasWork()) await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      this.#looping = false;
      this.#settleIfIdle();
    }
  }

  async #step(): Promise<void> {
    const started = performance.now();
    let plan: StepPlan;
    try {
      plan = this.#scheduler.schedule(started / 1000);
    } catch (err) {
      // The scheduler's state can't be trusted after a bug: end everything rather than hang.
      for (const live of [...this.#live.values()]) this.#fail(live, err);
      return;
    }
    this.#recordAdmissions(plan);
    plan.scheduled = groupByAdapter(plan.scheduled);
    if (plan.scheduled.length === 0) {
      // add() rejects requests that can never fit, so an empty plan with work left is a bug.
      const head = this.#scheduler.waiting[0] ?? this.#scheduler.running[0];
      const live = head && this.#live.get(head.requestId);
      if (live) this.#fail(live, new Error(`engine: nothing could be scheduled for ${head.requestId} (${this.#blocks.numFree} of ${this.#blocks.numBlocks} KV blocks free)`));
      return;
    }
    const sampleAt = plan.scheduled.flatMap((s, i) => (s.sample ? [i] : []));
    let result: SampleResult | null = null;
    try {
      result = await this.deviceQueue.run(() => this.#forwardAndSample(plan, sampleAt));
    } catch (err) {
      // (the device queue reset the scratch arena when the slice ended)
      this.#failPlan(plan, err);
      return;
    }
    try {
      this.#scheduler.completeStep(plan);
      sampleAt.forEach((i, row) => {
        const seq = plan.scheduled[i].seq;
        if (seq.status !== 'running') return; // aborted while the step ran
        this.#emitToken(seq, { id: result!.ids[row], logprob: result!.logprobs[row], top: result!.top[row] });
      });
    } catch (err) {
      this.#failPlan(plan, err);
    }
    this.metrics.stepDone((performance.now() - started) / 1000);
  }

  /** Fail the plan's requests that are still live (a request aborted meanwhile has ended). */
  #failPlan(plan: StepPlan, err: unknown): void {
    for (const { seq } of plan.scheduled) {
      const live = this.#live.get(seq.requestId);
      if (live && live.seq === seq) this.#fail(live, err);
    }
  }

  /** One forward over the plan's batch; logits and sampling only for rows at their last token. */
  async #forwardAndSample(plan: StepPlan, sampleAt: number[]): Promise<SampleResult | null> {
    const params = (): SamplingParams[] => sampleAt.map((i) => plan.scheduled[i].seq.samplingParams());
    if (this.#graphs && this.#graphable(plan, sampleAt)) {
      const rows = plan.scheduled.map(({ seq }) => ({ token: seq.tokens[seq.numComputed], position: seq.numComputed, blockTable: seq.blockTable }));
      return this.#backend.sample(this.#graphs.run(rows), params());
    }
    const batch = packBatch(
      plan.scheduled.map(({ seq, numTokens }) => ({
        newTokens: seq.tokens.slice(seq.numComputed, seq.numComputed + numTokens),
        numCached: seq.numComputed,
        blockTable: seq.blockTable,
        lora: seq.adapter?.lora ?? null,
      })),
      this.#blocks.blockSize,
    );
    // packBatch gives one logit row per sequence (its last new token); a prefill chunk that is
    // not the last needs none. With no row to sample, keep one so the lm head sees a batch.
    const rows = sampleAt.length > 0 ? sampleAt : [0];
    batch.logitRows = Int32Array.from(rows, (i) => batch.logitRows[i]);
    const logits = this.loaded.model.forward(batch, this.#cache);
    if (sampleAt.length === 0) return null;
    return this.#backend.sample(logits, params());
  }

  /** A step a decode graph can run: one sampled token per sequence, base model, within the buckets. */
  #graphable(plan: StepPlan, sampleAt: number[]): boolean {
    const n = plan.scheduled.length;
    if (sampleAt.length !== n || this.#graphs!.bucketFor(n) === null) return false;
    return plan.scheduled.every(({ seq, numTokens }) => numTokens === 1 && (seq.adapter?.lora ?? null) === null);
  }

  #emitToken(seq: Sequence, sampled: SampledToken): void {
    const live = this.#live.get(seq.requestId)!;
    seq.appendToken(sampled.id);
    const now = nowSeconds();
    const first = seq.firstTokenTime === null;
    this.metrics.tokenGenerated(now - (first ? seq.arrivalTime : seq.lastTokenTime!), first);
    if (first) seq.firstTokenTime = now;
    seq.lastTokenTime = now;
    const out = live.output.push(sampled);
    const event: TokenEvent = { tokenIds: [sampled.id], text: out.text };
    if (out.logprob) event.logprobs = [out.logprob];
    if (out.finishReason) {
      this.#finish(live, { ...event, finishReason: out.finishReason, stopReason: out.stopReason ?? null });
    } else {
      live.stream.push(event);
    }
  }

  #recordAdmissions(plan: StepPlan): void {
    const now = nowSeconds();
    for (const a of plan.admitted) {
      this.#prefixQueries += a.queriedTokens;
      this.#prefixHits += a.hitTokens;
      this.metrics.admitted(a.queriedTokens, a.hitTokens, a.first ? a.seq.promptLength : 0);
      if (a.first) this.metrics.scheduledFirst(now - a.seq.arrivalTime);
    }
    this.metrics.preempted(plan.preempted.length);
  }

  // ---- ending requests ----

  /** Free the sequence and send the final event (which gets usage) with its finishReason. */
  #finish(live: Live, final: TokenEvent & { finishReason: FinishReason }): void {
    const seq = live.seq;
    this.#end(live);
    final.usage = {
      promptTokens: seq.promptLength,
      completionTokens: seq.numOutputTokens,
      cachedPromptTokens: seq.cachedPromptTokens,
    };
    live.stream.push(final);
    live.stream.end();
    this.metrics.finished(final.finishReason, nowSeconds() - seq.arrivalTime, seq.promptLength, seq.numOutputTokens);
    this.#settleIfIdle();
  }

  #fail(live: Live, err: unknown): void {
    const seq = live.seq;
    this.#end(live);
    live.stream.fail(err);
    this.metrics.finished('error', nowSeconds() - seq.arrivalTime, seq.promptLength, seq.numOutputTokens);
    this.#settleIfIdle();
  }

  #end(live: Live): void {
    this.#scheduler.remove(live.seq);
    this.#live.delete(live.seq.requestId);
    live.detachSignal();
    const adapter = live.seq.adapter;
    if (adapter === null) return;
    // A step in flight may still read the version's weights on the device (an abort during
    // its await): let go only once the step is over, so a retired version is never freed early.
    if (this.#inStep) this.#unpinAfterStep.push(adapter);
    else this.adapters.unpin(adapter);
  }

  #whenIdle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #isIdle(): boolean {
    return this.#live.size === 0 && !this.#looping;
  }

  #settleIfIdle(): void {
    if (!this.#isIdle()) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const w of waiters) w();
  }
}

/**
 * The batch with the sequences of each adapter version side by side, base-model rows first: a
 * stable sort, so the scheduler's order holds within each group (which sequences run was
 * decided by the scheduler; the order inside a batch changes no output).
 */
function groupByAdapter(scheduled: ScheduledSeq[]): ScheduledSeq[] {
  const key = (s: ScheduledSeq): string => s.seq.adapter?.id ?? '';
  return [...scheduled].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

function positiveInt(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new Error(`engine option ${name} must be an integer >= 1, got ${value}`);
}
