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
 * For each (row, head): scores over the context walk the block table (no gather of K/V into a
 * contiguous copy), then a two-pass softmax (max, then exp and sum, max subtracted so nothing
 * overflows), then the probability-weighted sum of V rows, also block by block. Scores and the
 * output accumulator are double precision; the output rounds to f32 once.
 */

export interface AttentionDims {
  S: number;
  H: number;
  Hkv: number;
  D: number;
  blockSize: number;
  maxBlocks: number;
}

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
  scores: Float64Array, // workspace of at least the largest context length
  acc: Float64Array, // workspace of at least D
): void {
  const { S, H, Hkv, D, blockSize, maxBlocks } = dims;
  const group = H / Hkv;
  const kvRow = Hkv * D; // floats per cache slot
  for (let s = 0; s < S; s++) {
    const row0 = cuSeqlensQ[s];
    const qlen = cuSeqlensQ[s + 1] - row0;
    const ctx = contextLens[s];
    const table = s * maxBlocks;
    for (let i = 0; i < qlen; i++) {
      const nKeys = ctx - qlen + i + 1; // causal: positions [0, ctx - qlen + i]
      for (let h = 0; h < H; h++) {
        const qo = ((row0 + i) * H + h) * D;
        const kvHead = ((h / group) | 0) * D;

        // Pass 1: scaled dot products and their max.
        let max = -Infinity;
        for (let p = 0, b = 0; p < nKeys; b++) {
          const slot0 = blockTables[table + b] * blockSize;
          const end = Math.min(blockSize, nKeys - p);
          for (let off = 0; off < end; off++, p++) {
            const ko = (slot0 + off) * kvRow + kvHead;
            let dot = 0;
            for (let d = 0; d < D; d++) dot += q[qo + d] * kPool[ko + d];
            const sc = dot * scale;
            scores[p] = sc;
            if (sc > max) max = sc;
          }
        }

        // Pass 2: unnormalised probabilities and their sum.
        let sum = 0;
        for (let p = 0; p < nKeys; p++) {
          const e = Math.exp(scores[p] - max);
          scores[p] = e;
          sum += e;
        }

        // Pass 3: weighted sum of V.
        acc.fill(0, 0, D);
        for (let p = 0, b = 0; p < nKeys; b++) {
          const slot0 = blockTables[table + b] * blockSize;
          const end = Math.min(blockSize, nKeys - p);
          for (let off = 0; off < end; off++, p++) {
            const vo = (slot0 + off) * kvRow + kvHead;
            const e = scores[p];
            for (let d = 0; d < D; d++) acc[d] += e * vPool[vo + d];
          }
        }
        const inv = 1 / sum;
        for (let d = 0; d < D; d++) out[qo + d] = acc[d] * inv;
      }
    }
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
