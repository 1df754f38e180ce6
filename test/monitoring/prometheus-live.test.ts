/**
 * Every query of the shipped Grafana dashboard, run through a real Prometheus (Debian's
 * `prometheus`; the suite skips, saying why, where it is not installed) that scrapes a live
 * `tandem serve` on the CPU while it serves chat requests and runs a GRPO job.
 *
 * Each expression must parse and return at least one finite sample, with the variables set as
 * a user would pick them (this model, this adapter) and on All; each `{{label}}` its legend
 * uses must be on the series it returns; each variable must list the live model / adapter.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dashboardPanels, interpolate, labelValuesQuery, loadDashboard, metricNames } from './dashboard.ts';
import {
  prometheusMissing,
  promLabelValues,
  promQuery,
  startLoad,
  startPrometheus,
  startTandem,
  type Load,
  type LivePrometheus,
  type LiveTandem,
  type PromResult,
} from './live-stack.ts';

/** Series only the cuda backend exports (the --gpu-memory plan): on the CPU their queries must parse and be empty. */
const CUDA_ONLY = new Set(['tandem_gpu_memory_budget_bytes']);
/**
 * What `$__rate_interval` stands for here. Grafana makes it at least four scrape intervals;
 * with the 1 s scrapes below, 10 s holds about ten samples of every counter.
 */
const RATE_WINDOW = '10s';
const DEADLINE_MS = 45_000;

const missing = prometheusMissing();
if (missing) console.log(`# prometheus-live: skipped: ${missing}`);

interface Check {
  panel: string;
  expr: string;
  legend: string;
  cudaOnly: boolean;
}

/** What is wrong with one query's answer, or null. */
function problem(c: Check, r: PromResult): string | null {
  if (!r.ok) return `does not evaluate: ${r.error}`;
  if (c.cudaOnly) return r.result.length === 0 ? null : `is listed as cuda-only but returned ${r.result.length} series on the CPU`;
  if (r.result.length === 0) return 'returned no series';
  const finite = r.result.filter((s) => s.value && Number.isFinite(Number(s.value[1])));
  if (finite.length === 0) return `returned only non-finite values: ${JSON.stringify(r.result.map((s) => s.value?.[1]))}`;
  for (const [, label] of c.legend.matchAll(/\{\{\s*(\w+)\s*\}\}/g)) {
    const without = r.result.filter((s) => !(label in s.metric));
    if (without.length > 0) return `legend uses {{${label}}} but series ${JSON.stringify(without[0].metric)} has no such label`;
  }
  return null;
}

describe('the Grafana dashboard against a live Tandem and a real Prometheus', { skip: missing ?? false }, () => {
  let dir: string;
  let tandem: LiveTandem | undefined;
  let prom: LivePrometheus | undefined;
  let load: Load | undefined;
  const dashboard = loadDashboard();
  const checks: Check[] = dashboardPanels(dashboard).flatMap((p) =>
    p.targets.map((t) => ({
      panel: `${p.row} / ${p.title} [${t.refId}]`,
      expr: t.expr,
      legend: t.legendFormat ?? '',
      cudaOnly: metricNames(t.expr).every((n) => CUDA_ONLY.has(n)),
    })),
  );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tandem-prometheus-'));
    tandem = await startTandem(dir);
    prom = await startPrometheus(join(dir, 'prometheus'), `127.0.0.1:${tandem.port}`, tandem.modelName);
    load = await startLoad(tandem, dir);
  });
  after(async () => {
    await load?.stop();
    await prom?.stop();
    await tandem?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('every PromQL expression of every panel parses and returns finite data, for the picked model and adapter and for All', async () => {
    assert.ok(checks.length >= 30, `only ${checks.length} queries found in the dashboard`);
    const picked = { model: tandem!.modelName, adapter: load!.adapter };
    const all = { model: '.*', adapter: '.*' };
    const started = Date.now();
    let failing: string[] = [];
    // Counters need a few scrapes and a training step or two before rates and quantiles exist:
    // ask again until every query has data, and report the ones that never got any.
    for (;;) {
      failing = [];
      for (const c of checks) {
        for (const [which, values] of [['picked', picked], ['All', all]] as const) {
          const expr = interpolate(c.expr, values, RATE_WINDOW);
          const why = problem(c, await promQuery(prom!.base, expr));
          if (why) failing.push(`${c.panel} (${which}): ${expr}\n    ${why}`);
        }
      }
      if (failing.length === 0 || Date.now() - started > DEADLINE_MS) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    assert.deepEqual(load!.failures(), [], 'chat requests failed during the run');
    assert.equal(failing.length, 0, `${failing.length} of ${checks.length * 2} queries fail after ${DEADLINE_MS / 1000} s:\n${failing.join('\n')}`);
    console.log(`# ${checks.length} queries x 2 variable settings all returned data ${((Date.now() - started) / 1000).toFixed(1)} s after the load started; ${load!.requests()} chat requests`);
  });

  it('the model and adapter variables list the live model and the training adapter', async () => {
    const vars = dashboard.templating.list.filter((v) => v.type === 'query');
    assert.deepEqual(vars.map((v) => v.name).sort(), ['adapter', 'model']);
    const expected: Record<string, string> = { model: tandem!.modelName, adapter: load!.adapter };
    for (const v of vars) {
      const lv = labelValuesQuery(v);
      assert.ok(lv, `variable ${v.name} is not a label_values() query`);
      const selector = interpolate(lv.selector, { model: tandem!.modelName }, RATE_WINDOW);
      const values = await promLabelValues(prom!.base, selector, lv.label);
      assert.ok(values.includes(expected[v.name]), `variable ${v.name} lists ${JSON.stringify(values)}, not '${expected[v.name]}'`);
    }
  });
});
