/**
 * topLogprobs: the k most likely tokens of a row of logits and their log-softmax values
 *   x is one row (V) at offset o; returns ids (k) most likely first, ties by lower id.
 * A size-k min-heap keeps the best k in one pass; k is small (OpenAI allows up to 20).
 */
export function topLogprobs(x: Float32Array, o: number, V: number, k: number, logZ: number): { ids: Int32Array; logprobs: Float32Array } {
  const n = Math.min(k, V);
  const heap = new Int32Array(n);
  // worse(a, b): token a ranks after token b.
  const worse = (a: number, b: number): boolean => x[o + a] < x[o + b] || (x[o + a] === x[o + b] && a > b);
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) return;
      const r = l + 1;
      const c = r < n && worse(heap[r], heap[l]) ? r : l;
      if (!worse(heap[c], heap[i])) return;
      const t = heap[i];
      heap[i] = heap[c];
      heap[c] = t;
      i = c;
    }
  };
  for (let i = 0; i < n; i++) heap[i] = i;
  for (let i = (n >> 1) - 1; i >= 0; i--) siftDown(i);
  for (let i = n; i < V; i++) {
    if (n > 0 && worse(heap[0], i)) {
      heap[0] = i;
      siftDown(0);
    }
  }
  const ids = Array.from(heap).sort((a, b) => (worse(a, b) ? 1 : worse(b, a) ? -1 : 0));
  return { ids: Int32Array.from(ids), logprobs: Float32Array.from(ids, (id) => x[o + id] - logZ) };
}
