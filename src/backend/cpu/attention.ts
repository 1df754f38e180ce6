/**
 * attention: causal grouped-query attention over the paged KV cache
 *   q and out are (T, H, D); kPool and vPool are (numBlocks, blockSize, Hkv, D);
 *   cuSeqlensQ is (S+1), contextLens is (S), blockTables is (S, maxBlocks), all i32.
 *
 * Sequence s owns query rows [cuSeqlensQ[s], cuSeqlensQ[s+1]), its last qlen tokens: row i sits
 * at position ctx - qlen + i and attends to cache positions [0, that position]. Query head h
 * reads KV head floor(h / (H / Hkv)), i.e. consecutive query heads share a KV head, as
 * transformers' repeat_kv lays them out.
 *
 * The work is cut into tasks: one task is a sequence, a KV head and a block of up to R
 * consecutive query rows, i.e. R * group query vectors (group = H / Hkv, R * group about 16)
 * that all read the same K and V rows. A task:
 * 1. lists the cache offset of each key position it needs by walking the block table once
 *    (K and V share the pool layout, so the list serves both; nothing is copied);
 * 2. forms scores = Q K^T * scale in 4 x 4 register tiles (4 query vectors against 4 keys):
 *    every K element loaded feeds 4 dot products, every q element 4. A tile of rows runs up to
 *    the last row's causal limit; the extra scores of earlier rows are computed and ignored;
 * 3. per query vector, a two-pass softmax over its own causal limit (max, then exp and sum,
 *    max subtracted so nothing overflows), in double precision, with an exp of its own for
 *    arguments <= 0 (relative error < 3e-10, twice as fast as Math.exp);
 * 4. out = P V in 4 x 4 tiles (4 query vectors x 4 output dims, one loaded V element feeding 4
 *    of them), each vector summing exactly its own keys.
 *
 * Arithmetic per output element is fixed whatever the tiling or the task split: each score is
 * a double-precision dot product over d ascending, then times scale; the max and the sum run
 * over keys ascending (exp is a pure function of its argument); each output sums e_p * v_p in
 * double over keys ascending and is multiplied by 1 / sum once, rounding to f32 on store. So
 * results do not depend on how tasks are shared out between threads (see pool.ts), bit for bit.
 */

export interface AttentionDims {
  S: number;
  H: number;
  Hkv: number;
  D: number;
  blockSize: number;
  maxBlocks: number;
}

/** Query rows per task: about 16 query vectors (rows x heads of one KV head). */
export function attentionRowsPerTask(group: number): number {
  return Math.max(1, Math.ceil(16 / group));
}

/** Per-thread buffers of the attention kernel, grown on demand. */
export class AttentionWorkspace {
  /** First task of each sequence: [S + 1]. */
  taskStart = new Int32Array(1);
  /** Pool offset of each key position's row of the task's KV head: [context]. */
  kOff = new Int32Array(0);
  /** Scores, then unnormalised probabilities, one row of `context` per query vector. */
  scores = new Float64Array(0);
  /** Per query vector of a task: q/out offset, causal limit, 1 / softmax sum. */
  qOff = new Int32Array(0);
  lims = new Int32Array(0);
  inv = new Float64Array(0);

  ensure(S: number, maxCtx: number, queriesPerTask: number): void {
    if (this.taskStart.length < S + 1) this.taskStart = new Int32Array(S + 1);
    if (this.kOff.length < maxCtx) this.kOff = new Int32Array(maxCtx);
    if (this.scores.length < maxCtx * queriesPerTask) this.scores = new Float64Array(maxCtx * queriesPerTask);
    if (this.qOff.length < queriesPerTask) {
      this.qOff = new Int32Array(queriesPerTask);
      this.lims = new Int32Array(queriesPerTask);
      this.inv = new Float64Array(queriesPerTask);
    }
  }

  get bytes(): number {
    return this.taskStart.byteLength + this.kOff.byteLength + this.scores.byteLength + this.qOff.byteLength
      + this.lims.byteLength + this.inv.byteLength;
  }
}

/**
 * Size the workspace and number the tasks: sequence s owns tasks [taskStart[s], taskStart[s+1]),
 * KV head major, then row blocks. Returns the task count.
 */
