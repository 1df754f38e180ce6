/**
 * Reading values out of a Prometheus text exposition in tests (no dependencies: the GPU
 * machine's CUDA-only tests import it with production node_modules only).
 */

/** The value of the first series named `name` (exactly, or `name{...}` with any labels). */
export function metricValue(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'));
  if (!line) throw new Error(`metric ${name} not found`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** The sum over every series named `name`, whatever its labels (0 when there is none). */
export function metricSum(text: string, name: string): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}
