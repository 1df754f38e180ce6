/** `tandem generate`: stream a completion for one prompt to stdout. */
import { parseArgs } from 'node:util';
import { createBackend } from '../backend/index.ts';
import { Engine } from '../engine/engine.ts';
import { loadModel } from '../model/load.ts';
import { DEFAULT_MODEL_DIR } from '../paths.ts';
import { choiceOption, floatOption, intOption, UsageError } from './args.ts';

export const GENERATE_USAGE = `tandem generate [--model DIR] --prompt TEXT [options]
  --chat               wrap the prompt as a user message in the model's chat template
  --system TEXT        system message (implies --chat)
  --max-tokens N       tokens to generate (default 128)
  --temperature T      0 = greedy (default: the model's generation_config, else 1)
  --top-k K  --top-p P  --min-p P   filters (defaults from generation_config)
  --seed N             seed of the sampler (default 0)
  --greedy             same as --temperature 0
  --ignore-eos         keep going past end-of-sequence tokens
  (repetition_penalty comes from the model's generation_config.json)
  --stats              print tokens/s to stderr at the end
  --backend cpu|cuda|auto`;

export async function runGenerate(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      model: { type: 'string' },
      prompt: { type: 'string' },
      chat: { type: 'boolean', default: false },
      system: { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-k': { type: 'string' },
      'top-p': { type: 'string' },
      'min-p': { type: 'string' },
      seed: { type: 'string' },
      greedy: { type: 'boolean', default: false },
      'ignore-eos': { type: 'boolean', default: false },
      stats: { type: 'boolean', default: false },
      backend: { type: 'string' },
    },
  });
  if (values.prompt === undefined) throw new UsageError('--prompt is required');
  const backend = createBackend(choiceOption('backend', values.backend, ['cpu', 'cuda', 'auto'] as const, 'auto'));
  const loaded = loadModel(values.model ?? DEFAULT_MODEL_DIR, backend);
  const { tokenizer, generation } = loaded;

  const chat = values.chat || values.system !== undefined;
  const text = chat
    ? tokenizer.applyChatTemplate(
        [...(values.system !== undefined ? [{ role: 'system', content: values.system }] : []), { role: 'user', content: values.prompt }],
        { addGenerationPrompt: true },
      )
    : values.prompt;
  const promptIds = tokenizer.encode(text);
  const defaultTemperature = generation.doSample ? generation.temperature : 0;
  const temperature = values.greedy ? 0 : floatOption('temperature', values.temperature, defaultTemperature, 0, 100);
  const sampling = {
    temperature,
    topK: intOption('top-k', values['top-k'], generation.topK, 0),
    topP: floatOption('top-p', values['top-p'], generation.topP, 0, 1),
    minP: floatOption('min-p', values['min-p'], generation.minP, 0, 1),
    seed: intOption('seed', values.seed, 0, 0, 2 ** 32 - 1),
  };
  const maxTokens = intOption('max-tokens', values['max-tokens'], 128, 1);
  // One request through the serving engine: the same sampling, penalties and stop handling
  // (end-of-sequence ids, never half a UTF-8 character) as the server.
  const blockSize = 16;
  const engine = new Engine(loaded, {
    blockSize,
    numBlocks: Math.ceil((promptIds.length + maxTokens) / blockSize) + 1,
    maxNumSeqs: 1,
    maxNumBatchedTokens: Math.max(512, blockSize),
    maxWaiting: 1,
  });
  const started = performance.now();
  let firstAt = 0;
  let count = 0;
  try {
    for await (const event of engine.add({
      requestId: 'generate',
      promptIds,
      maxTokens,
      sampling: { ...sampling, presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: generation.repetitionPenalty },
      stop: { strings: [], tokenIds: [], ignoreEos: values['ignore-eos'] },
      logprobs: null,
      priority: 0,
      skipSpecialTokens: true,
    })) {
      if (count === 0 && event.tokenIds.length > 0) firstAt = performance.now();
      count += event.tokenIds.length;
      process.stdout.write(event.text);
    }
  } finally {
    await engine.close();
  }
  process.stdout.write('\n');
  if (values.stats) {
    const end = performance.now();
    const decodeRate = count > 1 ? ((count - 1) / (end - firstAt)) * 1000 : 0;
    process.stderr.write(
      `prompt ${promptIds.length} tokens, first token after ${(firstAt - started).toFixed(1)} ms; ` +
        `${count} tokens generated, decode ${decodeRate.toFixed(1)} tokens/s\n`,
    );
  }
}
