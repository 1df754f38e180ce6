/**
 * The safetensors format: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
 * (tensor name -> {dtype, shape, data_offsets: [begin, end]} relative to the data section,
 * plus an optional "__metadata__" string map), then the data section.
 *
 * Opening a file validates the whole header and keeps a file descriptor; tensor bytes are read
 * on demand with positional reads, so loading a checkpoint never holds more than the f32
 * results the caller keeps plus one tensor's raw bytes.
 */
import fs from 'node:fs';
import os from 'node:os';
import { z } from 'zod';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from './dtype.ts';

export type StDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<StDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Size in bytes of one element of a safetensors dtype. */
export function dtypeBytes(dtype: StDType): number {
  return DTYPE_BYTES[dtype];
}

export interface TensorInfo {
  name: string;
  dtype: StDType;
  shape: number[];
  file: string;
  /** Absolute position of the first byte in the file. */
  byteOffset: number;
  byteLength: number;
}

export interface TensorToWrite {
  name: string;
  shape: readonly number[];
  data: Float32Array | Int32Array;
  dtype: 'F32' | 'BF16' | 'F16' | 'I32';
}

/** Headers beyond this are corruption, not checkpoints (real ones are well under 10 MB). */
const MAX_HEADER_BYTES = 100_000_000;
/** readSync/writeSync take at most ~2 GiB per call; stay well below. */
const IO_CHUNK_BYTES = 1 << 30;
/** Elements converted per batch when narrowing to 16 bits on write. */
const WRITE_CHUNK_ELEMENTS = 1 << 20;
const METADATA_KEY = '__metadata__';

const nonNegativeInt = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const entrySchema = z.object({
  dtype: z.string(),
  shape: z.array(nonNegativeInt),
  data_offsets: z.tuple([nonNegativeInt, nonNegativeInt]),
});
const metadataSchema = z.record(z.string(), z.string());

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  readonly #byName: Map<string, TensorInfo>;
  #fd: number | null;

  private constructor(path: string, fd: number, tensors: TensorInfo[], metadata: Record<string, string>) {
    this.path = path;
    this.#fd = fd;
    this.metadata = metadata;
    this.#byName = new Map(tensors.map((t) => [t.name, t]));
  }

  /** Opens and fully validates the header; reads no tensor data. */
  static open(path: string): SafetensorsFile {
    if (os.endianness() !== 'LE') throw new Error('safetensors: only little-endian hosts are supported');
    const fd = fs.openSync(path, 'r');
    try {
      const { tensors, metadata } = readHeader(path, fd);
      return new SafetensorsFile(path, fd, tensors, metadata);
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
  }

  /** Tensors in header order. */
  tensors(): TensorInfo[] {
    return [...this.#byName.values()];
  }

  get(name: string): TensorInfo | undefined {
    return this.#byName.get(name);
  }

  /** Exactly the tensor's bytes, in a buffer of its own (offset 0, so typed views are aligned). */
  readRaw(name: string): Buffer {
    const info = this.#require(name);
    const buf = Buffer.allocUnsafeSlow(info.byteLength);
    readFully(this.#openFd(), buf, info.byteOffset, this.path, name);
    return buf;
  }

  /** The tensor widened to f32. F32 is read straight into the result; no extra copy. */
  readF32(name: string): Float32Array {
    const info = this.#require(name);
    const count = info.byteLength / DTYPE_BYTES[info.dtype];
    switch (info.dtype) {
      case 'F32': {
        const out = new Float32Array(count);
        readFully(this.#openFd(), new Uint8Array(out.buffer), info.byteOffset, this.path, name);
        return out;
      }
      case 'BF16':
        return bf16ToF32(asUint16(this.readRaw(name)));
      case 'F16':
        return f16ToF32(asUint16(this.readRaw(name)));
      case 'F64': {
        const raw = this.readRaw(name);
        return Float32Array.from(new Float64Array(raw.buffer, raw.byteOffset, count));
      }
      default:
        throw new Error(
          `${this.path}: tensor "${name}" has dtype ${info.dtype}; readF32 converts only F32, F16, BF16 and F64`,
        );
    }
  }

  close(): void {
    if (this.#fd !== null) fs.closeSync(this.#fd);
    this.#fd = null;
  }

  #require(name: string): TensorInfo {
    const info = this.#byName.get(name);
    if (!info) throw new Error(`${this.path}: no tensor named "${name}"`);
    return info;
  }

  #openFd(): number {
    if (this.#fd === null) throw new Error(`${this.path}: file was closed`);
    return this.#fd;
  }
}

function readHeader(path: string, fd: number): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  const fileSize = fs.fstatSync(fd).size;
  if (fileSize < 8) throw new Error(`${path}: not a safetensors file: ${fileSize} bytes, shorter than the 8-byte header length`);
  const lenBuf = Buffer.alloc(8);
  readFully(fd, lenBuf, 0, path);
  const headerLen = lenBuf.readBigUInt64LE(0);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    throw new Error(`${path}: header length ${headerLen} bytes is absurd (limit ${MAX_HEADER_BYTES}); the file is corrupt or not safetensors`);
  }
  const n = Number(headerLen);
  if (8 + n > fileSize) {
    throw new Error(`${path}: header length ${n} bytes is larger than the file (${fileSize} bytes); the file is truncated or not safetensors`);
  }
  const headerBuf = Buffer.alloc(n);
  readFully(fd, headerBuf, 8, path);
  const header = parseHeaderJson(path, headerBuf);

  const dataStart = 8 + n;
  const dataSize = fileSize - dataStart;
  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === METADATA_KEY) {
      const parsed = metadataSchema.safeParse(value);
      if (!parsed.success) throw new Error(`${path}: "${METADATA_KEY}" must map strings to strings: ${issuesText(parsed.error, value)}`);
      metadata = parsed.data;
      continue;
    }
    tensors.push(parseEntry(path, name, value, dataStart, dataSize));
  }
  checkNoOverlap(path, tensors);
  return { tensors, metadata };
}

