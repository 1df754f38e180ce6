/**
 * A kernel trace (src/backend/cuda/kernel-trace.ts) read as a timeline. PDL orders a stream's
 * kernels by their blocks' starts: kernel K+1 is scheduled only once every block of K has started
 * (called pdlLaunchDependents), so the start records, sorted by time, fall into runs, one run per
 * kernel launch (a new run where the grid size changes or a block index repeats). A block's wait
 * record belongs to the oldest launch of its grid size still missing that block's wait.
 *
 * Per launch: `lead` = first post-wait time - first start (how long its blocks sat resident
 * before the kernel before it finished: time its pre-wait loads could use), `waitSpread` = last -
 * first post-wait (blocks that got an SM only after the predecessor finished: a second wave),
 * and `critical` = the next launch's first post-wait - its own (its share of the step's critical
 * path: from its predecessor finishing to its own finishing, as far as PDL kernels show it).
 */
import type { TraceRecord } from '../src/backend/cuda/kernel-trace.ts';

export interface KernelLaunch {
  /** Position in the stream among the traced launches. */
  index: number;
  blocks: number;
  firstStart: number;
  lastStart: number;
  /** null: no block of it recorded a wait. */
  firstWait: number | null;
  lastWait: number | null;
  waits: number;
  starts: number;
}

export function kernelLaunches(records: readonly TraceRecord[]): { launches: KernelLaunch[]; unmatchedWaits: number } {
  const starts = records.filter((r) => r.kind === 'start').sort((a, b) => a.t - b.t || a.block - b.block);
  const launches: KernelLaunch[] = [];
  const pending = new Map<string, number[]>(); // "blocks:block" -> launches still missing that block's wait, oldest first
  let seen = new Set<number>();
  for (const r of starts) {
    const cur = launches.length > 0 ? launches[launches.length - 1] : null;
    if (cur === null || cur.blocks !== r.blocks || seen.has(r.block) || cur.starts >= cur.blocks) {
      launches.push({ index: launches.length, blocks: r.blocks, firstStart: r.t, lastStart: r.t, firstWait: null, lastWait: null, waits: 0, starts: 0 });
      seen = new Set();
    }
    const k = launches[launches.length - 1];
    k.starts++;
    k.lastStart = r.t;
    seen.add(r.block);
    const key = `${r.blocks}:${r.block}`;
    const queue = pending.get(key);
    if (queue === undefined) pending.set(key, [k.index]);
    else queue.push(k.index);
  }
  let unmatchedWaits = 0;
  for (const r of records.filter((x) => x.kind === 'wait').sort((a, b) => a.t - b.t)) {
    const index = pending.get(`${r.blocks}:${r.block}`)?.shift();
    if (index === undefined) {
      unmatchedWaits++;
      continue;
    }
    const k = launches[index];
    k.waits++;
    k.firstWait = k.firstWait === null ? r.t : Math.min(k.firstWait, r.t);
    k.lastWait = k.lastWait === null ? r.t : Math.max(k.lastWait, r.t);
  }
  return { launches, unmatchedWaits };
}

/** Per grid size, in order of first appearance: launches and mean lead / waitSpread / critical (ns). */
export interface GridSummary {
  blocks: number;
  launches: number;
  lead: number;
  waitSpread: number;
  startSpread: number;
  /** Mean over the launches followed by a launch with a wait (NaN: none). */
  critical: number;
  /** Sum of critical over those launches. */
  criticalTotal: number;
}

export function summarizeByGrid(launches: readonly KernelLaunch[]): GridSummary[] {
  const byGrid = new Map<number, { n: number; lead: number; leadN: number; spread: number; startSpread: number; crit: number; critN: number }>();
  // The first post-wait time of the next launch that has one, per launch (one pass from the end).
  const nextWait: (number | null)[] = new Array(launches.length).fill(null);
  for (let i = launches.length - 2; i >= 0; i--) nextWait[i] = launches[i + 1].firstWait ?? nextWait[i + 1];
  launches.forEach((k, i) => {
    let g = byGrid.get(k.blocks);
    if (g === undefined) {
      g = { n: 0, lead: 0, leadN: 0, spread: 0, startSpread: 0, crit: 0, critN: 0 };
      byGrid.set(k.blocks, g);
    }
    g.n++;
    g.startSpread += k.lastStart - k.firstStart;
    if (k.firstWait !== null && k.lastWait !== null) {
      g.lead += k.firstWait - k.firstStart;
      g.spread += k.lastWait - k.firstWait;
      g.leadN++;
      const next = nextWait[i];
      if (next !== null) {
        g.crit += next - k.firstWait;
        g.critN++;
      }
    }
  });
  return [...byGrid.entries()].map(([blocks, g]) => ({
    blocks,
    launches: g.n,
    lead: g.leadN > 0 ? g.lead / g.leadN : NaN,
    waitSpread: g.leadN > 0 ? g.spread / g.leadN : NaN,
    startSpread: g.startSpread / g.n,
    critical: g.critN > 0 ? g.crit / g.critN : NaN,
    criticalTotal: g.crit,
  }));
}
