/** Run the `tandem` CLI as a child process, the way a user does. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI = ['--import', 'tsx', 'src/cli.ts'];

export function tandem(args: string[], opts: { timeoutMs?: number } = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [...CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: opts.timeoutMs ?? 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function tandemSpawn(args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  return spawn(process.execPath, [...CLI, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * Collects a child's stdout/stderr from spawn time on, so a wait never misses a line that
 * arrived before it was asked for.
 */
export class OutputWatcher {
  stdout = '';
  stderr = '';
  private exitCode: number | null | undefined;
  private readonly waiters: (() => void)[] = [];

  constructor(child: ChildProcess) {
    child.stdout?.on('data', (d: Buffer) => {
      this.stdout += d.toString();
      this.notify();
    });
    child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    child.once('exit', (code) => {
      this.exitCode = code;
      this.notify();
    });
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolve with the first match of `re` in stdout; reject on exit or timeout. */
  async waitFor(re: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.stdout.match(re);
      if (m) return m;
      if (this.exitCode !== undefined) throw new Error(`exited with ${this.exitCode} before ${re}; stdout: ${this.stdout} stderr: ${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${re}; stdout: ${this.stdout} stderr: ${this.stderr}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}
