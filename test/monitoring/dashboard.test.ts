/**
 * The shipped Grafana dashboard, checked without a server: it is what scripts/gen-dashboard.ts
 * writes; its layout and variables are what Grafana needs; every metric it queries is one that
 * Tandem's Metrics and TrainingMetrics register (so renaming a metric breaks this test), and
 * every metric Tandem defines is on it. prometheus-live.test.ts runs the queries for real.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Metrics } from '../../src/metrics.ts';
import { TrainingMetrics } from '../../src/metrics-training.ts';
import { dashboardText } from '../../scripts/gen-dashboard.ts';
import { DASHBOARD_FILE, dashboardPanels, dashboardRows, interpolate, labelValuesQuery, loadDashboard, metricNames } from './dashboard.ts';

/** The series names a registry exposes: a histogram is only its _bucket, _sum and _count series. */
async function exposedNames(processMetrics: boolean): Promise<{ series: Set<string>; metrics: Set<string> }> {
  const m = new Metrics({ processMetrics });
  new TrainingMetrics(m.registry);
  const series = new Set<string>();
  const metrics = new Set<string>();
  for (const { name, type } of await m.registry.getMetricsAsJSON()) {
    metrics.add(name);
    // prom-client types `type` as an enum, but the value is the exposition's word ('histogram', ...).
    const kind = String(type);
    const suffixes = kind === 'histogram' ? ['_bucket', '_sum', '_count'] : kind === 'summary' ? ['', '_sum', '_count'] : [''];
    for (const s of suffixes) series.add(name + s);
  }
  return { series, metrics };
}

/** A series name back to its metric (tandem_x_seconds_bucket -> tandem_x_seconds). */
const baseName = (series: string): string => series.replace(/_(bucket|sum|count)$/, '');

