import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Checkpoint, writeCheckpoint } from '../../src/model/checkpoint.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/model/safetensors.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-checkpoint-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let counter = 0;
const freshDir = (): string => {
  const dir = path.join(tmp, `model-${counter++}`);
  fs.mkdirSync(dir);
  return dir;
};

/** A tiny model's tensors: 5 x 64 bytes in F32 (32 bytes each in BF16). */
function tinyTensors(dtype: 'F32' | 'BF16' = 'F32'): TensorToWrite[] {
  const names = ['model.embed_tokens.weight', 'model.layers.0.self_attn.q_proj.weight', 'model.layers.0.mlp.up_proj.weight', 'model.norm.weight', 'lm_head.weight'];
  return names.map((name, k) => ({
    name,
    shape: [4, 4],
    data: Float32Array.from({ length: 16 }, (_, i) => k * 16 + i - 8),
    dtype,
  }));
}

function assertThrowsWith(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: Error) => {
    for (const p of parts) assert.ok(e.message.includes(p), `message should contain ${JSON.stringify(p)}: ${e.message}`);
    return true;
  });
}

describe('single-file checkpoints', () => {
  it('writes model.safetensors with format=pt metadata and reads every tensor back', () => {
    const dir = freshDir();
    const tensors = tinyTensors('BF16');
    writeCheckpoint(dir, tensors);
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
    const st = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    assert.deepEqual(st.metadata, { format: 'pt' });
    st.close();

    const ckpt = Checkpoint.open(dir);
    assert.equal(ckpt.dir, dir);
    assert.deepEqual(ckpt.names(), tensors.map((t) => t.name));
    assert.ok(ckpt.has('model.norm.weight'));
    assert.ok(!ckpt.has('model.layers.1.mlp.up_proj.weight'));
    assert.equal(ckpt.info('lm_head.weight').dtype, 'BF16');
    assert.equal(ckpt.info('lm_head.weight').file, path.join(dir, 'model.safetensors'));
    for (const t of tensors) assert.deepEqual(ckpt.read(t.name, [4, 4]), t.data); // small integers: exact in bf16
    ckpt.close();
  });

  it('uses the metadata it is given', () => {
    const dir = freshDir();
    writeCheckpoint(dir, tinyTensors(), { metadata: { format: 'pt', origin: 'test' } });
    const st = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    assert.deepEqual(st.metadata, { format: 'pt', origin: 'test' });
    st.close();
  });

  it('creates the directory if needed', () => {
    const dir = path.join(tmp, `nested-${counter++}`, 'deeper');
    writeCheckpoint(dir, tinyTensors());
    const ckpt = Checkpoint.open(dir);
    assert.equal(ckpt.names().length, 5);
    ckpt.close();
  });
});