export function attentionPlan(cuSeqlensQ: Int32Array, contextLens: Int32Array, dims: AttentionDims, ws: AttentionWorkspace): number {
  const { S, H, Hkv } = dims;
  const group = H / Hkv;
  const R = attentionRowsPerTask(group);
  let maxCtx = 0;
  for (let s = 0; s < S; s++) maxCtx = Math.max(maxCtx, contextLens[s]);
  ws.ensure(S, maxCtx, R * group);
  const start = ws.taskStart;
  start[0] = 0;
  for (let s = 0; s < S; s++) {
    const qlen = cuSeqlensQ[s + 1] - cuSeqlensQ[s];
    start[s + 1] = start[s] + Hkv * Math.ceil(qlen / R);
  }
  return start[S];
}

/** All of attention on one thread. */
export function attentionForward(
  out: Float32Array,
  q: Float32Array,
  kPool: Float32Array,
  vPool: Float32Array,
  cuSeqlensQ: Int32Array,
  contextLens: Int32Array,
  blockTables: Int32Array,
  dims: AttentionDims,
  scale: number,
  ws: AttentionWorkspace,
): void {
  const n = attentionPlan(cuSeqlensQ, contextLens, dims, ws);
  attentionTasks(out, q, kPool, vPool, cuSeqlensQ, contextLens, blockTables, dims, scale, ws, 0, n);
}

/** Run tasks [t0, t1) of a batch already numbered by attentionPlan into this `ws`. */
export function attentionTasks(
  out: Float32Array,
  q: Float32Array,
  kPool: Float32Array,
  vPool: Float32Array,
  cuSeqlensQ: Int32Array,
  contextLens: Int32Array,
  blockTables: Int32Array,
  dims: AttentionDims,
  scale: number,
  ws: AttentionWorkspace,
  t0: number,
  t1: number,
): void {
  const { S, H, Hkv, D, blockSize, maxBlocks } = dims;
  const group = H / Hkv;
  const R = attentionRowsPerTask(group);
  const kvRow = Hkv * D;
  const start = ws.taskStart;
  const { kOff, scores, qOff, lims, inv } = ws;
  let s = 0;
  for (let t = t0; t < t1; t++) {
    while (start[s + 1] <= t) s++;
    const row0 = cuSeqlensQ[s];
    const qlen = cuSeqlensQ[s + 1] - row0;
    const ctx = contextLens[s];
    const blocksOfRows = Math.ceil(qlen / R);
    const local = t - start[s];
    const g = (local / blocksOfRows) | 0;
    const i0 = (local - g * blocksOfRows) * R;
    const i1 = Math.min(qlen, i0 + R);

    // Key offsets up to the last row's causal limit.
    const keys = ctx - qlen + i1;
    const table = s * maxBlocks;
    for (let p = 0, b = 0; p < keys; b++) {
      const base = blockTables[table + b] * blockSize * kvRow + g * D;
      const end = Math.min(blockSize, keys - p);
      for (let off = 0; off < end; off++, p++) kOff[p] = base + off * kvRow;
    }

    // The task's query vectors, row-major then head: causal limits never decrease.
    let nq = 0;
    for (let i = i0; i < i1; i++) {
      const lim = ctx - qlen + i + 1;
      for (let h = g * group; h < (g + 1) * group; h++, nq++) {
        qOff[nq] = ((row0 + i) * H + h) * D;
        lims[nq] = lim;
      }
    }

    // Scores: stride `keys` per query vector.
    let j = 0;
    for (; j + 4 <= nq; j += 4) {
      scores4(scores, j * keys, keys, q, qOff[j], qOff[j + 1], qOff[j + 2], qOff[j + 3], kPool, kOff, lims[j + 3], D, scale);
    }
    for (; j < nq; j++) scores1(scores, j * keys, q, qOff[j], kPool, kOff, lims[j], D, scale);

    // Softmax numerators in place, and 1 / sum.
    for (j = 0; j < nq; j++) inv[j] = 1 / softmaxRow(scores, j * keys, lims[j]);

    // Output.
    j = 0;
    for (; j + 4 <= nq; j += 4) {
      weighted4(out, scores, j * keys, keys, qOff, lims, inv, j, vPool, kOff, D);
    }
    for (; j < nq; j++) weighted1(out, scores, j * keys, qOff[j], lims[j], inv[j], vPool, kOff, D);
  }
}

/** sc[o + p] = max-subtracted exp of sc[o + p] for p < n; returns their sum. */
function softmaxRow(sc: Float64Array, o: number, n: number): number {
  let max = -Infinity;
  for (let p = 0; p < n; p++) if (sc[o + p] > max) max = sc[o + p];
  let sum = 0;
  for (let p = 0; p < n; p++) {
    const e = expNonPositive(sc[o + p] - max);
    sc[o + p] = e;
    sum += e;
  }
  return sum;
}

