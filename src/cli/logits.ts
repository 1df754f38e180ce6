/** `tandem logits`: fp32 logits of every position, as .npy [positions, vocab], for parity checks. */
import { parseArgs } from 'node:util';
import { createBackend } from '../backend/index.ts';
import { BlockPool } from '../engine/block-pool.ts';
import { loadModel } from '../model/load.ts';
import { packBatch } from '../model/transformer.ts';
import { DEFAULT_MODEL_DIR } from '../paths.ts';
import { writeNpyF32 } from '../util/npy.ts';
import { choiceOption, idListOption, UsageError } from './args.ts';

export const LOGITS_USAGE = `tandem logits [--model DIR] --ids 1,2,3 --out FILE.npy [--backend cpu|cuda|auto]`;

export async function runLogits(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: { model: { type: 'string' }, ids: { type: 'string' }, out: { type: 'string' }, backend: { type: 'string' } },
  });
  const ids = idListOption('ids', values.ids);
  if (!values.out) throw new UsageError('--out FILE.npy is required');
  const backend = createBackend(choiceOption('backend', values.backend, ['cpu', 'cuda', 'auto'] as const, 'auto'));
  const { model, config } = loadModel(values.model ?? DEFAULT_MODEL_DIR, backend);
  for (const id of ids) {
    if (id >= config.vocabSize) throw new UsageError(`--ids: ${id} is outside the vocabulary [0, ${config.vocabSize})`);
  }
  if (ids.length > config.maxPositionEmbeddings) {
    throw new UsageError(`--ids has ${ids.length} tokens; this model's context is ${config.maxPositionEmbeddings}`);
  }
  const blockSize = 16;
  const pool = new BlockPool(Math.ceil(ids.length / blockSize), blockSize);
  const cache = backend.allocKvCache(model.kvCacheSpec(pool.numBlocks, blockSize));
  const table = pool.allocate(pool.numBlocks);
  const logits = model.forward(packBatch([{ newTokens: ids, numCached: 0, blockTable: table, allLogits: true }], blockSize), cache);
  const data = (await backend.download(logits)) as Float32Array;
  writeNpyF32(values.out, data, [ids.length, config.vocabSize]);
  backend.resetScratch();
  backend.freeKvCache(cache);
}
