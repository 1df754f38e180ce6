import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/model/safetensors.ts';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/model/dtype.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-safetensors-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
const fresh = (name = 'file'): string => path.join(tmp, `${name}-${counter++}.safetensors`);

/** A safetensors file built by hand, so tests control every byte of a corrupt header. */
function rawFile(header: unknown, data: Buffer | number = 0, opts: { headerLen?: bigint } = {}): string {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.headerLen ?? BigInt(text.length));
  const body = typeof data === 'number' ? Buffer.alloc(data) : data;
  const file = fresh('raw');
  fs.writeFileSync(file, Buffer.concat([len, text, body]));
  return file;
}

/** The error thrown by opening `file`; fails the test if it opens. */
function openError(file: string): Error {
  try {
    SafetensorsFile.open(file).close();
  } catch (err) {
    return err as Error;
  }
  assert.fail(`${file} opened but should have been rejected`);
}

function assertOpenFails(file: string, ...expected: (string | RegExp)[]): void {
  const { message } = openError(file);
  assert.ok(message.includes(file), `message should name the file: ${message}`);
  for (const e of expected) {
    if (typeof e === 'string') assert.ok(message.includes(e), `message should contain ${JSON.stringify(e)}: ${message}`);
    else assert.match(message, e);
  }
}

const values = Float32Array.from([0, 1, -1.5, 1 / 3, 65504, 1e-7, -3.25e4, 2.5]);

function roundTrip(dtype: 'F32' | 'BF16' | 'F16'): { file: SafetensorsFile; path: string } {
  const p = fresh(dtype);
  writeSafetensors(p, [{ name: 'w', shape: [2, 4], data: values, dtype }]);
  return { file: SafetensorsFile.open(p), path: p };
}

