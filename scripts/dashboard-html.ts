/**
 * A static HTML picture of the Grafana dashboard: each panel at its gridPos, its series drawn
 * as inline SVG (no scripts, no fonts or libraries from anywhere), in Grafana's dark colours.
 * scripts/render-dashboard.ts fills it with query_range data from a live Prometheus and has a
 * headless Chromium screenshot it, where Grafana itself cannot run.
 */

export interface Series {
  name: string;
  points: [number, number][]; // [unix seconds, value]; non-finite values are gaps
}

export interface PanelData {
  title: string;
  type: string; // 'row' | 'timeseries' | 'stat'
  unit: string;
  stacked: boolean;
  gridPos: { x: number; y: number; w: number; h: number };
  series: Series[];
  /** Shown instead of a chart when there are no series. */
  emptyNote?: string;
}

const COLORS = ['#73bf69', '#f2cc0c', '#8ab8ff', '#ff780a', '#f2495c', '#5794f2', '#b877d9', '#fade2a', '#37872d', '#e0b400'];
const UNIT_HEIGHT = 30; // px per grid row, as Grafana
const GAP = 8;

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A value as Grafana would label it in `unit`. */
export function formatValue(v: number, unit: string): string {
  if (!Number.isFinite(v)) return '-';
  const fixed = (x: number): string => (Number.isInteger(x) ? String(x) : Math.abs(x) < 1 ? String(Number(x.toPrecision(2))) : Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2));
  if (unit === 'percentunit') return `${fixed(v * 100)}%`;
  if (unit === 's') {
    const a = Math.abs(v);
    if (a === 0) return '0 s';
    if (a < 1e-3) return `${fixed(v * 1e6)} µs`;
    if (a < 1) return `${fixed(v * 1e3)} ms`;
    return `${fixed(v)} s`;
  }
  if (unit === 'bytes') {
    const steps = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let x = v;
    let i = 0;
    while (Math.abs(x) >= 1024 && i < steps.length - 1) {
      x /= 1024;
      i++;
    }
    return `${fixed(x)} ${steps[i]}`;
  }
  const suffix = unit === 'reqps' ? ' req/s' : '';
  const a = Math.abs(v);
  if (a !== 0 && a < 1e-3) return `${v.toExponential(1)}${suffix}`;
  if (a >= 1e6) return `${fixed(v / 1e6)} M${suffix}`;
  if (a >= 1e3) return `${fixed(v / 1e3)} K${suffix}`;
  return `${fixed(v)}${suffix}`;
}

