/**
 * Server-sent events as OpenAI streams them: one `data: {json}\n\n` per chunk, then
 * `data: [DONE]\n\n`. The stream pulls a chunk only when the socket has room for it, so a slow
 * client slows its own generation instead of growing a buffer. `onClose` runs exactly once:
 * after [DONE] with cancelled = false, or when the client goes away with cancelled = true
 * (the caller then aborts the generation).
 */
import { toApiError } from './errors.ts';

const encoder = new TextEncoder();

export function sseFrame(data: unknown): Uint8Array {
  return encoder.encode(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
}

export function sseResponse(chunks: AsyncIterable<unknown>, onClose: (cancelled: boolean) => void): Response {
  const iterator = chunks[Symbol.asyncIterator]();
  let closed = false;
  const close = (cancelled: boolean): void => {
    if (closed) return;
    closed = true;
    onClose(cancelled);
  };
  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let next: IteratorResult<unknown> | { error: unknown };
        try {
          next = await iterator.next();
        } catch (error) {
          next = { error };
        }
        if (closed) return; // cancelled while this pull waited
        if ('error' in next) {
          // Headers are gone already: the error travels as an event, as vLLM sends it.
          controller.enqueue(sseFrame(toApiError(next.error).body()));
        } else if (!next.done) {
          controller.enqueue(sseFrame(next.value));
          return;
        }
        controller.enqueue(sseFrame('[DONE]'));
        controller.close();
        close(false);
      },
      async cancel() {
        close(true);
        await iterator.return?.();
      },
    },
    { highWaterMark: 0 },
  );
  return new Response(stream, {
    status: 200,
    headers: { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' },
  });
}