describe('safetensors round trips', () => {
  it('F32 is exact', () => {
    const { file, path: p } = roundTrip('F32');
    const info = file.get('w');
    assert.deepEqual(info && { ...info, byteOffset: 0 }, { name: 'w', dtype: 'F32', shape: [2, 4], file: p, byteOffset: 0, byteLength: 32 });
    assert.equal(info!.byteOffset, fs.statSync(p).size - 32);
    assert.deepEqual(file.readF32('w'), values);
    file.close();
  });

  it('BF16 stores the nearest-even bf16 values', () => {
    const { file } = roundTrip('BF16');
    const got = file.readF32('w');
    assert.deepEqual(got, bf16ToF32(f32ToBf16(values)));
    assert.equal(got[3], 0.333984375); // 1/3 in bf16
    assert.equal(got[2], -1.5);
    assert.equal(file.get('w')?.byteLength, 16);
    file.close();
  });

  it('F16 stores the nearest-even half values', () => {
    const { file } = roundTrip('F16');
    const got = file.readF32('w');
    assert.deepEqual(got, f16ToF32(f32ToF16(values)));
    assert.equal(got[3], 0.333251953125); // 1/3 in half
    assert.equal(got[4], 65504);
    file.close();
  });

  it('I32 round-trips through readRaw; readF32 refuses it', () => {
    const p = fresh();
    const ids = Int32Array.from([0, -1, 2147483647, -2147483648, 151643]);
    writeSafetensors(p, [{ name: 'ids', shape: [5], data: ids, dtype: 'I32' }]);
    const file = SafetensorsFile.open(p);
    const raw = file.readRaw('ids');
    assert.deepEqual(new Int32Array(raw.buffer, raw.byteOffset, 5), ids);
    assert.throws(() => file.readF32('ids'), (e: Error) => e.message.includes(p) && e.message.includes('"ids"') && e.message.includes('I32'));
    file.close();
  });

  it('F64 tensors are narrowed to f32 on read', () => {
    const data = Buffer.from(Float64Array.from([1 / 3, -2, 1e300]).buffer);
    const p = rawFile({ d: { dtype: 'F64', shape: [3], data_offsets: [0, 24] } }, data);
    const file = SafetensorsFile.open(p);
    assert.deepEqual(file.readF32('d'), Float32Array.from([1 / 3, -2, Infinity]));
    file.close();
  });

  it('metadata round-trips; absent metadata reads as {}', () => {
    const p = fresh();
    writeSafetensors(p, [{ name: 'a', shape: [1], data: Float32Array.of(1), dtype: 'F32' }], { format: 'pt', note: 'ünïcödé' });
    const file = SafetensorsFile.open(p);
    assert.deepEqual(file.metadata, { format: 'pt', note: 'ünïcödé' });
    file.close();
    const q = fresh();
    writeSafetensors(q, [{ name: 'a', shape: [1], data: Float32Array.of(1), dtype: 'F32' }]);
    const plain = SafetensorsFile.open(q);
    assert.deepEqual(plain.metadata, {});
    plain.close();
  });

  it('writes a space-padded header (multiple of 8) and tensors contiguous in the given order', () => {
    const p = fresh();
    const tensors: TensorToWrite[] = [
      { name: 'z.first', shape: [3], data: Float32Array.of(1, 2, 3), dtype: 'BF16' },
      { name: 'a.second', shape: [2, 1], data: Float32Array.of(4, 5), dtype: 'F32' },
      { name: 'empty', shape: [0, 7], data: new Float32Array(0), dtype: 'F16' },
      { name: 'm.third', shape: [], data: Float32Array.of(6), dtype: 'F16' },
    ];
    writeSafetensors(p, tensors, { format: 'pt' });
    const bytes = fs.readFileSync(p);
    const n = Number(bytes.readBigUInt64LE(0));
    assert.equal(n % 8, 0);
    const headerText = bytes.subarray(8, 8 + n).toString('utf8');
    assert.match(headerText, /^\{.*\} *$/);
    assert.equal(bytes.length, 8 + n + 6 + 8 + 0 + 2);
    const file = SafetensorsFile.open(p);
    assert.deepEqual(file.tensors().map((t) => [t.name, t.byteOffset - 8 - n, t.byteLength]), [
      ['z.first', 0, 6],
      ['a.second', 6, 8],
      ['empty', 14, 0],
      ['m.third', 14, 2],
    ]);
    assert.deepEqual(file.readF32('m.third'), Float32Array.of(6));
    assert.deepEqual(file.get('m.third')?.shape, []);
    assert.deepEqual(file.readF32('empty'), new Float32Array(0));
    file.close();
  });

  it('reads a file laid out like the reference writer (dtype-sorted, metadata first)', () => {
    const a = Buffer.from(Float32Array.of(1.5, -2).buffer);
    const b = Buffer.from(Uint16Array.of(0x3f80, 0xc040).buffer); // bf16 1, -3
    const p = rawFile(
      {
        __metadata__: { format: 'pt' },
        'model.b': { dtype: 'BF16', shape: [2], data_offsets: [8, 12] },
        'model.a': { dtype: 'F32', shape: [1, 2], data_offsets: [0, 8] },
      },
      Buffer.concat([a, b]),
    );
    const file = SafetensorsFile.open(p);
    assert.deepEqual(file.readF32('model.a'), Float32Array.of(1.5, -2));
    assert.deepEqual(file.readF32('model.b'), Float32Array.of(1, -3));
    assert.deepEqual(file.readRaw('model.b'), b);
    file.close();
  });

  it('replaces an existing file atomically and leaves no temporary file behind', () => {
    const p = fresh();
    writeSafetensors(p, [{ name: 'old', shape: [1], data: Float32Array.of(1), dtype: 'F32' }]);
    writeSafetensors(p, [{ name: 'new', shape: [1], data: Float32Array.of(2), dtype: 'F32' }]);
    const file = SafetensorsFile.open(p);
    assert.deepEqual(file.tensors().map((t) => t.name), ['new']);
    file.close();
    assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')), []);
  });

  it('writes tensors larger than one conversion batch', () => {
    const p = fresh();
    // Small integers are exact in bf16, so any batch misplaced on write shows up as a mismatch.
    const big = Float32Array.from({ length: (1 << 20) * 2 + 3 }, (_, i) => (i % 251) - 125);
    writeSafetensors(p, [{ name: 'big', shape: [big.length], data: big, dtype: 'BF16' }]);
    const file = SafetensorsFile.open(p);
    assert.deepEqual(file.readF32('big'), big);
    file.close();
  });
});

describe('writeSafetensors rejects bad input', () => {
  it('shape that does not match the data length', () => {
    const p = fresh();
    assert.throws(
      () => writeSafetensors(p, [{ name: 'w', shape: [2, 3], data: new Float32Array(5), dtype: 'F32' }]),
      (e: Error) => e.message.includes(p) && e.message.includes('"w"') && e.message.includes('6 elements') && e.message.includes('5'),
    );
    assert.equal(fs.existsSync(p), false);
  });

  it('dtype that does not match the array type', () => {
    const p = fresh();
    assert.throws(() => writeSafetensors(p, [{ name: 'w', shape: [1], data: new Float32Array(1), dtype: 'I32' }]), /"w".*Int32Array/);
    assert.throws(() => writeSafetensors(p, [{ name: 'w', shape: [1], data: new Int32Array(1), dtype: 'F32' }]), /"w".*Float32Array/);
  });

  it('duplicate tensor names', () => {
    const t: TensorToWrite = { name: 'w', shape: [1], data: new Float32Array(1), dtype: 'F32' };
    assert.throws(() => writeSafetensors(fresh(), [t, t]), /"w" is given twice/);
  });
});