/** About `count` round tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, count: number): number[] {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

function chartSvg(p: PanelData, width: number, height: number, t0: number, t1: number): string {
  const left = 64;
  const right = 8;
  const top = 6;
  const bottom = 18;
  const w = width - left - right;
  const h = height - top - bottom;
  // Stacked panels draw running sums, series by series.
  const drawn = p.series.map((s) => ({ name: s.name, points: s.points.map(([t, v]) => [t, v] as [number, number]) }));
  if (p.stacked) {
    const sums = new Map<number, number>();
    for (const s of drawn) {
      for (const pt of s.points) {
        if (!Number.isFinite(pt[1])) continue;
        const base = sums.get(pt[0]) ?? 0;
        pt[1] += base;
        sums.set(pt[0], pt[1]);
      }
    }
  }
  const values = drawn.flatMap((s) => s.points.map(([, v]) => v)).filter(Number.isFinite);
  let lo = Math.min(0, ...values);
  let hi = Math.max(...values);
  if (!(hi > lo)) hi = lo + (Math.abs(lo) || 1);
  const yt = ticks(lo, hi, 4);
  lo = Math.min(lo, yt[0]);
  hi = Math.max(hi, yt.at(-1)!);
  const x = (t: number): number => left + ((t - t0) / Math.max(t1 - t0, 1)) * w;
  const y = (v: number): number => top + h - ((v - lo) / (hi - lo)) * h;
  const parts: string[] = [];
  for (const v of yt) {
    parts.push(`<line x1="${left}" x2="${left + w}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#2c3235"/>`);
    parts.push(`<text x="${left - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${esc(formatValue(v, p.unit))}</text>`);
  }
  for (const t of ticks(t0, t1, 5)) {
    const d = new Date(t * 1000);
    const label = `${String(d.getUTCHours()).padStart(2, '0')}:${String(d.getUTCMinutes()).padStart(2, '0')}:${String(d.getUTCSeconds()).padStart(2, '0')}`;
    // Labels near the right edge end at their tick instead of running off the panel.
    const anchor = x(t) > left + w - 24 ? 'end' : 'middle';
    parts.push(`<text x="${x(t).toFixed(1)}" y="${height - 4}" text-anchor="${anchor}">${label}</text>`);
  }
  drawn.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    // Split at gaps so a missing sample is not bridged by a line.
    const runs: [number, number][][] = [[]];
    for (const pt of s.points) {
      if (Number.isFinite(pt[1])) runs.at(-1)!.push(pt);
      else if (runs.at(-1)!.length > 0) runs.push([]);
    }
    for (const run of runs.filter((r) => r.length > 0)) {
      const line = run.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
      const base = y(Math.max(lo, 0)).toFixed(1);
      const area = `${x(run[0][0]).toFixed(1)},${base} ${line} ${x(run.at(-1)![0]).toFixed(1)},${base}`;
      parts.push(`<polygon points="${area}" fill="${color}" fill-opacity="${p.stacked ? 0.35 : 0.1}" stroke="none"/>`);
      parts.push(`<polyline points="${line}" fill="none" stroke="${color}" stroke-width="1.5"/>`);
    }
  });
  return `<svg width="${width}" height="${height}" font-size="10" fill="#9fa7b3" font-family="sans-serif">${parts.join('')}</svg>`;
}

function legendHtml(series: Series[]): string {
  return `<div class="legend">${series
    .map((s, i) => `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(s.name)}</span>`)
    .join('')}</div>`;
}

function statHtml(p: PanelData): string {
  return `<div class="stat">${p.series
    .map((s) => {
      const last = [...s.points].reverse().find(([, v]) => Number.isFinite(v));
      return `<div><b>${esc(last ? formatValue(last[1], p.unit) : '-')}</b><small>${esc(s.name)}</small></div>`;
    })
    .join('')}</div>`;
}

/** The whole page: `pageWidth` px wide, panels placed by gridPos, `heading` above them. */
export function dashboardHtml(panels: PanelData[], heading: string, pageWidth: number, t0: number, t1: number): { html: string; height: number } {
  const col = (pageWidth - GAP) / 24;
  const headingHeight = 44;
  const boxes: string[] = [];
  let bottom = 0;
  for (const p of panels) {
    const g = p.gridPos;
    const left = GAP + g.x * col;
    const topPx = headingHeight + g.y * UNIT_HEIGHT;
    const width = g.w * col - GAP;
    const height = g.h * UNIT_HEIGHT - GAP;
    bottom = Math.max(bottom, topPx + height + GAP);
    const style = `left:${left.toFixed(0)}px;top:${topPx}px;width:${width.toFixed(0)}px;height:${height}px`;
    if (p.type === 'row') {
      boxes.push(`<div class="row" style="${style}">${esc(p.title)}</div>`);
      continue;
    }
    let body: string;
    if (p.series.length === 0) body = `<div class="empty">${esc(p.emptyNote ?? 'No data')}</div>`;
    else if (p.type === 'stat') body = statHtml(p);
    else {
      const legendRows = Math.ceil(p.series.length / Math.max(1, Math.floor(width / 170)));
      body = chartSvg(p, Math.floor(width - 12), height - 30 - 16 * legendRows, t0, t1) + legendHtml(p.series);
    }
    boxes.push(`<div class="panel" style="${style}"><h3>${esc(p.title)}</h3>${body}</div>`);
  }
  const css = `
    body{margin:0;background:#111217;color:#ccccdc;font-family:sans-serif}
    .head{position:absolute;left:${GAP}px;top:10px;font-size:17px}
    .head small{color:#8e8e8e;font-size:12px;margin-left:10px}
    .panel{position:absolute;box-sizing:border-box;background:#181b1f;border:1px solid #2c3235;border-radius:2px;padding:4px 6px;overflow:hidden}
    .panel h3{margin:0 0 4px;font-size:12px;font-weight:500;color:#ccccdc}
    .row{position:absolute;font-size:14px;font-weight:600;padding-top:6px;color:#ccccdc}
    .legend{font-size:10px;color:#ccccdc;display:flex;flex-wrap:wrap;gap:2px 12px}
    .legend i{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle}
    .stat{display:flex;gap:18px;align-items:flex-end;height:70%}
    .stat b{display:block;font-size:30px;color:#8ab8ff;font-weight:500}
    .stat small{color:#9fa7b3;font-size:10px}
    .empty{color:#8e8e8e;font-size:12px;padding-top:40px;text-align:center}`;
  const html = `<!doctype html><html><head><meta charset="utf-8"><style>${css}</style></head><body>
<div class="head">${heading}</div>
${boxes.join('\n')}
</body></html>`;
  return { html, height: Math.ceil(bottom + GAP) };
}
