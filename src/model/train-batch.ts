/**
 * A packed batch for the training forward: whole sequences (prompt + completion, or a chat
 * conversation) laid end to end, and the rows whose next-token log-probability is wanted.
 *
 * Row r of sequence s predicts token r + 1 of s, so a sequence of n tokens has at most n - 1
 * targets; `targetFrom` says which tokens are targets (the completion in GRPO, the assistant
 * turns in SFT). Targets are listed sequence by sequence, in token order.
 */

export interface TrainSequence {
  tokens: readonly number[];
  /**
   * Which tokens are predicted targets: a mask over tokens (index j: 1 when token j is a target;
   * index 0 is ignored) or a number k meaning "tokens k.. are targets" (k >= 1).
   */
  targets: number | ArrayLike<number>;
}

export interface TrainBatch {
  /** Token ids of all sequences, concatenated: [T]. */
  tokens: Int32Array;
  /** Position of each token in its sequence: [T]. */
  positions: Int32Array;
  /** Row offsets of the sequences: [S+1]. */
  cuSeqlens: Int32Array;
  /** Rows whose next token is a target: [R]. */
  targetRows: Int32Array;
  /** The target token of each of those rows: [R]. */
  targets: Int32Array;
  /** Offsets of each sequence's targets in targetRows: [S+1]. */
  cuTargets: Int32Array;
}

export function packTrainBatch(seqs: readonly TrainSequence[], vocabSize: number): TrainBatch {
  if (seqs.length === 0) throw new Error('packTrainBatch: empty batch');
  let T = 0;
  for (const s of seqs) T += s.tokens.length;
  const tokens = new Int32Array(T);
  const positions = new Int32Array(T);
  const cuSeqlens = new Int32Array(seqs.length + 1);
  const cuTargets = new Int32Array(seqs.length + 1);
  const rows: number[] = [];
  const targets: number[] = [];
  let row = 0;
  seqs.forEach((s, i) => {
    const n = s.tokens.length;
    if (n < 2) throw new Error(`packTrainBatch: sequence ${i} has ${n} token(s); training needs at least 2`);
    cuSeqlens[i] = row;
    cuTargets[i] = rows.length;
    const mask = s.targets;
    if (typeof mask === 'number') {
      if (!Number.isInteger(mask) || mask < 1 || mask > n) throw new Error(`packTrainBatch: sequence ${i}: targets start ${mask} is outside 1..${n}`);
    } else if (mask.length !== n) {
      throw new Error(`packTrainBatch: sequence ${i}: target mask has ${mask.length} entries for ${n} tokens`);
    }
    for (let j = 0; j < n; j++) {
      const id = s.tokens[j];
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new Error(`packTrainBatch: sequence ${i}: token ${id} at ${j} is outside the vocabulary of ${vocabSize}`);
      tokens[row + j] = id;
      positions[row + j] = j;
      const isTarget = j >= 1 && (typeof mask === 'number' ? j >= mask : mask[j] !== 0);
      if (isTarget) {
        rows.push(row + j - 1);
        targets.push(id);
      }
    }
    row += n;
  });
  cuSeqlens[seqs.length] = row;
  cuTargets[seqs.length] = rows.length;
  return { tokens, positions, cuSeqlens, targetRows: Int32Array.from(rows), targets: Int32Array.from(targets), cuTargets };
}
