/** Pick a backend by name: cpu always works; cuda arrives with the native addon. */
import type { Backend } from './backend.ts';
import { CpuBackend } from './cpu/cpu-backend.ts';

export type BackendChoice = 'cpu' | 'cuda' | 'auto';

export function createBackend(choice: BackendChoice): Backend {
  switch (choice) {
    case 'cpu':
    case 'auto':
      return new CpuBackend();
    case 'cuda':
      throw new Error('the CUDA backend is not built yet: use --backend cpu');
  }
}
