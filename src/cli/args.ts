/** Small helpers for turning CLI option strings into checked values. */

export class UsageError extends Error {}

export function intOption(name: string, raw: string | undefined, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min || v > max) throw new UsageError(`--${name} must be an integer in [${min}, ${max}], got '${raw}'`);
  return v;
}

export function floatOption(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || v < min || v > max) throw new UsageError(`--${name} must be a number in [${min}, ${max}], got '${raw}'`);
  return v;
}

export function choiceOption<T extends string>(name: string, raw: string | undefined, choices: readonly T[], fallback: T): T {
  if (raw === undefined) return fallback;
  if (!(choices as readonly string[]).includes(raw)) throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got '${raw}'`);
  return raw as T;
}

/** "1,2,3" -> [1, 2, 3] */
export function idListOption(name: string, raw: string | undefined): number[] {
  if (raw === undefined || raw.trim() === '') throw new UsageError(`--${name} is required (comma-separated token ids, e.g. 1,2,3)`);
  return raw.split(',').map((s) => {
    const v = Number(s.trim());
    if (s.trim() === '' || !Number.isInteger(v) || v < 0) throw new UsageError(`--${name}: '${s}' is not a token id`);
    return v;
  });
}

/**
 * A switch with a flag each way and an environment variable of 0 or 1 (a flag wins over the
 * variable): true, false, or undefined where neither says (the default is decided later).
 */
export function switchOption(
  onFlag: { name: string; set: boolean },
  offFlag: { name: string; set: boolean },
  envName: string,
  env: string | undefined,
): boolean | undefined {
  if (onFlag.set && offFlag.set) throw new UsageError(`--${onFlag.name} and --${offFlag.name} contradict each other`);
  if (onFlag.set || offFlag.set) return onFlag.set;
  if (env === undefined || env === '') return undefined;
  if (env === '1' || env === '0') return env === '1';
  throw new UsageError(`${envName} must be 0 or 1, got ${JSON.stringify(env)}`);
}

/**
 * --cuda-graphs / --enforce-eager / TANDEM_CUDA_GRAPHS (serve and train): undefined where none
 * says, and then the caller turns graphs on where the backend has them (cuda).
 */
export function cudaGraphsOption(values: { 'cuda-graphs'?: boolean; 'enforce-eager'?: boolean }, env: string | undefined): boolean | undefined {
  return switchOption(
    { name: 'cuda-graphs', set: values['cuda-graphs'] === true },
    { name: 'enforce-eager', set: values['enforce-eager'] === true },
    'TANDEM_CUDA_GRAPHS',
    env,
  );
}
