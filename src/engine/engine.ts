/**
 * The serving engine: continuous batching over a paged KV cache with prefix caching.
 *
 * add() validates a request and returns its event stream; the engine's own step loop runs while
 * any request is live. A step is: schedule (scheduler.ts) -> one Transformer.forward over the
 * packed batch -> one backend.sample over the rows that reached their last token -> outputs
 * (output.ts) -> events. Each step the loop yields to the event loop (setImmediate), so HTTP
 * handlers, aborts and new requests get in between any two steps.
 *
 * Steps overlap on the host: once step N's ids are in, its sequences get them and the rows that
 * an id alone ends (max_tokens, eos, stop ids) finish; then step N+1 is launched, and N's other
 * rows are detokenized and sent while N+1 runs on the device, which would otherwise wait for
 * that host work. A stop string found then ends its sequence one step late: N+1's row for it is
 * dropped when N+1 lands, as for a request aborted while a step runs, so the extra token is
 * never sent or counted, and its blocks were freed with the sequence.
 *
 * LoRA adapters (adapters.ts): a request may name a loaded adapter; its sequence pins the current
 * version when added, and each step's batch is grouped by version so that every version is one
 * contiguous LoRA segment of the forward.
 *
 * Sampling is reproducible per request: row params carry the request's seed and step = tokens
 * generated so far, and the backend's draw is a pure function of (seed, step), so a request
 * gets the same tokens alone, batched with others, or after preemption and recompute.
 */
import type { Backend, KvCache, SampleResult, Tensor } from '../backend/backend.ts';
import type { LoadedModel } from '../model/load.ts';
import { Metrics } from '../metrics.ts';
import { AdapterRegistry, type AdapterVersion } from './adapters.ts';
import { KvBlockManager } from './kv-cache.ts';
import { OutputProcessor, TokenTexts, type SampledToken } from './output.ts';
import { groupByAdapter, prepareStep, type PreparedStep, type StepDevice } from './step-inputs.ts';
import { StepFence } from './step-fence.ts';
import { PLACEHOLDER, canRunAhead, feedSlots, keepable, pendingRows, type AheadStep } from './run-ahead.ts';
import { DeviceQueue } from '../backend/device-queue.ts';
import { RequestStream } from './request-stream.ts';
import { validateRequest } from './validate.ts';
import { Scheduler, type StepPlan } from './scheduler.ts';
import { Sequence } from './sequence.ts';
import { SnapshotArena } from './penalty-counts.ts';
import { DecodeGraphs } from './decode-graphs.ts';
import { EngineError, type EngineStats, type FinishReason, type GenerationRequest, type StepKind, type TokenEvent } from './types.ts';

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
  /** Render step N's outputs while step N+1 runs on the device (default on; off: one after the other). */
  overlapSteps?: boolean;
  /**
   * Async scheduling (needs overlapSteps): while step N runs, queue step N+1 behind it when every
   * running sequence just continues (nothing waiting, none ending by length), its tokens read
   * from N's ids on the device, and penalised rows' counts too (sample()'s pending). The device
   * then never waits for the host between decode steps. Default: on where the backend queues work (cuda); off where ops compute before
   * they return (cpu): nothing runs behind the host there, so it cannot gain (tandem-small on 2
   * cores, serve with 16 clients, 3 runs each: 325 vs 314 output tokens/s, within the runs'
   * spread of 280-345; 2026-12-07), and an eos would still cost a step whose row is dropped.
   */
  asyncScheduling?: boolean;
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

/** A step handed to the device queue. */
interface LaunchedStep extends AheadStep {
  sampleAt: number[];
  result: Promise<SampleResult | null>;
  /**
   * performance.now() at schedule; for a step queued behind another, when that one landed (its
   * work starts about then), so the step-time metric does not count the wait behind it.
   */
  started: number;
  /** What the step runs (the step-time metric's label). */
  kind: StepKind;
  /**
   * Set when a step was queued behind this one before it landed: the scheduler counted it
   * computed then, and each sampled row's sequence got a placeholder at this token index.
   */
  ahead: { placeholders: number[] } | null;
}

