/**
 * Every Prometheus metric Tandem exports, defined in one place.
 *
 * Each Metrics instance has its own Registry (never prom-client's global one), so several
 * engines can live in one process (tests) without registering a name twice. The server
 * exposes one instance at /metrics: `await metrics.metricsText()` with `metrics.contentType`.
 *
 * Gauges of current state (running/waiting requests, KV blocks, backend memory) are read at
 * scrape time from the bound source, so they are never stale; counters and histograms are fed
 * by the engine as things happen.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EngineStats, FinishReason, StepKind } from './engine/types.ts';

/** What the state gauges read at scrape time (an Engine). */
export interface MetricsSource {
  stats(): EngineStats & { kvBlocksCachedFree?: number };
  /** Backend bytes held, by category (Backend.memoryUsage()). */
  memoryUsage(): Record<string, number>;
  /** LoRA adapters on the backend, per name (AdapterRegistry.usage()). */
  adapterUsage?(): { name: string; versions: number; bytes: number }[];
}

export interface MetricsOptions {
  /** Also export prom-client's process metrics (memory, CPU, event loop lag, GC), prefixed tandem_. Default true. */
  processMetrics?: boolean;
}

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80];
const TOKEN_GAP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 10];
const REQUEST_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960];
const LENGTH_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];

export class Metrics {
  readonly registry = new Registry();
  #source: MetricsSource | null = null;