describe('sharded checkpoints', () => {
  it('splits into shards plus an index exactly as transformers writes it', () => {
    const dir = freshDir();
    const tensors = tinyTensors('F32'); // 64 bytes each
    writeCheckpoint(dir, tensors, { maxShardBytes: 150 }); // two tensors fit per shard
    assert.deepEqual(fs.readdirSync(dir).sort(), [
      'model-00001-of-00003.safetensors',
      'model-00002-of-00003.safetensors',
      'model-00003-of-00003.safetensors',
      'model.safetensors.index.json',
    ]);
    const text = fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8');
    const index = JSON.parse(text);
    const expectedMap = {
      'lm_head.weight': 'model-00003-of-00003.safetensors',
      'model.embed_tokens.weight': 'model-00001-of-00003.safetensors',
      'model.layers.0.mlp.up_proj.weight': 'model-00002-of-00003.safetensors',
      'model.layers.0.self_attn.q_proj.weight': 'model-00001-of-00003.safetensors',
      'model.norm.weight': 'model-00002-of-00003.safetensors',
    };
    assert.deepEqual(index, { metadata: { total_size: 320 }, weight_map: expectedMap });
    // json.dumps(index, indent=2, sort_keys=True) + "\n"
    assert.equal(text, JSON.stringify({ metadata: { total_size: 320 }, weight_map: expectedMap }, null, 2) + '\n');
    assert.deepEqual(Object.keys(index.weight_map), Object.keys(index.weight_map).sort());

    const ckpt = Checkpoint.open(dir);
    assert.deepEqual(ckpt.names().sort(), tensors.map((t) => t.name).sort());
    for (const t of tensors) {
      assert.deepEqual(ckpt.read(t.name), t.data);
      assert.equal(path.basename(ckpt.info(t.name).file), expectedMap[t.name as keyof typeof expectedMap]);
    }
    ckpt.close();
  });

  it('gives a tensor larger than the shard limit a shard of its own', () => {
    const dir = freshDir();
    writeCheckpoint(dir, tinyTensors('F32'), { maxShardBytes: 10 });
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    assert.equal(new Set(Object.values(index.weight_map)).size, 5);
    assert.ok(Object.values(index.weight_map).includes('model-00005-of-00005.safetensors'));
  });

  it('rewriting switches layouts cleanly (no stale shards, index or single file)', () => {
    const dir = freshDir();
    writeCheckpoint(dir, tinyTensors(), { maxShardBytes: 150 });
    writeCheckpoint(dir, tinyTensors().slice(0, 2));
    assert.deepEqual(fs.readdirSync(dir), ['model.safetensors']);
    writeCheckpoint(dir, tinyTensors(), { maxShardBytes: 100 });
    assert.ok(!fs.existsSync(path.join(dir, 'model.safetensors')));
    assert.ok(!fs.readdirSync(dir).some((f) => f.endsWith('-of-00003.safetensors')));
    const ckpt = Checkpoint.open(dir);
    assert.equal(ckpt.names().length, 5);
    ckpt.close();
  });

  it('index naming a shard that does not exist', () => {
    const dir = freshDir();
    writeCheckpoint(dir, tinyTensors(), { maxShardBytes: 150 });
    fs.rmSync(path.join(dir, 'model-00002-of-00003.safetensors'));
    assertThrowsWith(() => Checkpoint.open(dir), 'model.safetensors.index.json', 'model-00002-of-00003.safetensors', 'does not exist', dir);
  });

  it('tensor in the index missing from its shard', () => {
    const dir = freshDir();
    writeCheckpoint(dir, tinyTensors(), { maxShardBytes: 150 });
    const indexPath = path.join(dir, 'model.safetensors.index.json');
    const index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
    index.weight_map['model.layers.7.ghost.weight'] = 'model-00001-of-00003.safetensors';
    fs.writeFileSync(indexPath, JSON.stringify(index));
    assertThrowsWith(() => Checkpoint.open(dir), indexPath, '"model.layers.7.ghost.weight"', 'model-00001-of-00003.safetensors', 'no such tensor');
  });

  it('corrupt index JSON', () => {
    const dir = freshDir();
    const indexPath = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(indexPath, '{"metadata": {"total_size": 3}, "weight_map": {');
    assertThrowsWith(() => Checkpoint.open(dir), indexPath, 'not valid JSON');
  });

  it('index without a weight_map', () => {
    const dir = freshDir();
    const indexPath = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(indexPath, JSON.stringify({ metadata: { total_size: 3 } }));
    assertThrowsWith(() => Checkpoint.open(dir), indexPath, 'weight_map');
  });

  it('index pointing outside the directory', () => {
    const dir = freshDir();
    const indexPath = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(indexPath, JSON.stringify({ weight_map: { w: '../elsewhere.safetensors' } }));
    assertThrowsWith(() => Checkpoint.open(dir), indexPath, '"w"', '../elsewhere.safetensors', 'not a file name');
  });

  it('corrupt shard names the shard file', () => {
    const dir = freshDir();
    writeCheckpoint(dir, tinyTensors(), { maxShardBytes: 150 });
    const shard = path.join(dir, 'model-00003-of-00003.safetensors');
    fs.writeFileSync(shard, Buffer.from([1, 2]));
    assertThrowsWith(() => Checkpoint.open(dir), shard);
  });
});

describe('missing weights', () => {
  it('directory that does not exist', () => {
    const dir = path.join(tmp, 'nowhere');
    assertThrowsWith(() => Checkpoint.open(dir), dir, 'does not exist');
  });

  it('directory without any weights', () => {
    const dir = freshDir();
    fs.writeFileSync(path.join(dir, 'config.json'), '{}');
    assertThrowsWith(() => Checkpoint.open(dir), dir, 'model.safetensors', 'model.safetensors.index.json');
  });

  it('directory with only pytorch_model.bin says .bin is not supported', () => {
    const dir = freshDir();
    fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), 'not really');
    assertThrowsWith(() => Checkpoint.open(dir), dir, '.bin', 'not load', 'safe_serialization=True');
  });

  it('directory with other safetensors files lists them', () => {
    const dir = freshDir();
    writeSafetensors(path.join(dir, 'adapter_model.safetensors'), tinyTensors().slice(0, 1));
    assertThrowsWith(() => Checkpoint.open(dir), dir, 'adapter_model.safetensors');
  });
});

describe('tensor lookups', () => {
  const dir = freshDir();
  writeCheckpoint(dir, tinyTensors());
  const file = path.join(dir, 'model.safetensors');

  it('info of a missing tensor names the tensor and the directory', () => {
    const ckpt = Checkpoint.open(dir);
    assertThrowsWith(() => ckpt.info('model.layers.3.self_attn.k_proj.weight'), '"model.layers.3.self_attn.k_proj.weight"', dir);
    assertThrowsWith(() => ckpt.read('model.layers.3.self_attn.k_proj.weight'), '"model.layers.3.self_attn.k_proj.weight"', dir);
    ckpt.close();
  });

  it('read with the wrong expected shape names tensor, file, expected and found', () => {
    const ckpt = Checkpoint.open(dir);
    assertThrowsWith(() => ckpt.read('model.norm.weight', [16]), '"model.norm.weight"', file, '[16]', '[4,4]');
    assertThrowsWith(() => ckpt.read('model.norm.weight', [4, 5]), '[4,5]', '[4,4]');
    assert.equal(ckpt.read('model.norm.weight', [4, 4]).length, 16);
    ckpt.close();
  });
});