describe('grafana/dashboards/tandem.json', () => {
  const d = loadDashboard();
  const panels = dashboardPanels(d);
  const exprs = panels.flatMap((p) => p.targets.map((t) => ({ panel: `${p.row} / ${p.title}`, row: p.row, expr: t.expr })));

  it('is exactly what scripts/gen-dashboard.ts writes (run it after editing the panels)', () => {
    assert.equal(readFileSync(DASHBOARD_FILE, 'utf8'), dashboardText());
  });

  it('has a Prometheus datasource variable that every panel and query uses, and model / adapter variables that allow All', () => {
    const vars = Object.fromEntries(d.templating.list.map((v) => [v.name, v]));
    assert.deepEqual(Object.keys(vars).sort(), ['adapter', 'datasource', 'model']);
    assert.equal(vars.datasource.type, 'datasource');
    assert.equal(vars.datasource.query, 'prometheus');
    for (const name of ['model', 'adapter']) {
      assert.equal(vars[name].type, 'query');
      assert.ok(vars[name].includeAll && vars[name].allValue === '.*', `${name}: includeAll with allValue .*`);
      assert.ok(labelValuesQuery(vars[name]), `${name} is a label_values() query`);
    }
    assert.equal(labelValuesQuery(vars.model)!.label, 'model');
    assert.equal(labelValuesQuery(vars.adapter)!.label, 'adapter');
    for (const p of panels) {
      assert.equal(p.datasource?.uid, '${datasource}', `${p.title}: panel datasource`);
      assert.ok(p.targets.length > 0, `${p.title} has no query`);
      for (const t of p.targets) assert.equal(t.datasource?.uid, '${datasource}', `${p.title} [${t.refId}]: query datasource`);
    }
  });

  it('lays out the rows serving, memory, training with unique ids and no overlapping panels', () => {
    assert.deepEqual(dashboardRows(d), ['Serving', 'Memory', 'Training']);
    const all = d.panels as { id: number; gridPos: { x: number; y: number; w: number; h: number } }[];
    assert.equal(new Set(all.map((p) => p.id)).size, all.length, 'panel ids are unique');
    const taken = new Set<string>();
    for (const p of all) {
      const g = p.gridPos;
      assert.ok(g.x >= 0 && g.w > 0 && g.x + g.w <= 24, `panel ${p.id} fits 24 columns: ${JSON.stringify(g)}`);
      for (let x = g.x; x < g.x + g.w; x++) {
        for (let y = g.y; y < g.y + g.h; y++) {
          assert.ok(!taken.has(`${x},${y}`), `panel ${p.id} overlaps another at ${x},${y}`);
          taken.add(`${x},${y}`);
        }
      }
    }
  });

  it('shows in each row what the monitoring issue asks of it', () => {
    const wanted: Record<string, string[]> = {
      Serving: [
        'tandem_requests_running', 'tandem_requests_waiting', 'tandem_time_to_first_token_seconds_bucket',
        'tandem_inter_token_latency_seconds_bucket', 'tandem_e2e_request_latency_seconds_bucket', 'tandem_generation_tokens_total',
        'tandem_prompt_tokens_total', 'tandem_kv_cache_blocks_used', 'tandem_prefix_cache_hits_tokens_total', 'tandem_requests_finished_total',
      ],
      Memory: ['tandem_backend_memory_bytes', 'tandem_process_resident_memory_bytes'],
      Training: [
        'tandem_train_reward', 'tandem_train_reward_function', 'tandem_train_reward_std', 'tandem_train_kl', 'tandem_train_loss',
        'tandem_train_grad_norm', 'tandem_train_learning_rate', 'tandem_train_completion_length', 'tandem_train_rollout_tokens_per_second',
        'tandem_train_step_seconds_sum', 'tandem_train_adapter_version', 'tandem_train_skipped_steps_total',
      ],
    };
    for (const [row, names] of Object.entries(wanted)) {
      const used = new Set(exprs.filter((e) => e.row === row).flatMap((e) => metricNames(e.expr)));
      for (const n of names) assert.ok(used.has(n), `row ${row} has no panel on ${n}`);
    }
  });

  it('queries only series that Metrics and TrainingMetrics register (a renamed metric fails here)', async () => {
    const { series } = await exposedNames(true);
    assert.ok(series.has('tandem_requests_running') && series.has('tandem_train_step_seconds_bucket'), 'registries read');
    for (const { panel, expr } of exprs) {
      const names = metricNames(expr);
      assert.ok(names.length > 0, `${panel}: no Tandem metric in ${expr}`);
      for (const n of names) assert.ok(series.has(n), `${panel}: ${n} is not a series Tandem exports (${expr})`);
    }
  });

  it('charts every metric Tandem defines (prom-client process defaults aside)', async () => {
    const { metrics } = await exposedNames(false);
    const charted = new Set(exprs.flatMap((e) => metricNames(e.expr)).map(baseName));
    const missing = [...metrics].filter((n) => !charted.has(n));
    assert.deepEqual(missing, [], `metrics on no panel: ${missing.join(', ')}`);
  });

  it('uses only its own variables and $__rate_interval in queries', () => {
    for (const { panel, expr } of exprs) {
      const out = interpolate(expr, { model: 'm', adapter: 'a' }, '1m');
      assert.doesNotMatch(out, /\$/, `${panel}: ${expr}`);
    }
  });
});

describe('dashboard helpers', () => {
  it('metricNames finds metrics and skips quoted label values, functions and label names', () => {
    assert.deepEqual(metricNames('histogram_quantile(0.9, sum by (le) (rate(tandem_a_bucket{model=~"tandem_fake", le!="1"}[5m])))'), ['tandem_a_bucket']);
    assert.deepEqual(metricNames('tandem_x{a="b"} or 0 * tandem_y / tandem_x'), ['tandem_x', 'tandem_y']);
    assert.deepEqual(metricNames('sum(rate(process_cpu_seconds_total[1m]))'), []);
  });

  it('interpolate replaces $name and ${name}, and refuses a variable without a value', () => {
    assert.equal(interpolate('rate(x{m=~"$model", a=~"${adapter}"}[$__rate_interval])', { model: 'q', adapter: '.*' }, '10s'), 'rate(x{m=~"q", a=~".*"}[10s])');
    assert.throws(() => interpolate('x{a="$nope"}', {}, '1m'), /\$nope/);
  });
});
