/**
 * Pick a backend by name: cpu always works; cuda needs the native addon (bash kernels/build.sh,
 * which `npm install` runs where nvcc and CUDA are present) and a visible GPU; auto takes cuda
 * when it can run here and cpu otherwise, saying which and why in one line.
 */
import type { Backend } from './backend.ts';
import { CpuBackend } from './cpu/cpu-backend.ts';
import { CudaBackend, cudaUnavailableReason } from './cuda/cuda-backend.ts';

export type BackendChoice = 'cpu' | 'cuda' | 'auto';

/** Where createBackend('auto') reports its pick (stderr: stdout may carry generated text). */
const toStderr = (line: string): void => void process.stderr.write(line + '\n');

export function createBackend(choice: BackendChoice, log: (line: string) => void = toStderr): Backend {
  switch (choice) {
    case 'cpu':
      return new CpuBackend();
    case 'cuda': {
      const reason = cudaUnavailableReason();
      if (reason !== null) throw new Error(`--backend cuda cannot run here: ${reason}; use --backend cpu (or auto)`);
      return new CudaBackend();
    }
    case 'auto': {
      const reason = cudaUnavailableReason();
      if (reason !== null) {
        log(`backend auto: cpu (${reason})`);
        return new CpuBackend();
      }
      const be = new CudaBackend();
      log(`backend auto: cuda on ${be.device.name} (${(be.device.totalMemory / 2 ** 30).toFixed(1)} GiB)`);
      return be;
    }
    default:
      throw new Error(`unknown backend '${String(choice)}' (use cpu, cuda or auto)`);
  }
}
