/**
 * Decode steps replayed as CUDA graphs, one graph per batch-size bucket (opt-in: engine option
 * cudaGraphs, serve --cuda-graphs). A decode step at small batch is launch-bound (hundreds of
 * kernels of a few microseconds each, plus the JS per op); a replay is one launch.
 *
 * A step of n decodes runs the graph of the smallest bucket B >= n. Its inputs live in one
 * persistent i32 tensor per bucket, rewritten before each replay (the per-row header in full,
 * of the block tables only the entries that changed); the n real
 * rows come first, then B - n padding rows that write no K/V (slot -1: the scatter skips it) and
 * attend to one position of block 0 (read only, so any finite values do). Rows are independent
 * in every op, so padding never changes the real rows' logits. The attention metadata states
 * fixed maxima (one query row; a context of the whole block table), as a replayed grid cannot
 * change; the kernels route rows by their real lengths on the device.
 *
 * Short contexts (shortContexts, TANDEM_SHORT_CONTEXT_GRAPHS=N[,N2...] tokens; default 128, "0"
 * turns them off) get graphs of their own, captured with a maximum context of N instead of the
 * whole table: the attention grid is then planned for N (a few context splits, where a grid
 * planned for 32k-token contexts launches up to 64 per row and KV head, most of them empty at
 * short contexts, and a merge kernel after them; at most the decode kernel's min split keys, 128,
 * it is one block per KV head and no merge). A step replays the graph of the smallest bound that
 * covers every row's context, else the one for the whole table. Every graph gives the same logits
 * for any context (rows are routed by their real lengths); the class only picks the faster grid.
 * Measured on an H100 on 2026-12-07 (bench/results/decode-replay-ab-2026-12-07-run7-h100.json),
 * batch-1 graph replay: at context 128 the 128-token class runs 2.496 ms against 2.526 / 2.533 for
 * the whole-table graph (no merge kernel, 4 attention blocks per layer instead of 256); at context
 * 160 a 256-token class (two splits) ran 2.601 against 2.579, so the default is the one bound
 * where the plan drops the merge (128, the decode kernel's min split keys).
 *
 * Graphs are captured on a bucket's first use, or all at once by captureAll() (serve --cuda-graphs
 * at startup); a context class's first step captures the larger classes with it (contexts grow,
 * and a capture later would stall one step in a stream). A step whose rows all run one LoRA
 * adapter (a GRPO rollout's batch, or one adapter's users) replays a graph of its own for (bucket,
 * adapter version), the adapter added on every row (padding rows' results are discarded): its
 * weights have fixed addresses for the version's life, and forget() frees its graphs when the
 * version is freed. Mixed batches and prefill stay eager (the engine decides which steps come
 * here).
 */
import type { CapturedGraph, GraphOps, KvCache, Tensor } from '../backend/backend.ts';
import type { DeviceLora } from '../model/lora-device.ts';
import { placeFeed, type TokenFeed, type Transformer } from '../model/transformer.ts';

export const GRAPH_BUCKETS: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/** A graph could not be captured (e.g. its scratch is past the budget's reserve): run the step eagerly. */
export class GraphCaptureError extends Error {}

/** The buckets graphs are made for when steps have at most maxNumSeqs rows. */
export function graphBuckets(maxNumSeqs: number): number[] {
  const capped = GRAPH_BUCKETS.filter((b) => b < maxNumSeqs);
  const top = GRAPH_BUCKETS.find((b) => b >= maxNumSeqs);
  return top === undefined ? capped : [...capped, top];
}

/** One decoding sequence: the token to run, its position, its blocks. */
export interface DecodeRow {
  token: number;
  position: number;
  blockTable: readonly number[];
}