const LN2_HI = 0.6931471803691238; // ln 2 split in two so that n * LN2_HI is exact for |n| < 2^11
const LN2_LO = 1.9082149292705877e-10;
/** POW2[i] = 2^(i - 1075), every power a double can hold (subnormals included). */
const POW2 = Float64Array.from({ length: 2100 }, (_, i) => 2 ** (i - 1075));

/**
 * exp(x) for x <= 0 (a max-subtracted score), to a relative error below 3e-10: x = n ln2 + r
 * with |r| <= ln2 / 2, exp(r) by its Taylor polynomial of degree 8 (remainder < 2e-10), times
 * 2^n from a table. About twice as fast as Math.exp in V8, which computes to full double
 * precision that an f32 output cannot show. Below -745 it returns 0, for NaN NaN (a NaN score
 * makes the row NaN, as with Math.exp). Not valid for x > 0.
 */
function expNonPositive(x: number): number {
  if (!(x > -745)) return x === x ? 0 : x;
  const n = (x * Math.LOG2E - 0.5) | 0; // round to nearest for x <= 0
  const r = x - n * LN2_HI - n * LN2_LO;
  const p = 1 + r * (1 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (1 / 5040 + r * (1 / 40320))))))));
  return p * POW2[n + 1075];
}

/** Scores of 4 query vectors against keys [0, n): rows o, o + ld, o + 2 ld, o + 3 ld of sc. */
function scores4(
  sc: Float64Array,
  o: number,
  ld: number,
  q: Float32Array,
  q0: number,
  q1: number,
  q2: number,
  q3: number,
  k: Float32Array,
  kOff: Int32Array,
  n: number,
  D: number,
  scale: number,
): void {
  const o1 = o + ld;
  const o2 = o1 + ld;
  const o3 = o2 + ld;
  let p = 0;
  for (; p + 4 <= n; p += 4) {
    const k0 = kOff[p];
    const k1 = kOff[p + 1];
    const k2 = kOff[p + 2];
    const k3 = kOff[p + 3];
    let a00 = 0, a01 = 0, a02 = 0, a03 = 0;
    let a10 = 0, a11 = 0, a12 = 0, a13 = 0;
    let a20 = 0, a21 = 0, a22 = 0, a23 = 0;
    let a30 = 0, a31 = 0, a32 = 0, a33 = 0;
    for (let d = 0; d < D; d++) {
      const b0 = k[k0 + d];
      const b1 = k[k1 + d];
      const b2 = k[k2 + d];
      const b3 = k[k3 + d];
      let a = q[q0 + d];
      a00 += a * b0; a01 += a * b1; a02 += a * b2; a03 += a * b3;
      a = q[q1 + d];
      a10 += a * b0; a11 += a * b1; a12 += a * b2; a13 += a * b3;
      a = q[q2 + d];
      a20 += a * b0; a21 += a * b1; a22 += a * b2; a23 += a * b3;
      a = q[q3 + d];
      a30 += a * b0; a31 += a * b1; a32 += a * b2; a33 += a * b3;
    }
    sc[o + p] = a00 * scale; sc[o + p + 1] = a01 * scale; sc[o + p + 2] = a02 * scale; sc[o + p + 3] = a03 * scale;
    sc[o1 + p] = a10 * scale; sc[o1 + p + 1] = a11 * scale; sc[o1 + p + 2] = a12 * scale; sc[o1 + p + 3] = a13 * scale;
    sc[o2 + p] = a20 * scale; sc[o2 + p + 1] = a21 * scale; sc[o2 + p + 2] = a22 * scale; sc[o2 + p + 3] = a23 * scale;
    sc[o3 + p] = a30 * scale; sc[o3 + p + 1] = a31 * scale; sc[o3 + p + 2] = a32 * scale; sc[o3 + p + 3] = a33 * scale;
  }
  for (; p < n; p++) {
    const k0 = kOff[p];
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (let d = 0; d < D; d++) {
      const b = k[k0 + d];
      a0 += q[q0 + d] * b;
      a1 += q[q1 + d] * b;
      a2 += q[q2 + d] * b;
      a3 += q[q3 + d] * b;
    }
    sc[o + p] = a0 * scale;
    sc[o1 + p] = a1 * scale;
    sc[o2 + p] = a2 * scale;
    sc[o3 + p] = a3 * scale;
  }
}