  readonly requestsRunning: Gauge;
  readonly requestsWaiting: Gauge;
  readonly kvBlocksUsed: Gauge;
  readonly kvBlocksCachedFree: Gauge;
  readonly kvBlocksTotal: Gauge;
  readonly backendMemory: Gauge<'category'>;
  readonly memoryBudget: Gauge<'category'>;
  readonly adapterVersions: Gauge<'adapter'>;
  readonly adapterBytes: Gauge<'adapter'>;
  readonly prefixCacheQueries: Counter;
  readonly prefixCacheHits: Counter;
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  readonly preemptions: Counter;
  readonly requestsFinished: Counter<'finish_reason'>;
  readonly timeToFirstToken: Histogram;
  readonly interTokenLatency: Histogram;
  readonly e2eLatency: Histogram;
  readonly queueTime: Histogram;
  readonly promptLength: Histogram;
  readonly generationLength: Histogram;
  readonly stepDuration: Histogram<'kind'>;

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    const stats = () => this.#source?.stats();
    this.requestsRunning = new Gauge({
      name: 'tandem_requests_running',
      help: 'Requests being processed (prefilling or decoding) now',
      registers,
      collect() {
        const s = stats();
        if (s) this.set(s.running);
      },
    });
    this.requestsWaiting = new Gauge({
      name: 'tandem_requests_waiting',
      help: 'Requests queued for admission (new or preempted)',
      registers,
      collect() {
        const s = stats();
        if (s) this.set(s.waiting);
      },
    });
    this.kvBlocksUsed = new Gauge({
      name: 'tandem_kv_cache_blocks_used',
      help: 'KV cache blocks held by at least one request',
      registers,
      collect() {
        const s = stats();
        if (s) this.set(s.kvBlocksUsed);
      },
    });
    this.kvBlocksCachedFree = new Gauge({
      name: 'tandem_kv_cache_blocks_cached_free',
      help: 'Free KV cache blocks that still hold a reusable prefix (evicted least recently used first)',
      registers,
      collect() {
        const s = stats();
        if (s) this.set(s.kvBlocksCachedFree ?? 0);
      },
    });
    this.kvBlocksTotal = new Gauge({
      name: 'tandem_kv_cache_blocks_total',
      help: 'KV cache blocks in the pool',
      registers,
      collect() {
        const s = stats();
        if (s) this.set(s.kvBlocksTotal);
      },
    });
    const memory = () => this.#source?.memoryUsage();
    this.backendMemory = new Gauge({
      name: 'tandem_backend_memory_bytes',
      help: 'Bytes the compute backend holds, by category (weights, kv_cache, scratch, ...)',
      labelNames: ['category'],
      registers,
      collect() {
        const m = memory();
        if (!m) return;
        this.reset();
        for (const [category, bytes] of Object.entries(m)) this.set({ category }, bytes);
      },
    });
    this.memoryBudget = new Gauge({
      name: 'tandem_gpu_memory_budget_bytes',
      help: 'The --gpu-memory partition planned at start, by category (weights, kv_cache, workspace, adapters, unassigned); absent without a budget',
      labelNames: ['category'],
      registers,
    });
    const adapters = () => this.#source?.adapterUsage?.();
    this.adapterVersions = new Gauge({
      name: 'tandem_adapter_versions_loaded',
      help: 'LoRA adapter versions on the backend, per adapter name: the current one plus superseded ones still used by running requests',
      labelNames: ['adapter'],
      registers,
      collect() {
        const list = adapters();
        if (!list) return;
        this.reset();
        for (const a of list) this.set({ adapter: a.name }, a.versions);
      },
    });
    this.adapterBytes = new Gauge({
      name: 'tandem_adapter_bytes',
      help: 'Backend bytes of LoRA adapter weights, per adapter name (all its resident versions; also counted in tandem_backend_memory_bytes)',
      labelNames: ['adapter'],
      registers,
      collect() {
        const list = adapters();
        if (!list) return;
        this.reset();
        for (const a of list) this.set({ adapter: a.name }, a.bytes);
      },
    });
    this.prefixCacheQueries = new Counter({
      name: 'tandem_prefix_cache_queries_tokens_total',
      help: 'Tokens looked up in the prefix cache at admission',
      registers,
    });
    this.prefixCacheHits = new Counter({
      name: 'tandem_prefix_cache_hits_tokens_total',
      help: 'Tokens found in the prefix cache at admission (not computed again)',
      registers,
    });
    this.promptTokens = new Counter({ name: 'tandem_prompt_tokens_total', help: 'Prompt tokens of admitted requests', registers });
    this.generationTokens = new Counter({ name: 'tandem_generation_tokens_total', help: 'Tokens generated', registers });
    this.preemptions = new Counter({
      name: 'tandem_preemptions_total',
      help: 'Running requests sent back to wait (their KV blocks freed) to make room',
      registers,
    });
    this.requestsFinished = new Counter({
      name: 'tandem_requests_finished_total',
      help: 'Finished requests by finish reason (stop, length, abort, error)',
      labelNames: ['finish_reason'],
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: 'tandem_time_to_first_token_seconds',
      help: 'From arrival to the first generated token',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.interTokenLatency = new Histogram({
      name: 'tandem_inter_token_latency_seconds',
      help: 'Between consecutive generated tokens of a request',
      buckets: TOKEN_GAP_BUCKETS,
      registers,
    });
    this.e2eLatency = new Histogram({
      name: 'tandem_e2e_request_latency_seconds',
      help: 'From arrival to the end of a request',
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.queueTime = new Histogram({
      name: 'tandem_request_queue_time_seconds',
      help: 'From arrival to first being scheduled',
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.promptLength = new Histogram({
      name: 'tandem_request_prompt_tokens',
      help: 'Prompt length of finished requests',
      buckets: LENGTH_BUCKETS,
      registers,
    });
    this.generationLength = new Histogram({
      name: 'tandem_request_generation_tokens',
      help: 'Generated tokens of finished requests',
      buckets: LENGTH_BUCKETS,
      registers,
    });
    this.stepDuration = new Histogram({
      name: 'tandem_engine_step_seconds',
      help: 'One engine step: schedule, forward, sample, outputs; kind: graph, decode, mixed or prefill',
      labelNames: ['kind'],
      buckets: TOKEN_GAP_BUCKETS,
      registers,
    });
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'tandem_' });
  }

  /** Read the state gauges from this source at scrape time (one engine per Metrics). */
  bind(source: MetricsSource): void {
    this.#source = source;
  }

  /** Publish the memory partition (fixed at start: set once, not read at scrape time). */
  setMemoryBudget(parts: Record<string, number>): void {
    this.memoryBudget.reset();
    for (const [category, bytes] of Object.entries(parts)) this.memoryBudget.set({ category }, bytes);
  }

  /** The Prometheus text exposition of every metric. */
  metricsText(): Promise<string> {
    return this.registry.metrics();
  }

  /** Content-Type of metricsText() for the /metrics response. */
  get contentType(): string {
    return this.registry.contentType;
  }

  // ---- what the engine reports ----

  admitted(queriedTokens: number, hitTokens: number, newPromptTokens: number): void {
    this.prefixCacheQueries.inc(queriedTokens);
    this.prefixCacheHits.inc(hitTokens);
    if (newPromptTokens > 0) this.promptTokens.inc(newPromptTokens);
  }

  scheduledFirst(queueSeconds: number): void {
    this.queueTime.observe(queueSeconds);
  }

  tokenGenerated(sinceArrivalOrLast: number, first: boolean): void {
    this.generationTokens.inc();
    (first ? this.timeToFirstToken : this.interTokenLatency).observe(sinceArrivalOrLast);
  }

  preempted(count: number): void {
    if (count > 0) this.preemptions.inc(count);
  }

  finished(reason: FinishReason | 'error', e2eSeconds: number, promptTokens: number, generationTokens: number): void {
    this.requestsFinished.inc({ finish_reason: reason });
    this.e2eLatency.observe(e2eSeconds);
    this.promptLength.observe(promptTokens);
    this.generationLength.observe(generationTokens);
  }

  stepDone(seconds: number, kind: StepKind): void {
    this.stepDuration.observe({ kind }, seconds);
  }
}