interface Bucket {
  size: number;
  /**
   * [tokens B | positions B | slots B | contextLens B | cuSeqlensQ B+1 | logitRows B | feedSlots B |
   * blockTables B*maxBlocks]; feedSlots: a TokenFeed's slots, uploaded with the header (one copy per
   * step fewer than a separate upload).
   */
  inputs: Tensor;
  /** What `inputs` holds on the device (every entry the last step's rows read is current). */
  host: Int32Array;
  /** Whether `inputs` has been written once in full. */
  written: boolean;
  /** The bucket's graphs by adapter (null: the base model) and context class; all read `inputs`. */
  graphs: Map<DeviceLora | null, Map<number, CapturedGraph>>;
  /** Adapters (null: the base model) whose capture failed here: their steps run eagerly. */
  refused: Set<DeviceLora | null>;
}

/** The short-context bounds when TANDEM_SHORT_CONTEXT_GRAPHS is unset (see the file comment). */
export const DEFAULT_SHORT_CONTEXTS: readonly number[] = [128];

/**
 * TANDEM_SHORT_CONTEXT_GRAPHS: the short-context bounds in tokens, comma-separated ("128" or
 * "128,1024"; unset: DEFAULT_SHORT_CONTEXTS; empty or 0: none).
 */
export function shortContextFromEnv(env: NodeJS.ProcessEnv = process.env): number[] {
  const raw = env.TANDEM_SHORT_CONTEXT_GRAPHS;
  if (raw === undefined) return [...DEFAULT_SHORT_CONTEXTS];
  if (raw.trim() === '') return [];
  return raw.split(',').map((part) => {
    const n = part.trim() === '' ? NaN : Number(part);
    if (!Number.isInteger(n) || n < 0) throw new Error(`TANDEM_SHORT_CONTEXT_GRAPHS must be numbers of tokens >= 0, comma-separated, got ${JSON.stringify(raw)}`);
    return n;
  });
}

/** Past this many separate changed spans of the block tables, one write covers them all. */
const MAX_TABLE_WRITES = 8;

/** Entries per bucket row before the block tables (plus cuSeqlensQ's last): see Bucket.inputs. */
const HEADER_ROWS = 7;
/** Where a bucket of B rows keeps a feed's slots in its inputs. */
const feedSlotsAt = (B: number): number => 6 * B + 1;

export interface DecodeGraphOptions {
  blockSize: number;
  numBlocks: number;
  /** Longest sequence: sizes the block tables (and the attention grid) the graphs are fixed to. */
  maxModelLen: number;
  /** Largest batch a step can have: buckets above it are never made. */
  maxNumSeqs: number;
  /**
   * Contexts of at most these many tokens replay graphs captured for that maximum (see the file
   * comment); []: one class. Default: TANDEM_SHORT_CONTEXT_GRAPHS, else DEFAULT_SHORT_CONTEXTS.
   */
  shortContexts?: readonly number[];
}

export class DecodeGraphs {
  readonly buckets: readonly number[];
  readonly maxBlocks: number;
  private readonly graphs: GraphOps;
  private readonly made = new Map<number, Bucket>();

  constructor(
    private readonly model: Transformer,
    private readonly cache: KvCache,
    private readonly opts: DecodeGraphOptions,
  ) {
    const graphs = model.backend.graphs;
    if (!graphs) throw new Error(`cudaGraphs: backend '${model.backend.name}' has no CUDA graphs (use the cuda backend, or turn cudaGraphs off)`);
    this.graphs = graphs;
    this.maxBlocks = Math.ceil(opts.maxModelLen / opts.blockSize);
    this.buckets = graphBuckets(opts.maxNumSeqs);
    const bounds = opts.shortContexts ?? shortContextFromEnv();
    for (const b of bounds) if (!Number.isInteger(b) || b < 0) throw new Error(`DecodeGraphs: shortContexts must be integers >= 0, got ${b}`);
    this.longContext = this.maxBlocks * opts.blockSize;
    // 0 is no bound; a bound as long as the tables is the long class.
    this.shortContexts = [...new Set(bounds)].filter((b) => b > 0 && b < this.longContext).sort((a, b) => a - b);
  }

  /** The short-context bounds in tokens, ascending (none: one class). */
  readonly shortContexts: readonly number[];
  /** The context the graphs for whole tables are planned for. */
  readonly longContext: number;