function parseHeaderJson(path: string, bytes: Buffer): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`${path}: header is not valid UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: header is not valid JSON (${(err as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new Error(`${path}: header must be a JSON object, found ${Array.isArray(json) ? 'an array' : String(json)}`);
  }
  return json as Record<string, unknown>;
}

function parseEntry(path: string, name: string, value: unknown, dataStart: number, dataSize: number): TensorInfo {
  const where = `${path}: tensor "${name}"`;
  const parsed = entrySchema.safeParse(value);
  if (!parsed.success) throw new Error(`${where}: bad header entry: ${issuesText(parsed.error, value)}`);
  const { dtype, shape, data_offsets: [begin, end] } = parsed.data;
  if (!(dtype in DTYPE_BYTES)) {
    throw new Error(`${where}: unknown dtype "${dtype}" (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
  }
  const stDtype = dtype as StDType;
  if (begin > end) throw new Error(`${where}: data_offsets [${begin}, ${end}] end before they begin`);
  const elements = shape.reduce((a, b) => a * b, 1);
  const expected = elements * DTYPE_BYTES[stDtype];
  if (!Number.isSafeInteger(expected)) throw new Error(`${where}: shape [${shape}] is absurdly large`);
  if (end - begin !== expected) {
    throw new Error(
      `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes, but shape [${shape}] of ${stDtype} needs ${expected}`,
    );
  }
  if (end > dataSize) {
    throw new Error(
      `${where}: data_offsets [${begin}, ${end}] run past the end of the data section (${dataSize} bytes); the file is truncated or its header is wrong`,
    );
  }
  return { name, dtype: stDtype, shape, file: path, byteOffset: dataStart + begin, byteLength: expected };
}

/** Two non-empty tensors sharing bytes means a corrupt (or malicious) header. */
function checkNoOverlap(path: string, tensors: readonly TensorInfo[]): void {
  const sorted = tensors.filter((t) => t.byteLength > 0).sort((a, b) => a.byteOffset - b.byteOffset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    const cur = sorted[i];
    if (cur.byteOffset < prev.byteOffset + prev.byteLength) {
      throw new Error(`${path}: tensors "${prev.name}" and "${cur.name}" overlap in the data section`);
    }
  }
}

