/**
 * The Tandem side of the peft round trip (bench/peer/device-lora-peft.sh):
 *   save MODEL_DIR OUT_DIR            a random r=4, alpha=8 adapter on all seven projections
 *                                     (B != 0 so nothing passes by being zero); prints its scale
 *   load MODEL_DIR ADAPTER_DIR EXPECT load a peft-saved adapter and compare it with the
 *                                     EXPECT.json peft wrote from its in-memory model
 */
import { readFileSync } from 'node:fs';
import { loadModelConfig } from '../../src/model/config.ts';
import { initLoraAdapter, LORA_TARGETS } from '../../src/model/lora.ts';
import { loadPeftAdapter, peftTensorName, savePeftAdapter } from '../../src/model/lora-peft.ts';
import { SeededRandom } from '../../src/util/random.ts';

const [mode, modelDir, dir, expectPath] = process.argv.slice(2);
const cfg = loadModelConfig(modelDir);
if (mode === 'save') {
  const adapter = initLoraAdapter(cfg, { rank: 4, alpha: 8, targets: [...LORA_TARGETS], useRslora: false }, 1);
  const rng = new SeededRandom(2);
  for (const layer of adapter.layers) for (const w of layer.values()) w.b.set(rng.normals(w.b.length, 0.02));
  savePeftAdapter(dir, adapter, { baseModel: modelDir });
  console.log(adapter.scale);
} else if (mode === 'load') {
  type Expect = { scaling: number; tensors: Record<string, { shape: number[]; sum: number; first: number[] }> };
  const expect = JSON.parse(readFileSync(expectPath, 'utf8')) as Expect;
  const adapter = loadPeftAdapter(dir, cfg);
  const problems: string[] = [];
  if (Math.abs(adapter.scale - expect.scaling) > 1e-12) problems.push(`scale ${adapter.scale} vs peft ${expect.scaling}`);
  let count = 0;
  adapter.layers.forEach((layer, l) => {
    for (const [target, w] of layer) {
      for (const [which, data, shape] of [['A', w.a, [adapter.spec.rank, w.inFeatures]], ['B', w.b, [w.outFeatures, adapter.spec.rank]]] as const) {
        const name = peftTensorName(l, target, which);
        const e = expect.tensors[name];
        count++;
        if (!e) {
          problems.push(`${name}: not in peft's model`);
          continue;
        }
        if (e.shape.join() !== shape.join()) problems.push(`${name}: shape [${shape}] vs peft [${e.shape}]`);
        const sum = data.reduce((a, b) => a + b, 0);
        if (Math.abs(sum - e.sum) > 1e-4 * Math.max(1, Math.abs(e.sum))) problems.push(`${name}: sum ${sum} vs peft ${e.sum}`);
        e.first.forEach((v, i) => {
          if (data[i] !== Math.fround(v)) problems.push(`${name}[${i}]: ${data[i]} vs peft ${v}`);
        });
      }
    }
  });
  if (count !== Object.keys(expect.tensors).length) problems.push(`Tandem loaded ${count} tensors, peft has ${Object.keys(expect.tensors).length}`);
  console.log(problems.length === 0 ? `ok: ${count} tensors and the scale match peft` : problems.join('\n'));
  process.exit(problems.length === 0 ? 0 : 1);
} else {
  throw new Error('usage: adapter-io.ts save MODEL OUT | load MODEL ADAPTER EXPECT.json');
}