  /** The context class the last step replayed (null before the first). */
  lastClass: number | null = null;

  /** The classes above `cls`, ascending: the larger short-context bounds, then the whole table. */
  private classesAbove(cls: number): number[] {
    return cls >= this.longContext ? [] : [...this.shortContexts.filter((b) => b > cls), this.longContext];
  }

  /** The context class (the maximum its graphs are planned for) of a step whose longest context is ctx. */
  contextClass(ctx: number): number {
    return this.shortContexts.find((b) => b >= ctx) ?? this.longContext;
  }

  /** The bucket a step of n decodes runs in, or null: too many for any graph. */
  bucketFor(n: number): number | null {
    return this.buckets.find((b) => b >= n) ?? null;
  }

  /** Whether a step of n rows on `lora` can run here: a bucket takes n, and no capture for it failed. */
  canRun(n: number, lora: DeviceLora | null): boolean {
    const size = this.bucketFor(n);
    return size !== null && this.made.get(size)?.refused.has(lora) !== true;
  }

  /** Bucket sizes with at least one graph captured. */
  get captured(): number[] {
    return [...this.made.values()].filter((b) => b.graphs.size > 0).map((b) => b.size);
  }

  /** The context classes (planned maxima) captured for (bucket, adapter), in capture order. */
  classesCaptured(size: number, lora: DeviceLora | null = null): number[] {
    return [...(this.made.get(size)?.graphs.get(lora)?.keys() ?? [])];
  }

  /** Free the graphs of an adapter version (before its weights are freed: they hold its addresses). */
  forget(lora: DeviceLora): void {
    for (const b of this.made.values()) {
      const byClass = b.graphs.get(lora);
      if (byClass === undefined) continue;
      for (const g of byClass.values()) this.graphs.free(g);
      b.graphs.delete(lora);
    }
  }

  /**
   * Run one decode step for `rows` (K/V written to their caches), every row with adapter `lora`
   * (null: the base model), and return their logits [n, V] f32: a view of the graph's output,
   * valid until the next run(). `feed`: rows whose token is the previous step's id on the device
   * (their `token` is ignored).
   */
  run(rows: readonly DecodeRow[], lora: DeviceLora | null = null, feed?: TokenFeed): Tensor {
    const n = rows.length;
    const size = this.bucketFor(n);
    if (n === 0 || size === null) throw new Error(`DecodeGraphs.run: ${n} rows; a graph takes 1 to ${this.buckets[this.buckets.length - 1]}`);
    const bucket = this.bucket(size);
    // Rows whose token the feed places on the device (their host token is a placeholder).
    const fed = new Set(feed === undefined ? [] : [...feed.slots].filter((j) => j >= 0 && j < n));
    let changed: [number, number][];
    try {
      changed = this.fill(bucket, rows, fed);
    } catch (err) {
      bucket.written = false; // the host copy may be half-updated: write it whole next time
      throw err;
    }
    // A feed of at most `size` slots travels in the header's upload; a longer one (the previous
    // step had more rows than this bucket) is uploaded on its own.
    const feedInHeader = feed !== undefined && feed.slots.length <= size;
    if (feedInHeader) bucket.host.set(feed.slots, feedSlotsAt(size));
    this.upload(bucket, changed);
    const be = this.model.backend;
    if (feed !== undefined) {
      const slots = feedInHeader ? be.viewAt(bucket.inputs, feedSlotsAt(size), [feed.slots.length]) : undefined;
      placeFeed(be, be.viewAt(bucket.inputs, 0, [size]), feed, slots);
    }
    let longest = 0;
    for (const r of rows) longest = Math.max(longest, r.position + 1);
    const cls = this.contextClass(longest);
    const byClass = this.graphsOf(bucket, lora);
    // A class's first step captures the larger classes too: contexts only grow, and a capture
    // (an eager run, then the capture: tens of ms) in the middle of a stream of steps would show
    // as one slow step. All before the replay: a sizing run must not overwrite its output.
    if (!byClass.has(cls)) this.capture(bucket, byClass, [cls, ...this.classesAbove(cls)], lora);
    const graph = byClass.get(cls)!;
    this.lastClass = cls;
    this.graphs.replay(graph);
    const logits = graph.output;
    return n === size ? logits : be.viewAt(logits, 0, [n, logits.shape[1]]);
  }

