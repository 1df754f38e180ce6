/**
 * User rewards from a JavaScript / TypeScript module (`--rewards FILE`), the way TRL takes
 * Python callables: every exported function becomes a reward under its export name, called
 * with { prompt, completion, example } and returning a number (or a promise of one).
 *
 *   // my-rewards.mjs
 *   export function short_answers({ completion }) { return completion.length < 200 ? 1 : 0; }
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { RewardFn, RewardRegistry } from './reward-registry.ts';

/** Import `file` and register its exported functions; returns their names. */
export async function registerRewardModule(registry: RewardRegistry, file: string): Promise<string[]> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(path.resolve(file)).href)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`--rewards ${file}: cannot import it: ${(err as Error).message}`);
  }
  const names: string[] = [];
  for (const [name, value] of Object.entries(mod)) {
    if (name === 'default' || typeof value !== 'function') continue;
    registry.register(name, value as RewardFn, { description: `from ${file}` });
    names.push(name);
  }
  if (names.length === 0) throw new Error(`--rewards ${file}: the module exports no functions; export one per reward, named as reward_funcs names it`);
  return names;
}
