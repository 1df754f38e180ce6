/**
 * Reading the shipped Grafana dashboard the way Grafana does: its panels (rows included),
 * every PromQL expression in them and in its variables, and the metric names those use.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const DASHBOARD_FILE = `${ROOT}grafana/dashboards/tandem.json`;

export interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  /** The row above it ('' before the first row). */
  row: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets: { refId: string; expr: string; legendFormat?: string; datasource?: { type?: string; uid?: string } }[];
  fieldConfig?: { defaults?: { unit?: string } };
}

export interface DashboardVariable {
  name: string;
  type: string;
  query?: unknown;
  definition?: string;
  includeAll?: boolean;
  allValue?: string;
}

export interface Dashboard {
  uid: string;
  title: string;
  panels: unknown[];
  templating: { list: DashboardVariable[] };
}

export function loadDashboard(file = DASHBOARD_FILE): Dashboard {
  return JSON.parse(readFileSync(file, 'utf8')) as Dashboard;
}

/** Every non-row panel, in order, with the title of the row it sits under (collapsed rows hold their panels inside). */
export function dashboardPanels(d: Dashboard): DashboardPanel[] {
  const out: DashboardPanel[] = [];
  let row = '';
  const visit = (p: Record<string, unknown>): void => {
    if (p.type === 'row') {
      row = String(p.title);
      for (const inner of (p.panels as Record<string, unknown>[] | undefined) ?? []) visit(inner);
      return;
    }
    out.push({ ...(p as unknown as DashboardPanel), row, targets: (p.targets as DashboardPanel['targets'] | undefined) ?? [] });
  };
  for (const p of d.panels as Record<string, unknown>[]) visit(p);
  return out;
}

/** Row titles in order. */
export function dashboardRows(d: Dashboard): string[] {
  return (d.panels as { type: string; title: string }[]).filter((p) => p.type === 'row').map((p) => p.title);
}

/** A query variable's `label_values(selector, label)` split up; null for other kinds of variable query. */
export function labelValuesQuery(v: DashboardVariable): { selector: string; label: string } | null {
  const text = v.definition ?? (typeof v.query === 'string' ? v.query : (v.query as { query?: string } | undefined)?.query) ?? '';
  const m = /^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$/.exec(text.trim());
  return m ? { selector: m[1].trim(), label: m[2] } : null;
}

/**
 * Metric names in a PromQL expression. Quoted strings (label values, regexes) are dropped
 * first; every Tandem series starts with `tandem_`, which nothing else in an expression
 * does (function names, label names, keywords), so the names are the `tandem_` words.
 */
export function metricNames(expr: string): string[] {
  const unquoted = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  return [...new Set(unquoted.match(/\btandem_[a-zA-Z0-9_:]*/g) ?? [])];
}

/**
 * The expression Grafana sends for given variable values: `$name` / `${name}` replaced
 * (values as regex alternatives for `=~`), and `$__rate_interval` by `rateWindow`.
 */
export function interpolate(expr: string, values: Record<string, string>, rateWindow: string): string {
  return expr
    .replace(/\$__rate_interval|\$\{__rate_interval\}/g, rateWindow)
    .replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, a: string | undefined, b: string | undefined) => {
      const name = (a ?? b)!;
      if (!(name in values)) throw new Error(`expression uses $${name}, which has no value: ${expr}`);
      return values[name];
    });
}
