/**
 * The Tandem side of the LoRA gradient / logits comparison with Python peft
 * (bench/peer/device-lora-peer.sh runs it; bench/peer/peft_grads.py compares):
 *
 *   tandem --model DIR --work WORK [--rank 4] [--alpha 8] [--targets q_proj,...] [--rslora] [--seed 1]
 *     A random adapter (peft's init for A, random B so that no gradient is zero by construction),
 *     saved in peft's format to WORK/tandem-adapter; a fixed batch of 3 sequences with target
 *     ranges and coefficients c (WORK/batch.json); the LoRA gradients of
 *     loss = sum_r c_r * logp_r (logp: log-softmax of logits / T at the target token, TRL-style)
 *     from TrainableModel.forward/backward (WORK/tandem-grads.safetensors, peft tensor names);
 *     and the serving forward's logits of the 3 sequences with the adapter (WORK/tandem-logits.safetensors).
 *   logits --model DIR --adapter ADAPTER_DIR --batch WORK/batch.json --out FILE.safetensors
 *     The serving forward's logits of the batch's sequences with an adapter loaded from peft's format.
 *
 * Everything runs on the CPU backend in fp32. Logits files hold one tensor per sequence,
 * "seq{i}" [tokens, vocab].
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { CpuBackend } from '../../src/backend/cpu/cpu-backend.ts';
import { loadModel, type LoadedModel } from '../../src/model/load.ts';
import { LORA_TARGETS, initLoraAdapter, isLoraTarget, type LoraAdapter, type LoraSpec, type LoraTarget } from '../../src/model/lora.ts';
import { freeDeviceLora, loraViews, uploadLora, type DeviceLora } from '../../src/model/lora-device.ts';
import { loadPeftAdapter, peftTensorName, savePeftAdapter } from '../../src/model/lora-peft.ts';
import { writeSafetensors, type TensorToWrite } from '../../src/model/safetensors.ts';
import { packTrainBatch } from '../../src/model/train-batch.ts';
import { TrainableModel } from '../../src/model/train-forward.ts';
import { packBatch } from '../../src/model/transformer.ts';
import { SeededRandom } from '../../src/util/random.ts';

/** TRL divides logits by the rollouts' sampling temperature; 0.7 keeps that division visible. */
export const PEER_TEMPERATURE = 0.7;

export interface PeerBatch {
  temperature: number;
  /** Tokens j >= targetStart of each sequence are targets (row j - 1 predicts token j). */
  sequences: { tokens: number[]; targetStart: number }[];
  /** c_r, one per target, sequence by sequence in token order. */
  coefficients: number[];
}

/**
 * Three sequences: short with a late target range, one crossing a 16-token KV block with every
 * token a target, and a longer one whose targets start past the first block. Coefficients of
 * both signs, as GRPO advantages have.
 */
export function peerBatch(vocabSize: number, seed: number): PeerBatch {
  const rng = new SeededRandom(seed);
  const ids = (n: number): number[] => Array.from({ length: n }, () => Math.floor(rng.uniform() * vocabSize));
  const sequences = [
    { tokens: ids(9), targetStart: 5 },
    { tokens: ids(23), targetStart: 1 },
    { tokens: ids(37), targetStart: 18 },
  ];
  const targets = sequences.reduce((n, s) => n + s.tokens.length - s.targetStart, 0);
  const coefficients = Array.from({ length: targets }, () => 2 * rng.uniform() - 1);
  return { temperature: PEER_TEMPERATURE, sequences, coefficients };
}

/** A peft-initialised adapter (A kaiming-uniform) with B drawn N(0, 0.05^2) instead of zeros. */
export function randomAdapter(m: LoadedModel, spec: LoraSpec, seed: number): LoraAdapter {
  const adapter = initLoraAdapter(m.config, spec, seed);
  const rng = new SeededRandom(seed + 1000);
  for (const layer of adapter.layers) for (const w of layer.values()) w.b.set(rng.normals(w.b.length, 0.05));
  return adapter;
}

/** loss = sum c_r logp_r and its LoRA gradients, by peft tensor name ([rank, in] / [out, rank]). */
export async function tandemGradients(
  m: LoadedModel,
  adapter: LoraAdapter,
  batch: PeerBatch,
): Promise<{ logp: Float32Array; loss: number; grads: TensorToWrite[] }> {
  const be = m.model.backend;
  const train = packTrainBatch(
    batch.sequences.map((s) => ({ tokens: s.tokens, targets: s.targetStart })),
    m.config.vocabSize,
  );
  if (train.targets.length !== batch.coefficients.length) {
    throw new Error(`batch: ${batch.coefficients.length} coefficients for ${train.targets.length} targets`);
  }
  const dev = uploadLora(be, m.config, adapter);
  const gradFlat = be.alloc([dev.layout.size], 'f32', 'persistent');
  be.zero(gradFlat);
  const trainable = new TrainableModel(m.model);
  try {
    const logp = await trainable.forward(train, dev, { temperature: batch.temperature, forBackward: true });
    // dLoss/dLogp_r = c_r.
    await trainable.backward(Float32Array.from(batch.coefficients), loraViews(be, gradFlat, dev.layout, m.config.numLayers));
    const flat = (await be.download(gradFlat)) as Float32Array;
    let loss = 0;
    logp.forEach((v, r) => (loss += batch.coefficients[r] * v));
    const R = dev.layout.rank;
    const grads: TensorToWrite[] = [];
    for (const e of dev.layout.entries) {
      grads.push(
        { name: peftTensorName(e.layer, e.target, 'A'), shape: [R, e.inFeatures], data: flat.slice(e.aOffset, e.aOffset + R * e.inFeatures), dtype: 'F32' },
        { name: peftTensorName(e.layer, e.target, 'B'), shape: [e.outFeatures, R], data: flat.slice(e.bOffset, e.bOffset + e.outFeatures * R), dtype: 'F32' },
      );
    }
    return { logp, loss, grads };
  } finally {
    trainable.free();
    be.free(gradFlat);
    freeDeviceLora(be, dev);
  }
}