describe('SafetensorsFile.open rejects corrupt files', () => {
  const good = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

  it('file shorter than 8 bytes', () => {
    const p = fresh('short');
    fs.writeFileSync(p, Buffer.from([1, 2, 3]));
    assertOpenFails(p, '3 bytes');
  });

  it('header length larger than the file', () => {
    assertOpenFails(rawFile({ w: good }, 8, { headerLen: 5000n }), 'header length 5000', 'larger than the file');
  });

  it('absurd header length', () => {
    assertOpenFails(rawFile({ w: good }, 8, { headerLen: 1n << 40n }), 'absurd');
  });

  it('header that is not UTF-8', () => {
    const p = fresh('utf8');
    const header = Buffer.from([0x7b, 0xff, 0xfe, 0x7d]); // "{", invalid bytes, "}"
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(header.length));
    fs.writeFileSync(p, Buffer.concat([len, header]));
    assertOpenFails(p, 'UTF-8');
  });

  it('header that is not JSON', () => {
    assertOpenFails(rawFile('{"w": {"dtype": "F32",', 8), 'not valid JSON');
  });

  it('header that is JSON but not an object', () => {
    assertOpenFails(rawFile([1, 2, 3], 8), 'must be a JSON object');
  });

  it('entry without dtype', () => {
    assertOpenFails(rawFile({ 'layer.w': { shape: [2], data_offsets: [0, 8] } }, 8), '"layer.w"', 'dtype');
  });

  it('entry without shape', () => {
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'F32', data_offsets: [0, 8] } }, 8), '"layer.w"', 'shape');
  });

  it('entry without data_offsets', () => {
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'F32', shape: [2] } }, 8), '"layer.w"', 'data_offsets');
  });

  it('entry with wrongly typed fields', () => {
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'F32', shape: '2', data_offsets: [0, 8] } }, 8), '"layer.w"', 'shape');
    assertOpenFails(rawFile({ 'layer.w': { dtype: 7, shape: [2], data_offsets: [0, 8] } }, 8), '"layer.w"', 'dtype');
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'F32', shape: [2], data_offsets: [0] } }, 8), '"layer.w"', 'data_offsets');
    assertOpenFails(rawFile({ 'layer.w': 'nope' }, 8), '"layer.w"');
  });

  it('unknown dtype', () => {
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'F8_E4M3', shape: [8], data_offsets: [0, 8] } }, 8), '"layer.w"', 'unknown dtype "F8_E4M3"');
  });

  it('negative shape dimension', () => {
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, 8), '"layer.w"', 'shape');
  });

  it('non-integer shape dimension', () => {
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'F32', shape: [1.5, 2], data_offsets: [0, 8] } }, 8), '"layer.w"', 'shape');
  });

  it('negative data offset', () => {
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'F32', shape: [2], data_offsets: [-8, 0] } }, 8), '"layer.w"', 'data_offsets');
  });

  it('data_offsets that end before they begin', () => {
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, 8), '"layer.w"', 'end before they begin');
  });

  it('data_offsets outside the data section', () => {
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'F32', shape: [2], data_offsets: [100, 108] } }, 8), '"layer.w"', 'past the end of the data section (8 bytes)');
  });

  it('byte length that disagrees with shape and dtype', () => {
    assertOpenFails(rawFile({ 'layer.w': { dtype: 'BF16', shape: [2, 3], data_offsets: [0, 8] } }, 16), '"layer.w"', 'span 8 bytes', 'needs 12');
  });

  it('overlapping tensors', () => {
    const header = {
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    };
    assertOpenFails(rawFile(header, 12), '"a"', '"b"', 'overlap');
  });

  it('truncated file: data section shorter than the largest end offset', () => {
    const p = fresh('trunc');
    writeSafetensors(p, [
      { name: 'first', shape: [4], data: new Float32Array(4), dtype: 'F32' },
      { name: 'last', shape: [4], data: new Float32Array(4), dtype: 'F32' },
    ]);
    fs.truncateSync(p, fs.statSync(p).size - 3);
    assertOpenFails(p, '"last"', 'truncated');
  });

  it('__metadata__ that is not a string map', () => {
    assertOpenFails(rawFile({ __metadata__: { format: 1 }, w: good }, 8), '__metadata__', 'format');
  });
});

describe('SafetensorsFile reads', () => {
  it('names the file and tensor when a tensor does not exist', () => {
    const { file, path: p } = roundTrip('F32');
    assert.equal(file.get('nope'), undefined);
    assert.throws(() => file.readF32('nope'), (e: Error) => e.message.includes(p) && e.message.includes('"nope"'));
    assert.throws(() => file.readRaw('nope'), (e: Error) => e.message.includes(p) && e.message.includes('"nope"'));
    file.close();
  });

  it('refuses reads after close', () => {
    const { file, path: p } = roundTrip('F32');
    file.close();
    file.close(); // idempotent
    assert.throws(() => file.readF32('w'), (e: Error) => e.message.includes(p) && e.message.includes('closed'));
  });

  it('reports a file truncated after it was opened', () => {
    const { file, path: p } = roundTrip('F32');
    fs.truncateSync(p, 20);
    assert.throws(() => file.readF32('w'), (e: Error) => e.message.includes(p) && e.message.includes('"w"') && e.message.includes('truncated'));
    file.close();
  });

  it('rejects a missing file with the path in the message', () => {
    const p = path.join(tmp, 'does-not-exist.safetensors');
    assert.throws(() => SafetensorsFile.open(p), (e: Error) => e.message.includes(p));
  });
});
