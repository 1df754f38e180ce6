/**
 * Re-makes docs/dashboard.png, the picture of the Grafana dashboard in the README, where
 * Grafana itself cannot run: a live `tandem serve` on a tiny random model (CPU) serving chat
 * requests while a GRPO job trains, scraped every second by a real Prometheus; every panel of
 * grafana/dashboards/tandem.json is then asked of Prometheus' query_range API with its own
 * PromQL and drawn as SVG (scripts/dashboard-html.ts), and headless Chromium screenshots the page.
 *
 *   node --import tsx scripts/render-dashboard.ts [--seconds 90] [--out docs/dashboard.png] [--width 1600]
 *
 * Needs `prometheus` and `chromium` on PATH (Debian: apt-get install prometheus chromium);
 * PROMETHEUS_BIN and CHROMIUM_BIN name others.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { dashboardPanels, dashboardRows, interpolate, loadDashboard, ROOT } from '../test/monitoring/dashboard.ts';
import { prometheusMissing, promQueryRange, startLoad, startPrometheus, startTandem } from '../test/monitoring/live-stack.ts';
import { dashboardHtml, type PanelData, type Series } from './dashboard-html.ts';

const RATE_WINDOW = '15s';
const STEP_SECONDS = 2;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { seconds: { type: 'string', default: '90' }, out: { type: 'string', default: 'docs/dashboard.png' }, width: { type: 'string', default: '1600' } },
  });
  const seconds = Number(values.seconds);
  const width = Number(values.width);
  if (!(seconds >= 10)) throw new Error(`--seconds must be a number of at least 10, got '${values.seconds}'`);
  if (!(width >= 800)) throw new Error(`--width must be at least 800 pixels, got '${values.width}'`);
  const out = resolve(ROOT, values.out!);
  const chromium = process.env.CHROMIUM_BIN ?? 'chromium';
  const missing = prometheusMissing() ?? (spawnSync(chromium, ['--version']).error ? `'${chromium}' not found (apt-get install chromium, or set CHROMIUM_BIN)` : null);
  if (missing) throw new Error(missing);

  const dir = mkdtempSync(join(tmpdir(), 'tandem-render-'));
  const tandem = await startTandem(dir);
  const prom = await startPrometheus(join(dir, 'prometheus'), `127.0.0.1:${tandem.port}`, tandem.modelName);
  try {
    const t0 = Math.floor(Date.now() / 1000);
    const load = await startLoad(tandem, dir);
    console.log(`serving and training for ${seconds} s...`);
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const t1 = Math.floor(Date.now() / 1000);
    const picked = { model: tandem.modelName, adapter: load.adapter };

    const d = loadDashboard();
    const panels: PanelData[] = (d.panels as { type: string; title: string; gridPos: PanelData['gridPos'] }[])
      .filter((p) => p.type === 'row')
      .map((r) => ({ title: r.title, type: 'row', unit: '', stacked: false, gridPos: r.gridPos, series: [] }));
    for (const p of dashboardPanels(d)) {
      const series: Series[] = [];
      for (const t of p.targets) {
        const r = await promQueryRange(prom.base, interpolate(t.expr, picked, RATE_WINDOW), t0, t1, STEP_SECONDS);
        if (!r.ok) throw new Error(`${p.title}: ${r.error}`);
        for (const s of r.result) {
          const name = (t.legendFormat ?? '').replace(/\{\{\s*(\w+)\s*\}\}/g, (_, l: string) => s.metric[l] ?? '') || JSON.stringify(s.metric);
          series.push({ name, points: (s.values ?? []).map(([ts, v]) => [ts, Number(v)] as [number, number]) });
        }
      }
      const custom = (p.fieldConfig?.defaults as { custom?: { stacking?: { mode?: string } } } | undefined)?.custom;
      const description = (p as { description?: string }).description ?? '';
      panels.push({
        title: p.title,
        type: p.type,
        unit: p.fieldConfig?.defaults?.unit ?? 'short',
        stacked: custom?.stacking?.mode === 'normal',
        gridPos: p.gridPos,
        series,
        emptyNote: /cuda only/.test(description) ? 'No data: cuda only (this picture ran on the CPU backend)' : 'No data',
      });
    }
    const requests = load.requests();
    await load.stop();

    const heading =
      `Tandem: serving and training <small>rows ${dashboardRows(d).join(' · ')} — every panel's PromQL from grafana/dashboards/tandem.json, ` +
      `drawn from a live Prometheus: tiny random model on the CPU, ${seconds} s, ${requests} chat requests while a GRPO job trains ` +
      `(scripts/render-dashboard.ts)</small>`;
    const { html, height } = dashboardHtml(panels, heading, width, t0, t1);
    const page = join(dir, 'dashboard.html');
    writeFileSync(page, html);
    const shot = spawnSync(
      chromium,
      ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', `--window-size=${width},${height}`, `--screenshot=${out}`, `file://${page}`],
      { encoding: 'utf8', timeout: 60_000 },
    );
    if (shot.status !== 0) throw new Error(`chromium exited ${shot.status}: ${shot.stderr}`);
    console.log(`wrote ${out}: ${width}x${height}, ${(statSync(out).size / 1024).toFixed(0)} KiB`);
  } finally {
    await prom.stop();
    await tandem.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