/** A step whose ids are appended; its rows not yet sent. */
interface LandedStep {
  rows: { live: Live; sampled: SampledToken }[];
  started: number;
  kind: StepKind;
}

const nowSeconds = (): number => performance.now() / 1000;
const eventLoopTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

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
  readonly #fence = new StepFence();
  readonly #graphs: DecodeGraphs | null;
  readonly #device: StepDevice;
  readonly #overlap: boolean;
  readonly #async: boolean;
  /** Two i32 [maxNumSeqs] tensors the steps keep their ids in, in turn (a step reads the other's). */
  readonly #keep: [Tensor, Tensor] | null;
  #keepTurn = 0;

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
    this.#device = { model: loaded.model, backend: this.#backend, cache: this.#cache, graphs: this.#graphs, blockSize: opts.blockSize };
    this.#overlap = opts.overlapSteps ?? true;
    this.#async = this.#overlap && (opts.asyncScheduling ?? this.#backend.queuesWork);
    this.#keep = this.#async
      ? [0, 1].map(() => this.#backend.alloc([opts.maxNumSeqs], 'i32', 'persistent')) as [Tensor, Tensor]
      : null;
    this.adapters = new AdapterRegistry(this.#backend, loaded.config);
    // A version's decode graphs hold its weights' addresses: free them with it.
    const graphs = this.#graphs;
    if (graphs !== null) this.adapters.onFree((lora) => graphs.forget(lora));
    this.metrics = opts.metrics ?? new Metrics();
    this.metrics.bind({
      stats: () => this.stats(),
      memoryUsage: () => this.#backend.memoryUsage(),
      adapterUsage: () => this.adapters.usage(),
    });
  }

  /**
   * Capture every decode graph of the base model now (each batch bucket and context class), in
   * the device queue, so that no step of the first requests waits for a capture (serve does this
   * at startup with --cuda-graphs). Returns how many were captured (0 without cudaGraphs). A
   * bucket whose capture fails runs its steps eagerly, as when a lazy capture fails.
   */
  async captureGraphs(): Promise<number> {
    const graphs = this.#graphs;
    if (graphs === null) return 0;
    return this.deviceQueue.run(() => graphs.captureAll());
  }

  /** Whether decode steps are queued behind the one in flight (EngineOptions.asyncScheduling, resolved). */
  get asyncScheduling(): boolean {
    return this.#async;
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
    for (const t of this.#keep ?? []) this.#backend.free(t);
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

  /**
   * Each turn: launch step N+1 (already queued behind N when async scheduling could), give the
   * event loop a turn (the device queue starts N+1's work first), render step N's rows while N+1
   * runs, then land N+1. With async scheduling the turn starts by queuing N+2 behind N+1, so the
   * device goes from one step to the next without waiting for the host. With overlapSteps off:
   * render N, give the event loop a turn, launch and land N+1 (the order before overlap, as a
   * baseline).
   */
  async #loop(): Promise<void> {
    let landed: LandedStep | null = null;
    /** Launched and not landed: at most one, besides the step queued behind it. */
    let inFlight: LaunchedStep | null = null;
    try {
      while (landed !== null || inFlight !== null || this.#scheduler.hasWork()) {
        let ahead: LaunchedStep | null = null;
        try {
          if (!this.#overlap && landed !== null) {
            landed = this.#render(landed);
            if (this.#scheduler.hasWork()) await eventLoopTurn();
          }
          if (inFlight === null && this.#scheduler.hasWork()) inFlight = this.#launch(null);
          if (inFlight !== null && this.#async && canRunAhead(inFlight, this.#scheduler, this.#blocks)) ahead = this.#launch(inFlight);
          if (this.#overlap) {
            await eventLoopTurn();
            landed = this.#render(landed);
          }
          const step = inFlight;
          inFlight = ahead;
          if (step !== null) landed = await this.#land(step);
          if (ahead !== null) ahead.started = Math.max(ahead.started, performance.now());
        } catch (err) {
          // #launch, #land and #render handle their own failures; this is the last line against a hung request.
          landed = null;
          inFlight = null;
          for (const live of [...this.#live.values()]) this.#fail(live, err);
          await ahead?.result.catch(() => undefined); // the next turn's step must not overtake it
        }
      }
    } finally {
      this.#looping = false;
      this.#settleIfIdle();
    }
  }

  /**
   * Schedule a step and hand its work to the device queue, not waiting for it (null: nothing to
   * run). With `prev` (see canRunAhead in run-ahead.ts), prev is counted computed first and each of its rows'
   * sequences gets a placeholder for its id, which the step reads from prev's kept ids.
   */
  #launch(prev: LaunchedStep | null): LaunchedStep | null {
    const started = performance.now();
    let plan: StepPlan;
    try {
      if (prev !== null) this.#placeholdersFor(prev);
      plan = this.#scheduler.schedule(started / 1000);
    } catch (err) {
      // The scheduler's state can't be trusted after a bug: end everything rather than hang.
      for (const live of [...this.#live.values()]) this.#fail(live, err);
      return null;
    }
    this.#recordAdmissions(plan);
    plan.scheduled = groupByAdapter(plan.scheduled);
    if (plan.scheduled.length === 0) {
      // add() rejects requests that can never fit, so an empty plan with work left is a bug.
      const head = this.#scheduler.waiting[0] ?? this.#scheduler.running[0];
      const live = head && this.#live.get(head.requestId);
      if (live) this.#fail(live, new Error(`engine: nothing could be scheduled for ${head.requestId} (${this.#blocks.numFree} of ${this.#blocks.numBlocks} KV blocks free)`));
      return null;
    }
    const sampleAt = plan.scheduled.flatMap((s, i) => (s.sample ? [i] : []));
    let work: PreparedStep;
    let keep: Tensor | null = null;
    try {
      const arena = new SnapshotArena();
      const params = sampleAt.map((i) => plan.scheduled[i].seq.samplingParams(arena));
      if (this.#keep !== null) {
        const V = this.#device.model.config.vocabSize;
        const limit = this.#backend.devicePenaltyVocab;
        if (params.every((p) => keepable(p, V, limit))) keep = this.#keep[this.#keepTurn++ % 2];
      }
      const feed = prev === null ? undefined : { ids: prev.keep!, slots: feedSlots(prev, plan) };
      // Penalised rows count prev's ids too, read on the device (their host copies are placeholders).
      const rows = prev === null ? null : pendingRows(prev, plan, sampleAt);
      const pending = rows === null ? undefined : { ids: prev!.keep!, rows };
      work = prepareStep(this.#device, plan, sampleAt, params, { feed, keep: keep ?? undefined, pending });
    } catch (err) {
      this.#failPlan(plan, err);
      return null;
    }
    const result = this.deviceQueue.run(work.run).then((queued) => queued.pending);
    this.#fence.track(result);
    return { plan, sampleAt, result, started, kind: work.kind, keep, ahead: null };
  }

  /** Count prev's tokens computed and give each of its sampled rows a placeholder id (see #launch). */
  #placeholdersFor(prev: LaunchedStep): void {
    this.#scheduler.completeStep(prev.plan);
    prev.ahead = {
      placeholders: prev.sampleAt.map((i) => {
        const seq = prev.plan.scheduled[i].seq;
        seq.appendToken(PLACEHOLDER);
        return seq.tokens.length - 1;
      }),
    };
  }

  /**
   * The step's ids are in: mark its tokens computed and append the ids. Rows whose id alone ends
   * them (max_tokens, eos, stop ids) finish now, so the next step leaves them out; the others
   * are returned to be rendered while the next step runs.
   */
  async #land(step: LaunchedStep): Promise<LandedStep | null> {
    const { plan, sampleAt } = step;
    let result: SampleResult | null;
    try {
      result = await step.result;
    } catch (err) {
      // (the device queue reset the scratch arena when the slice ended)
      this.#failPlan(plan, err);
      return null;
    }
    const rows: LandedStep['rows'] = [];
    try {
      if (step.ahead === null) this.#scheduler.completeStep(plan);
      sampleAt.forEach((i, row) => {
        const seq = plan.scheduled[i].seq;
        // Ended while the step ran: aborted, or a stop string found in the previous step's text.
        if (seq.status !== 'running') return;
        const sampled = { id: result!.ids[row], logprob: result!.logprobs[row], top: result!.top[row] };
        if (step.ahead !== null) seq.setToken(step.ahead.placeholders[row], sampled.id);
        else seq.appendToken(sampled.id);
        const live = this.#live.get(seq.requestId)!;
        if (live.output.endsAt(sampled.id)) this.#emitToken(live, sampled);
        else rows.push({ live, sampled });
      });
    } catch (err) {
      this.#failPlan(plan, err);
      return null;
    }
    return { rows, started: step.started, kind: step.kind };
  }

  /**
   * Detokenize and send a landed step's rows (a stop string found here ends its sequence a step
   * late). Returns null: nothing of the step is left to render.
   */
  #render(step: LandedStep | null): null {
    if (step === null) return null;
    for (const { live, sampled } of step.rows) {
      if (!live.seq.isFinished) this.#emitToken(live, sampled); // (or it was aborted or failed since)
    }
    this.metrics.stepDone((performance.now() - step.started) / 1000, step.kind);
    return null;
  }

  /** Fail the plan's requests that are still live (a request aborted meanwhile has ended). */
  #failPlan(plan: StepPlan, err: unknown): void {
    for (const { seq } of plan.scheduled) {
      const live = this.#live.get(seq.requestId);
      if (live && live.seq === seq) this.#fail(live, err);
    }
  }

  /** Send a token already appended to its sequence; finish the request if it ends here, fail it if that throws. */
  #emitToken(live: Live, sampled: SampledToken): void {
    const seq = live.seq;
    try {
      const now = nowSeconds();
      const first = seq.firstTokenTime === null;
      this.metrics.tokenGenerated(now - (first ? seq.arrivalTime : seq.lastTokenTime!), first);
      if (first) seq.firstTokenTime = now;
      seq.lastTokenTime = now;
      const out = live.output.push(sampled);
      const event: TokenEvent = { tokenIds: [sampled.id], text: out.text };
      if (out.logprob) event.logprobs = [out.logprob];
      if (out.finishReason) this.#finish(live, { ...event, finishReason: out.finishReason, stopReason: out.stopReason ?? null });
      else live.stream.push(event);
    } catch (err) {
      if (this.#live.get(seq.requestId) === live) this.#fail(live, err);
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

  /**
   * Free the sequence and send the final event (which gets usage) with its finishReason. Usage
   * counts the tokens sent: an abort may come between a token's landing and its rendering.
   */
  #finish(live: Live, final: TokenEvent & { finishReason: FinishReason }): void {
    const seq = live.seq;
    this.#end(live);
    final.usage = {
      promptTokens: seq.promptLength,
      completionTokens: live.output.numTokens,
      cachedPromptTokens: seq.cachedPromptTokens,
    };
    live.stream.push(final);
    live.stream.end();
    this.metrics.finished(final.finishReason, nowSeconds() - seq.arrivalTime, seq.promptLength, live.output.numTokens);
    this.#settleIfIdle();
  }

  #fail(live: Live, err: unknown): void {
    const seq = live.seq;
    this.#end(live);
    live.stream.fail(err);
    this.metrics.finished('error', nowSeconds() - seq.arrivalTime, seq.promptLength, live.output.numTokens);
    this.#settleIfIdle();
  }

  #end(live: Live): void {
    this.#scheduler.remove(live.seq);
    this.#live.delete(live.seq.requestId);
    live.detachSignal();
    const adapter = live.seq.adapter;
    if (adapter === null) return;
    // A step in flight may still read the version's weights: a retired version is never freed early.
    this.#fence.afterInFlight(() => this.adapters.unpin(adapter));
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

function positiveInt(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new Error(`engine option ${name} must be an integer >= 1, got ${value}`);
}
