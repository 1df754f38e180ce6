/** The `tandem` command: serve | train | generate | logits | make-model. */
import { UsageError } from './cli/args.ts';
import { GENERATE_USAGE, runGenerate } from './cli/generate.ts';
import { LOGITS_USAGE, runLogits } from './cli/logits.ts';
import { MAKE_MODEL_USAGE, runMakeModel } from './cli/make-model.ts';
import { runServe, SERVE_USAGE } from './cli/serve.ts';
import { runTrain, TRAIN_USAGE } from './cli/train.ts';

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>; usage: string }> = {
  serve: { run: runServe, usage: SERVE_USAGE },
  train: { run: runTrain, usage: TRAIN_USAGE },
  generate: { run: runGenerate, usage: GENERATE_USAGE },
  logits: { run: runLogits, usage: LOGITS_USAGE },
  'make-model': { run: runMakeModel, usage: MAKE_MODEL_USAGE },
};

function usage(): string {
  return `usage:\n${Object.values(COMMANDS)
    .map((c) => '  ' + c.usage.split('\n').join('\n  '))
    .join('\n\n')}\n`;
}

async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(usage());
    return;
  }
  const command = COMMANDS[name];
  if (!command) throw new UsageError(`unknown command '${name}'`);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(command.usage + '\n');
    return;
  }
  await command.run(rest);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
    process.stderr.write(`tandem: ${err.message}\n\n${usage()}`);
    process.exit(2);
  }
  process.stderr.write(`tandem: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
