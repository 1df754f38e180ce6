/** `tandem make-model`: write a random-weight HF model directory. */
import { parseArgs } from 'node:util';
import { makeModel, PRESETS } from '../model/make-model.ts';
import { choiceOption, intOption, UsageError } from './args.ts';

export const MAKE_MODEL_USAGE = `tandem make-model --preset tiny|small --out DIR [options]
  --seed N              weight seed (default 0)
  --arch qwen2|llama|qwen3
  --kv-heads N          KV heads (GQA); must divide the query heads
  --head-dim N          explicit head_dim (default hidden / heads)
  --untied              separate lm_head instead of tied embeddings
  --dtype bf16|f16|f32  dtype of the safetensors file (default bf16)`;

export async function runMakeModel(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      preset: { type: 'string' },
      out: { type: 'string' },
      seed: { type: 'string' },
      arch: { type: 'string' },
      'kv-heads': { type: 'string' },
      'head-dim': { type: 'string' },
      untied: { type: 'boolean', default: false },
      dtype: { type: 'string' },
    },
  });
  if (!values.out) throw new UsageError('--out DIR is required');
  const preset = choiceOption('preset', values.preset, Object.keys(PRESETS) as (keyof typeof PRESETS)[], 'tiny');
  const dtype = choiceOption('dtype', values.dtype, ['bf16', 'f16', 'f32'] as const, 'bf16');
  const config = makeModel({
    preset,
    out: values.out,
    seed: intOption('seed', values.seed, 0, 0, 2 ** 32 - 1),
    architecture: choiceOption('arch', values.arch, ['qwen2', 'llama', 'qwen3'] as const, 'qwen2'),
    numKvHeads: values['kv-heads'] === undefined ? undefined : intOption('kv-heads', values['kv-heads'], 1, 1),
    headDim: values['head-dim'] === undefined ? undefined : intOption('head-dim', values['head-dim'], 2, 2),
    tieWordEmbeddings: !values.untied,
    dtype: dtype === 'bf16' ? 'BF16' : dtype === 'f16' ? 'F16' : 'F32',
  });
  process.stdout.write(
    `wrote ${values.out}: ${config.architecture}, ${config.numLayers} layers, hidden ${config.hiddenSize}, ` +
      `${config.numHeads}/${config.numKvHeads} heads of ${config.headDim}, vocab ${config.vocabSize}\n`,
  );
}
