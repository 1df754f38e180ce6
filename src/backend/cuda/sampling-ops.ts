/**
 * The CUDA backend's sample(): one token per row of logits, chosen on the device so only ids and
 * logprobs (and top lists when asked) come back. Plain greedy rows (no penalties, no top
 * logprobs: the usual decode) take an argmax-only kernel with no parameters to upload; other
 * rows the full sampler (kernels/sampling.cu); the rare batches it cannot take (host-sampling.ts
 * names them) download their logits and sample on the host.
 */
import type { SampleResult, SamplingParams, Tensor } from '../backend.ts';
import { checkPendingRows, hasPenalties } from '../cpu/penalties.ts';
import { sampleArgs } from '../op-shapes.ts';
import { HostSampler, deviceCanSample, unpackSampleResult } from './host-sampling.ts';
import { DTYPE_CODE } from './native.ts';
import type { NativeCuda } from './native.ts';
import { PackScratch, ROW_WORDS, packSamplingParams } from './sampling-params.ts';
import type { CudaDType, CudaTensor } from './tensor.ts';
import type { FloatTensor } from './training-ops.ts';

export interface SamplingOpContext {
  readonly native: NativeCuda;
  float(op: string, name: string, t: Tensor, rank?: number): FloatTensor;
  scratch(shape: readonly number[], dtype: CudaDType): CudaTensor;
}

/** TANDEM_GREEDY_KERNEL=0: greedy rows take the full sampler too (for comparisons). */
const GREEDY_KERNEL = process.env.TANDEM_GREEDY_KERNEL !== '0';

/** A row answered by an argmax alone: greedy, no penalties, no top logprobs. */
function plainGreedy(p: SamplingParams): boolean {
  return p.temperature === 0 && !hasPenalties(p) && (p.topLogprobs ?? 0) === 0;
}

export class CudaSamplingOps {
  private readonly host = new HostSampler();
  /** The packed parameters' host buffer, reused: upload copies it before returning. */
  private readonly packScratch = new PackScratch();

  constructor(private readonly ctx: SamplingOpContext) {}

  /**
   * keep: also store the ids there on the device (Backend.sample's keepIds, checked i32 by the
   * caller); pending: Backend.sample's pending tokens (ids checked i32 by the caller).
   */
  async sample(logits: Tensor, params: readonly SamplingParams[], keep?: CudaTensor, pending?: { ids: CudaTensor; rows: Int32Array }): Promise<SampleResult> {
    const { native } = this.ctx;
    const lt = this.ctx.float('sample', 'logits', logits, 2);
    const [S, V] = lt.shape;
    sampleArgs(lt.shape, params);
    if (keep !== undefined && keep.size < S) throw new Error(`sample: keepIds [${keep.shape.join(', ')}] holds fewer than the ${S} rows`);
    if (pending !== undefined) checkPendingRows(pending.rows, S, pending.ids.size);
    if (S === 0) return { ids: new Int32Array(0), logprobs: new Float32Array(0), top: [] };
    if (!deviceCanSample(params, V, native.sampleLimits())) {
      // The ids would exist only after the logits came back: too late for work queued meanwhile;
      // and pending ids exist only on the device.
      if (keep !== undefined || pending !== undefined) {
        throw new Error(`sample: ${keep !== undefined ? 'keepIds' : 'pending tokens'} asked for rows drawn on the host (more top logprobs or a larger penalised vocabulary than the device sampler takes)`);
      }
      const x = (await native.download(lt.ptr, lt.size, DTYPE_CODE[lt.dtype])) as Float32Array;
      return this.host.sample(x, S, V, params);
    }
    // (plain greedy rows have no penalties: a pending token changes nothing for them)
    if (GREEDY_KERNEL && params.every(plainGreedy)) return this.greedy(lt, S, V, keep);
    // One upload of every row's parameters; ids, logprobs and top lists come back in one download.
    const packed = packSamplingParams(params, V, pending?.rows, this.packScratch);
    const pbuf = this.ctx.scratch([packed.words.length], 'i32');
    native.upload(pbuf.ptr, packed.words, DTYPE_CODE.i32);
    const K = packed.maxTop;
    const out = this.ctx.scratch([2 * S * (1 + K)], 'i32');
    const topIds = out.ptr + 8 * S;
    native.sample(
      out.ptr, out.ptr + 4 * S, topIds, topIds + 4 * S * K, K, lt.ptr, S, V, DTYPE_CODE[lt.dtype],
      pbuf.ptr, pbuf.ptr + 4 * S * ROW_WORDS, pending?.ids.ptr ?? 0, packed.anyPenalties ? 1 : 0,
    );
    if (keep !== undefined) native.copy(keep.ptr, out.ptr, 4 * S);
    const words = (await native.download(out.ptr, out.size, DTYPE_CODE.i32)) as Int32Array;
    return unpackSampleResult(words, params, V, K);
  }

  private async greedy(lt: FloatTensor, S: number, V: number, keep: CudaTensor | undefined): Promise<SampleResult> {
    const { native } = this.ctx;
    const out = this.ctx.scratch([2 * S], 'i32');
    const bytes = native.greedySampleWorkspaceBytes(S, V);
    const workspace = bytes > 0 ? this.ctx.scratch([bytes / 4], 'f32').ptr : 0;
    // The kernel stores the ids in keep itself: one stream operation fewer per step than a copy.
    native.greedySample(out.ptr, keep?.ptr ?? 0, out.ptr + 4 * S, lt.ptr, S, V, DTYPE_CODE[lt.dtype], workspace);
    const words = (await native.download(out.ptr, out.size, DTYPE_CODE.i32)) as Int32Array;
    const floats = new Float32Array(words.buffer, words.byteOffset, words.length);
    const none = { ids: new Int32Array(0), logprobs: new Float32Array(0) };
    return { ids: words.subarray(0, S), logprobs: floats.subarray(S, 2 * S), top: Array.from({ length: S }, () => none) };
  }
}
