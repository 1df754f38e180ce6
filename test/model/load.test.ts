import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { loadModel, loadModelAsync } from '../../src/model/load.ts';
import { makeModel } from '../../src/model/make-model.ts';
import { packBatch } from '../../src/model/transformer.ts';

describe('loadModel', () => {
  let root: string;
  let dir: string;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'tandem-load-'));
    dir = join(root, 'tiny');
    makeModel({ preset: 'tiny', seed: 8, out: dir });
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  /** A copy of the model dir, altered by `mutate`. */
  function variant(name: string, mutate: (d: string) => void): string {
    const d = join(root, name);
    cpSync(dir, d, { recursive: true });
    mutate(d);
    return d;
  }

  it('the async loader yields to the event loop and gives the same model', async () => {
    const be = new CpuBackend();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const a = await loadModelAsync(dir, be);
    clearInterval(timer);
    assert.ok(ticks > 0, 'no timer ran while the model loaded: the loader blocked the event loop');
    const b = loadModel(dir, be);
    const ids = [3, 1, 4, 1, 5];
    const out: Float32Array[] = [];
    for (const m of [a, b]) {
      const cache = be.allocKvCache(m.model.kvCacheSpec(1, 16));
      out.push((await be.download(m.model.forward(packBatch([{ newTokens: ids, numCached: 0, blockTable: [0] }], 16), cache))) as Float32Array);
      be.resetScratch();
      be.freeKvCache(cache);
    }
    assert.deepEqual(out[0], out[1]);
  });

  it('places each layer\'s q, k and v (and their biases) one after another in one allocation where the backend asks', async () => {
    const joint = new CpuBackend();
    assert.equal(joint.jointProjections, true);
    const apart = new CpuBackend();
    Object.defineProperty(apart, 'jointProjections', { value: false });
    const a = loadModel(dir, joint);
    const b = loadModel(dir, apart);
    const cfg = a.config;
    assert.ok(cfg.qkvBias, 'the tiny preset has q/k/v biases: both groups are exercised');
    type Placed = { data: Float32Array; root: object | null };
    const placed = (t: unknown): Placed => t as Placed;
    for (const [la, lb] of a.model.weights.layers.map((l, i) => [l, b.model.weights.layers[i]] as const)) {
      for (const group of [[la.q, la.k, la.v], [la.qBias!, la.kBias!, la.vBias!]]) {
        const [q, k, v] = group.map(placed);
        assert.ok(q.root !== null && q.root === k.root && k.root === v.root, 'one allocation per group');
        // Each part starts at the next multiple of 128 elements after the one before.
        const next = (p: Placed): number => Math.ceil((p.data.byteOffset / 4 + p.data.length) / 128) * 128;
        assert.equal(q.data.byteOffset, 0);
        assert.equal(k.data.byteOffset / 4, next(q));
        assert.equal(v.data.byteOffset / 4, next(k));
      }
      for (const key of ['q', 'k', 'v', 'qBias', 'kBias', 'vBias', 'o', 'gate'] as const) {
        assert.deepEqual(placed(la[key]).data, placed(lb[key]).data, `${key}: same values either way`);
      }
      assert.equal(placed(lb.q).root, null, 'without the ask every tensor owns its storage');
    }
    const ids = [3, 1, 4, 1, 5];
    const out: Float32Array[] = [];
    for (const [m, be] of [[a, joint], [b, apart]] as const) {
      const cache = be.allocKvCache(m.model.kvCacheSpec(1, 16));
      out.push((await be.download(m.model.forward(packBatch([{ newTokens: ids, numCached: 0, blockTable: [0] }], 16), cache))) as Float32Array);
      be.resetScratch();
      be.freeKvCache(cache);
    }
    assert.deepEqual(out[0], out[1]);
  });

  it('a truncated safetensors file is an error naming the file', () => {
    const d = variant('truncated', (x) => {
      const f = join(x, 'model.safetensors');
      truncateSync(f, statSync(f).size - 100);
    });
    assert.throws(() => loadModel(d, new CpuBackend()), /model\.safetensors/);
  });

  it('a missing tensor is an error naming it', () => {
    const d = variant('untied-config', (x) => {
      const cfg = JSON.parse(readFileSync(join(x, 'config.json'), 'utf8'));
      cfg.tie_word_embeddings = false; // now lm_head.weight is required but absent
      writeFileSync(join(x, 'config.json'), JSON.stringify(cfg));
    });
    assert.throws(() => loadModel(d, new CpuBackend()), /lm_head\.weight/);
  });

  it('a config whose shapes disagree with the weights is an error naming tensor and shapes', () => {
    const d = variant('wrong-shape', (x) => {
      const cfg = JSON.parse(readFileSync(join(x, 'config.json'), 'utf8'));
      cfg.intermediate_size = 200;
      writeFileSync(join(x, 'config.json'), JSON.stringify(cfg));
    });
    assert.throws(() => loadModel(d, new CpuBackend()), /gate_proj\.weight.*\b176\b|176.*gate_proj|gate_proj[^]*200/);
  });

  it('a tokenizer larger than the model vocabulary is refused', () => {
    const d = variant('small-vocab', (x) => {
      const cfg = JSON.parse(readFileSync(join(x, 'config.json'), 'utf8'));
      cfg.vocab_size = 100;
      writeFileSync(join(x, 'config.json'), JSON.stringify(cfg));
    });
    assert.throws(() => loadModel(d, new CpuBackend()), /tokenizer has 512 tokens but the model's vocab_size is 100/);
  });

  it('a missing tokenizer.json is an error naming the directory', () => {
    const d = variant('no-tokenizer', (x) => unlinkSync(join(x, 'tokenizer.json')));
    assert.throws(() => loadModel(d, new CpuBackend()), new RegExp(`tokenizer\\.json`));
  });
});