/** Scores of one query vector against keys [0, n) into sc[o ..]. */
function scores1(sc: Float64Array, o: number, q: Float32Array, q0: number, k: Float32Array, kOff: Int32Array, n: number, D: number, scale: number): void {
  let p = 0;
  for (; p + 4 <= n; p += 4) {
    const k0 = kOff[p];
    const k1 = kOff[p + 1];
    const k2 = kOff[p + 2];
    const k3 = kOff[p + 3];
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (let d = 0; d < D; d++) {
      const a = q[q0 + d];
      a0 += a * k[k0 + d];
      a1 += a * k[k1 + d];
      a2 += a * k[k2 + d];
      a3 += a * k[k3 + d];
    }
    sc[o + p] = a0 * scale;
    sc[o + p + 1] = a1 * scale;
    sc[o + p + 2] = a2 * scale;
    sc[o + p + 3] = a3 * scale;
  }
  for (; p < n; p++) {
    const k0 = kOff[p];
    let a0 = 0;
    for (let d = 0; d < D; d++) a0 += q[q0 + d] * k[k0 + d];
    sc[o + p] = a0 * scale;
  }
}

/**
 * Outputs of query vectors j..j+3 (probability rows o, o + ld, ...): 4 output dims at a time,
 * all four vectors over the keys they share, then each over the rest of its own.
 */
function weighted4(
  out: Float32Array,
  sc: Float64Array,
  o: number,
  ld: number,
  qOff: Int32Array,
  lims: Int32Array,
  inv: Float64Array,
  j: number,
  v: Float32Array,
  kOff: Int32Array,
  D: number,
): void {
  const o1 = o + ld;
  const o2 = o1 + ld;
  const o3 = o2 + ld;
  const n0 = lims[j], n1 = lims[j + 1], n2 = lims[j + 2], n3 = lims[j + 3];
  const m = Math.min(n0, n1, n2, n3);
  const y0 = qOff[j], y1 = qOff[j + 1], y2 = qOff[j + 2], y3 = qOff[j + 3];
  const s0 = inv[j], s1 = inv[j + 1], s2 = inv[j + 2], s3 = inv[j + 3];
  let d = 0;
  for (; d + 4 <= D; d += 4) {
    let a00 = 0, a01 = 0, a02 = 0, a03 = 0;
    let a10 = 0, a11 = 0, a12 = 0, a13 = 0;
    let a20 = 0, a21 = 0, a22 = 0, a23 = 0;
    let a30 = 0, a31 = 0, a32 = 0, a33 = 0;
    let p = 0;
    for (; p < m; p++) {
      const vo = kOff[p] + d;
      const b0 = v[vo];
      const b1 = v[vo + 1];
      const b2 = v[vo + 2];
      const b3 = v[vo + 3];
      let e = sc[o + p];
      a00 += e * b0; a01 += e * b1; a02 += e * b2; a03 += e * b3;
      e = sc[o1 + p];
      a10 += e * b0; a11 += e * b1; a12 += e * b2; a13 += e * b3;
      e = sc[o2 + p];
      a20 += e * b0; a21 += e * b1; a22 += e * b2; a23 += e * b3;
      e = sc[o3 + p];
      a30 += e * b0; a31 += e * b1; a32 += e * b2; a33 += e * b3;
    }
    for (p = m; p < n0; p++) {
      const vo = kOff[p] + d;
      const e = sc[o + p];
      a00 += e * v[vo]; a01 += e * v[vo + 1]; a02 += e * v[vo + 2]; a03 += e * v[vo + 3];
    }
    for (p = m; p < n1; p++) {
      const vo = kOff[p] + d;
      const e = sc[o1 + p];
      a10 += e * v[vo]; a11 += e * v[vo + 1]; a12 += e * v[vo + 2]; a13 += e * v[vo + 3];
    }
    for (p = m; p < n2; p++) {
      const vo = kOff[p] + d;
      const e = sc[o2 + p];
      a20 += e * v[vo]; a21 += e * v[vo + 1]; a22 += e * v[vo + 2]; a23 += e * v[vo + 3];
    }
    for (p = m; p < n3; p++) {
      const vo = kOff[p] + d;
      const e = sc[o3 + p];
      a30 += e * v[vo]; a31 += e * v[vo + 1]; a32 += e * v[vo + 2]; a33 += e * v[vo + 3];
    }
    out[y0 + d] = a00 * s0; out[y0 + d + 1] = a01 * s0; out[y0 + d + 2] = a02 * s0; out[y0 + d + 3] = a03 * s0;
    out[y1 + d] = a10 * s1; out[y1 + d + 1] = a11 * s1; out[y1 + d + 2] = a12 * s1; out[y1 + d + 3] = a13 * s1;
    out[y2 + d] = a20 * s2; out[y2 + d + 1] = a21 * s2; out[y2 + d + 2] = a22 * s2; out[y2 + d + 3] = a23 * s2;
    out[y3 + d] = a30 * s3; out[y3 + d + 1] = a31 * s3; out[y3 + d + 2] = a32 * s3; out[y3 + d + 3] = a33 * s3;
  }
  // Head dims that are not a multiple of 4.
  for (; d < D; d++) {
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (let p = 0; p < n0; p++) a0 += sc[o + p] * v[kOff[p] + d];
    for (let p = 0; p < n1; p++) a1 += sc[o1 + p] * v[kOff[p] + d];
    for (let p = 0; p < n2; p++) a2 += sc[o2 + p] * v[kOff[p] + d];
    for (let p = 0; p < n3; p++) a3 += sc[o3 + p] * v[kOff[p] + d];
    out[y0 + d] = a0 * s0;
    out[y1 + d] = a1 * s1;
    out[y2 + d] = a2 * s2;
    out[y3 + d] = a3 * s3;
  }
}