  /**
   * Capture every bucket's base-model graphs, each context class, before any request (serve does
   * this at startup, as vLLM does, so no capture stalls a step of the first users). The buckets'
   * rows are all padding meanwhile: they write no K/V. Returns how many graphs were captured.
   * Throws GraphCaptureError as run() does (that bucket then runs eagerly; the smaller ones keep
   * their graphs).
   */
  captureAll(): number {
    let count = 0;
    for (const size of this.buckets) {
      const bucket = this.bucket(size);
      this.upload(bucket, this.fill(bucket, [], new Set()));
      const byClass = this.graphsOf(bucket, null);
      const missing = [...this.shortContexts, this.longContext].filter((c) => !byClass.has(c));
      this.capture(bucket, byClass, missing, null);
      count += missing.length;
    }
    return count;
  }

  /** The bucket's graphs for `lora` by context class, made empty on first use. */
  private graphsOf(bucket: Bucket, lora: DeviceLora | null): Map<number, CapturedGraph> {
    let byClass = bucket.graphs.get(lora);
    if (byClass === undefined) {
      byClass = new Map();
      bucket.graphs.set(lora, byClass);
    }
    return byClass;
  }

  /** Capture `classes` of (bucket, lora) into byClass, in order, from the bucket's current inputs. */
  private capture(bucket: Bucket, byClass: Map<number, CapturedGraph>, classes: readonly number[], lora: DeviceLora | null): void {
    const size = bucket.size;
    for (const c of classes) {
      if (byClass.has(c)) continue;
      const base = this.deviceBatch(bucket, c);
      const batch = { ...base, ...(lora === null ? {} : { lora: [{ start: 0, end: size, lora }] }) };
      try {
        byClass.set(c, this.graphs.capture(() => this.model.forwardDevice(batch, this.cache)));
      } catch (err) {
        // The eager sizing run may have written some K/V already: the caller's eager step writes
        // the same values again.
        bucket.refused.add(lora);
        if (byClass.size === 0) bucket.graphs.delete(lora);
        throw new GraphCaptureError(`decode graph for ${size} rows: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    }
  }

  /** Free every graph and input tensor. */
  free(): void {
    for (const b of this.made.values()) {
      for (const byClass of b.graphs.values()) for (const g of byClass.values()) this.graphs.free(g);
      this.model.backend.free(b.inputs);
    }
    this.made.clear();
  }

  private bucket(size: number): Bucket {
    let b = this.made.get(size);
    if (!b) {
      const len = size * (HEADER_ROWS + this.maxBlocks) + 1;
      b = { size, inputs: this.graphs.input([len], 'i32'), host: new Int32Array(len).fill(-1), written: false, graphs: new Map(), refused: new Set() };
      this.made.set(size, b);
    }
    return b;
  }

  /**
   * Copy the header (tokens .. logitRows) and the changed block-table spans to the device. A
   * decode step usually changes no table entry, or one per row that crossed into a new block: at
   * 32k-token tables a full write would move 8 KiB per row every step.
   */
  private upload(b: Bucket, changed: [number, number][]): void {
    const be = this.model.backend;
    if (!b.written) {
      be.write(b.inputs, b.host);
      b.written = true;
      return;
    }
    const header = HEADER_ROWS * b.size + 1;
    let spans = changed;
    if (spans.length > MAX_TABLE_WRITES) spans = [[spans[0][0], spans[spans.length - 1][1]]];
    // The first span joins the header's write when it starts right after it.
    let headerEnd = header;
    if (spans.length > 0 && spans[0][0] === header) {
      headerEnd = spans[0][1];
      spans = spans.slice(1);
    }
    be.write(be.viewAt(b.inputs, 0, [headerEnd]), b.host.subarray(0, headerEnd));
    for (const [from, to] of spans) be.write(be.viewAt(b.inputs, from, [to - from]), b.host.subarray(from, to));
  }

  /**
   * Lay the rows (then padding) out in the bucket's host buffer, checking what the kernels will
   * not. Returns the block-table spans [from, to) whose entries changed, in order. Entries past a
   * row's context are left as they are: every kernel reads a row's table only below its context.
   */
  private fill(b: Bucket, rows: readonly DecodeRow[], fed: ReadonlySet<number>): [number, number][] {
    const { blockSize, numBlocks } = this.opts;
    const B = b.size;
    const M = this.maxBlocks;
    const h = b.host;
    const [tok, pos, slot, lens, cu, lrows, tables] = [0, B, 2 * B, 3 * B, 4 * B, 5 * B + 1, HEADER_ROWS * B + 1];
    const changed: [number, number][] = [];
    /** Set entry j of row i's table, noting the change. */
    const setTable = (i: number, j: number, blk: number): void => {
      const at = tables + i * M + j;
      if (h[at] === blk) return;
      h[at] = blk;
      const last = changed[changed.length - 1];
      if (last !== undefined && last[1] === at) last[1] = at + 1;
      else changed.push([at, at + 1]);
    };
    for (let i = 0; i < B; i++) {
      h[cu + i] = i;
      h[lrows + i] = i;
      if (i >= rows.length) {
        h[tok + i] = 0;
        h[pos + i] = 0;
        h[slot + i] = -1;
        h[lens + i] = 1;
        setTable(i, 0, 0);
        continue;
      }
      const r = rows[i];
      const ctx = r.position + 1;
      const needed = Math.ceil(ctx / blockSize);
      if (!Number.isInteger(r.position) || r.position < 0 || needed > M) {
        throw new Error(`DecodeGraphs.run: row ${i} position ${r.position} is outside the graphs' ${M * blockSize}-token block tables`);
      }
      if (r.blockTable.length < needed) throw new Error(`DecodeGraphs.run: row ${i} needs ${needed} blocks, its block table has ${r.blockTable.length}`);
      for (let j = 0; j < needed; j++) {
        const blk = r.blockTable[j];
        if (!Number.isInteger(blk) || blk < 0 || blk >= numBlocks) throw new Error(`DecodeGraphs.run: row ${i} block ${j} is ${blk}, outside the cache's ${numBlocks} blocks`);
        setTable(i, j, blk);
      }
      const V = this.model.config.vocabSize;
      if (fed.has(i)) {
        h[tok + i] = 0; // (the feed's id replaces it on the device)
      } else {
        if (!Number.isInteger(r.token) || r.token < 0 || r.token >= V) throw new Error(`DecodeGraphs.run: row ${i} token ${r.token} is outside the vocabulary of ${V}`);
        h[tok + i] = r.token;
      }
      h[pos + i] = r.position;
      h[slot + i] = r.blockTable[Math.floor(r.position / blockSize)] * blockSize + (r.position % blockSize);
      h[lens + i] = ctx;
    }
    h[cu + B] = B;
    return changed;
  }

  private deviceBatch(b: Bucket, cls: number): Parameters<Transformer['forwardDevice']>[0] {
    const be = this.model.backend;
    const B = b.size;
    const at = (offset: number, shape: number[]): Tensor => be.viewAt(b.inputs, offset, shape);
    return {
      tokens: at(0, [B]),
      positions: at(B, [B]),
      slots: at(2 * B, [B]),
      meta: {
        contextLens: at(3 * B, [B]),
        cuSeqlensQ: at(4 * B, [B + 1]),
        blockTables: at(HEADER_ROWS * B + 1, [B, this.maxBlocks]),
        maxSeqlenQ: 1,
        // The stated maximum plans the attention grid (context splits) the graph keeps.
        maxContextLen: cls,
      },
      logitRows: at(5 * B + 1, [B]),
    };
  }
}