/** "shape.0: Too small: expected number to be >=0 (found -2)", one per issue. */
function issuesText(error: z.ZodError, input: unknown): string {
  return error.issues
    .map((issue) => {
      let found: unknown = input;
      for (const key of issue.path) found = (found as Record<PropertyKey, unknown> | undefined)?.[key as PropertyKey];
      const where = issue.path.length ? `${issue.path.join('.')}: ` : '';
      return `${where}${issue.message}${found === undefined ? '' : ` (found ${JSON.stringify(found)})`}`;
    })
    .join('; ');
}

function asUint16(buf: Buffer): Uint16Array {
  return new Uint16Array(buf.buffer, buf.byteOffset, buf.byteLength / 2);
}

/** Fills `target` from `position`, in chunks below the 2 GiB per-call limit, or throws. */
function readFully(fd: number, target: Uint8Array, position: number, path: string, tensor?: string): void {
  let done = 0;
  while (done < target.byteLength) {
    const want = Math.min(IO_CHUNK_BYTES, target.byteLength - done);
    const got = fs.readSync(fd, target, done, want, position + done);
    if (got === 0) {
      const what = tensor ? `tensor "${tensor}"` : 'header';
      throw new Error(`${path}: unexpected end of file reading ${what} at byte ${position + done}; the file was truncated`);
    }
    done += got;
  }
}

function writeFully(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.byteLength) {
    const want = Math.min(IO_CHUNK_BYTES, bytes.byteLength - done);
    done += fs.writeSync(fd, bytes, done, want);
  }
}

/** Bytes a tensor will occupy once written in its target dtype. */
export function writtenByteLength(t: TensorToWrite): number {
  return t.data.length * DTYPE_BYTES[t.dtype];
}

/**
 * Writes tensors in the given order, contiguous, after a header padded with spaces to a
 * multiple of 8 bytes (as the reference implementation does). Atomic: the file appears under
 * `path` only once complete.
 */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  const header = buildHeader(path, tensors, metadata);
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    writeFully(fd, header);
    for (const t of tensors) writeTensorData(fd, t);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.renameSync(tmp, path);
  } catch (err) {
    try { fs.closeSync(fd); } catch { /* already closed */ }
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

function buildHeader(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): Buffer {
  const json: Record<string, unknown> = {};
  if (metadata !== undefined) json[METADATA_KEY] = metadata;
  let offset = 0;
  for (const t of tensors) {
    checkTensorToWrite(path, t);
    if (Object.hasOwn(json, t.name)) throw new Error(`${path}: tensor "${t.name}" is given twice`);
    const length = writtenByteLength(t);
    json[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + length] };
    offset += length;
  }
  const text = Buffer.from(JSON.stringify(json), 'utf8');
  const padded = Math.ceil(text.byteLength / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  text.copy(out, 8);
  return out;
}

function checkTensorToWrite(path: string, t: TensorToWrite): void {
  const where = `${path}: tensor "${t.name}"`;
  if (t.name === METADATA_KEY) throw new Error(`${path}: "${METADATA_KEY}" is reserved and cannot name a tensor`);
  if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new Error(`${where}: shape [${t.shape}] must be non-negative integers`);
  }
  const elements = t.shape.reduce((a, b) => a * b, 1);
  if (elements !== t.data.length) {
    throw new Error(`${where}: shape [${t.shape}] has ${elements} elements but data has ${t.data.length}`);
  }
  const isInt = t.data instanceof Int32Array;
  if (isInt !== (t.dtype === 'I32')) {
    throw new Error(`${where}: dtype ${t.dtype} needs ${t.dtype === 'I32' ? 'an Int32Array' : 'a Float32Array'}`);
  }
}

function writeTensorData(fd: number, t: TensorToWrite): void {
  if (t.dtype === 'F32' || t.dtype === 'I32') {
    writeFully(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    return;
  }
  // Narrow in batches so writing never needs a second full-size copy of a large tensor.
  const src = t.data as Float32Array;
  const narrow = t.dtype === 'BF16' ? f32ToBf16 : f32ToF16;
  const scratch = new Uint16Array(Math.min(WRITE_CHUNK_ELEMENTS, src.length));
  for (let i = 0; i < src.length; i += WRITE_CHUNK_ELEMENTS) {
    const part = src.subarray(i, Math.min(i + WRITE_CHUNK_ELEMENTS, src.length));
    const bits = narrow(part, scratch.subarray(0, part.length));
    writeFully(fd, new Uint8Array(bits.buffer, 0, bits.byteLength));
  }
}