/**
 * The serving forward's logits [tokens, V] of every sequence with the adapter, all three packed
 * in one batch over a paged KV cache (so segments, block tables and packing are all exercised).
 */
export async function servingLogits(m: LoadedModel, adapter: LoraAdapter, batch: PeerBatch): Promise<Float32Array[]> {
  const be = m.model.backend;
  const blockSize = 16;
  const dev: DeviceLora = uploadLora(be, m.config, adapter);
  let nextBlock = 0;
  const slices = batch.sequences.map((s) => {
    const blocks = Math.ceil(s.tokens.length / blockSize);
    const blockTable = Array.from({ length: blocks }, () => nextBlock++);
    return { newTokens: s.tokens, numCached: 0, blockTable, allLogits: true, lora: dev };
  });
  const cache = be.allocKvCache(m.model.kvCacheSpec(nextBlock, blockSize));
  try {
    const all = (await be.download(m.model.forward(packBatch(slices, blockSize), cache))) as Float32Array;
    const V = m.config.vocabSize;
    const out: Float32Array[] = [];
    let row = 0;
    for (const s of batch.sequences) {
      out.push(all.slice(row * V, (row + s.tokens.length) * V));
      row += s.tokens.length;
    }
    return out;
  } finally {
    be.resetScratch();
    be.freeKvCache(cache);
    freeDeviceLora(be, dev);
  }
}

function writeLogits(file: string, logits: Float32Array[], vocabSize: number): void {
  writeSafetensors(
    file,
    logits.map((data, i) => ({ name: `seq${i}`, shape: [data.length / vocabSize, vocabSize], data, dtype: 'F32' as const })),
    { format: 'pt' },
  );
}

function parseTargets(list: string): LoraTarget[] {
  const targets = list.split(',').map((t) => t.trim());
  for (const t of targets) if (!isLoraTarget(t)) throw new Error(`--targets: "${t}" is not one of ${LORA_TARGETS.join(', ')}`);
  return targets as LoraTarget[];
}

function positiveNumber(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: expected a positive number, got "${value}"`);
  return n;
}

async function main(argv: string[]): Promise<void> {
  const [mode, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    strict: true,
    options: {
      model: { type: 'string' },
      work: { type: 'string' },
      adapter: { type: 'string' },
      batch: { type: 'string' },
      out: { type: 'string' },
      rank: { type: 'string', default: '4' },
      alpha: { type: 'string', default: '8' },
      targets: { type: 'string', default: LORA_TARGETS.join(',') },
      rslora: { type: 'boolean', default: false },
      seed: { type: 'string', default: '1' },
    },
  });
  const need = (name: keyof typeof values): string => {
    const v = values[name];
    if (typeof v !== 'string' || v === '') throw new Error(`${mode}: --${name} is required`);
    return v;
  };
  const be = new CpuBackend();
  try {
    const m = loadModel(need('model'), be);
    if (mode === 'tandem') {
      const work = need('work');
      const seed = positiveNumber('seed', need('seed'));
      const spec: LoraSpec = {
        rank: positiveNumber('rank', need('rank')),
        alpha: positiveNumber('alpha', need('alpha')),
        targets: parseTargets(need('targets')),
        useRslora: values.rslora === true,
      };
      mkdirSync(work, { recursive: true });
      const adapter = randomAdapter(m, spec, seed);
      savePeftAdapter(join(work, 'tandem-adapter'), adapter, { baseModel: m.dir });
      const batch = peerBatch(m.config.vocabSize, seed + 7);
      const { logp, loss, grads } = await tandemGradients(m, adapter, batch);
      writeSafetensors(join(work, 'tandem-grads.safetensors'), grads, { format: 'pt' });
      writeLogits(join(work, 'tandem-logits.safetensors'), await servingLogits(m, adapter, batch), m.config.vocabSize);
      const doc = { ...batch, tandem: { logp: Array.from(logp), loss, scale: adapter.scale } };
      writeFileSync(join(work, 'batch.json'), JSON.stringify(doc, null, 1) + '\n');
      console.log(`${work}: ${grads.length} gradient tensors, ${logp.length} targets, loss ${loss.toFixed(6)}, scale ${adapter.scale}`);
    } else if (mode === 'logits') {
      const batch = JSON.parse(readFileSync(need('batch'), 'utf8')) as PeerBatch;
      const adapter = loadPeftAdapter(need('adapter'), m.config);
      writeLogits(need('out'), await servingLogits(m, adapter, batch), m.config.vocabSize);
      console.log(`${values.out}: logits of ${batch.sequences.length} sequences with ${values.adapter} (scale ${adapter.scale})`);
    } else {
      throw new Error('usage: lora-grads.ts tandem --model DIR --work DIR [...] | logits --model DIR --adapter DIR --batch FILE --out FILE');
    }
  } finally {
    be.dispose();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