/** Output of one query vector (probabilities sc[o ..], keys [0, n)) into out[y ..]. */
function weighted1(out: Float32Array, sc: Float64Array, o: number, y: number, n: number, s: number, v: Float32Array, kOff: Int32Array, D: number): void {
  let d = 0;
  for (; d + 4 <= D; d += 4) {
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (let p = 0; p < n; p++) {
      const vo = kOff[p] + d;
      const e = sc[o + p];
      a0 += e * v[vo];
      a1 += e * v[vo + 1];
      a2 += e * v[vo + 2];
      a3 += e * v[vo + 3];
    }
    out[y + d] = a0 * s;
    out[y + d + 1] = a1 * s;
    out[y + d + 2] = a2 * s;
    out[y + d + 3] = a3 * s;
  }
  for (; d < D; d++) {
    let a = 0;
    for (let p = 0; p < n; p++) a += sc[o + p] * v[kOff[p] + d];
    out[y + d] = a * s;
  }
}

export interface AttnLayout {
  S: number;
  T: number;
  blockSize: number;
  maxBlocks: number;
  numBlocks: number;
}

/**
 * Check a batch description against the AttnMeta contract before any cache read; returns the
 * largest context length. The stated maxima must cover the real ones, since GPU kernels size
 * their grids by them.
 */
export function checkAttnMeta(
  cuSeqlensQ: Int32Array,
  contextLens: Int32Array,
  blockTables: Int32Array,
  layout: AttnLayout,
  stated: { maxSeqlenQ: number; maxContextLen: number },
): number {
  const { S, T, blockSize, maxBlocks, numBlocks } = layout;
  const fail = (msg: string): never => {
    throw new Error(`attention: ${msg}`);
  };
  if (cuSeqlensQ[0] !== 0 || cuSeqlensQ[S] !== T) fail(`cuSeqlensQ must run from 0 to T = ${T}, got ${cuSeqlensQ[0]} .. ${cuSeqlensQ[S]}`);
  let maxQ = 0;
  let maxCtx = 0;
  for (let s = 0; s < S; s++) {
    const qlen = cuSeqlensQ[s + 1] - cuSeqlensQ[s];
    const ctx = contextLens[s];
    if (qlen < 0) fail(`cuSeqlensQ decreases at sequence ${s} (${cuSeqlensQ[s]} -> ${cuSeqlensQ[s + 1]})`);
    if (qlen > ctx) fail(`sequence ${s} has ${qlen} query rows but a context of ${ctx}; the queries are the last tokens of the context`);
    if (ctx > maxBlocks * blockSize) fail(`sequence ${s} has context ${ctx} but its block table holds ${maxBlocks} blocks of ${blockSize}`);
    const used = Math.ceil(ctx / blockSize);
    for (let b = 0; b < used; b++) {
      const block = blockTables[s * maxBlocks + b];
      if (block < 0 || block >= numBlocks) fail(`block table of sequence ${s}, entry ${b}: block ${block} is outside the cache's ${numBlocks} blocks`);
    }
    maxQ = Math.max(maxQ, qlen);
    maxCtx = Math.max(maxCtx, ctx);
  }
  if (stated.maxSeqlenQ < maxQ || stated.maxContextLen < maxCtx) {
    fail(`meta states maxSeqlenQ ${stated.maxSeqlenQ} and maxContextLen ${stated.maxContextLen}, the batch has ${maxQ} and ${maxCtx}`);
  }
  return maxCtx;
}
