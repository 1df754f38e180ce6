/**
 * The CUDA sources compile, on a machine with nvcc and no GPU (CI, the development machine): every
 * kernels/*.cu and bench/*.cu to PTX for sm_90, and every Node-API binding (kernels/binding*.cpp)
 * through g++ -fsyntax-only against the CUDA and node-api headers. A signature changed on one side
 * of a kernel call (a launcher, a bench harness including the kernel source) then fails here, not
 * first on the GPU machine. Skipped, with the reason printed, where nvcc or the headers are missing.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CUDA_HOME = process.env.CUDA_HOME ?? '/usr/local/cuda';
const NAPI_INCLUDE = join(ROOT, 'node_modules', 'node-api-headers', 'include');

function skipReason(): string | null {
  if (spawnSync('nvcc', ['--version']).status !== 0) return 'nvcc not found';
  if (!existsSync(join(CUDA_HOME, 'include', 'cuda_runtime.h'))) return `no cuda_runtime.h under ${CUDA_HOME}/include`;
  return null;
}
const skip = skipReason();
if (skip) console.log(`# CUDA compile checks skipped: ${skip}`);

/** Run the commands, at most `jobs` at once; the failures' output. */
async function runAll(commands: string[][], jobs: number): Promise<string[]> {
  const failures: string[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < commands.length) {
      const [cmd, ...args] = commands[next++];
      const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
        const p = spawn(cmd, args, { cwd: ROOT });
        let text = '';
        p.stdout.on('data', (d: Buffer) => (text += d));
        p.stderr.on('data', (d: Buffer) => (text += d));
        p.on('error', (err) => resolve({ code: -1, text: String(err) }));
        p.on('close', (code) => resolve({ code, text }));
      });
      if (out.code !== 0) failures.push(`${cmd} ${args.join(' ')}\n${out.text.slice(0, 2000)}`);
    }
  };
  await Promise.all(Array.from({ length: jobs }, worker));
  return failures;
}

describe('CUDA sources compile (no GPU needed)', { skip: skip ?? false }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-cuda-compile-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('every kernels/*.cu and bench/*.cu compiles to sm_90 PTX, every binding*.cpp passes g++ -fsyntax-only', { timeout: 600_000 }, async () => {
    const cu = [
      ...readdirSync(join(ROOT, 'kernels')).filter((f) => f.endsWith('.cu')).map((f) => `kernels/${f}`),
      ...readdirSync(join(ROOT, 'bench')).filter((f) => f.endsWith('.cu')).map((f) => `bench/${f}`),
    ];
    const bindings = readdirSync(join(ROOT, 'kernels')).filter((f) => /^binding.*\.cpp$/.test(f)).map((f) => `kernels/${f}`);
    assert.ok(cu.length >= 10 && bindings.length >= 4, `found ${cu.length} .cu and ${bindings.length} binding files`);
    const commands = cu.map((f) => ['nvcc', '-std=c++17', '-Ikernels', '-arch=compute_90', '-ptx', f, '-o', join(dir, f.replace(/\//g, '_') + '.ptx')]);
    if (spawnSync('g++', ['--version']).status !== 0) {
      console.log('# binding*.cpp not checked: no g++');
    } else if (existsSync(join(NAPI_INCLUDE, 'node_api.h'))) {
      for (const f of bindings) commands.push(['g++', '-std=c++17', '-fsyntax-only', `-I${NAPI_INCLUDE}`, `-I${join(CUDA_HOME, 'include')}`, '-Ikernels', f]);
    } else {
      console.log('# binding*.cpp not checked: node-api-headers not installed');
    }
    const failures = await runAll(commands, Math.max(1, cpus().length));
    assert.deepEqual(failures, [], failures.join('\n\n'));
  });
});
