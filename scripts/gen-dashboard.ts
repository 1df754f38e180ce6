/**
 * Writes grafana/dashboards/tandem.json, the Grafana dashboard shipped with Tandem, from the
 * panel list below: `node --import tsx scripts/gen-dashboard.ts`.
 *
 * The dashboard is generated rather than hand-edited so that its layout (gridPos), ids and
 * datasource references stay consistent; test/monitoring/dashboard.test.ts checks that the
 * committed JSON is this script's output, that every metric it names is one Tandem registers,
 * and test/monitoring/prometheus-live.test.ts that every query returns data from a live server.
 *
 * Every query filters on `model=~"$model"`: `model` is a target label set in prometheus.yml
 * (Tandem's own series carry no model name). With the variable on All (`.*`) a Prometheus
 * without that label still matches everything.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const DASHBOARD_PATH = fileURLToPath(new URL('../grafana/dashboards/tandem.json', import.meta.url));

const DS = { type: 'prometheus', uid: '${datasource}' } as const;
const M = 'model=~"$model"';
const MA = `${M}, adapter=~"$adapter"`;
const RATE = '[$__rate_interval]';

interface Query {
  expr: string;
  legend: string;
}
interface PanelSpec {
  title: string;
  description: string;
  unit: string;
  queries: Query[];
  /** Grid columns out of 24 (default 8). */
  width?: number;
  kind?: 'timeseries' | 'stat';
  stacked?: boolean;
}
interface RowSpec {
  title: string;
  panels: PanelSpec[];
}

const q = (expr: string, legend: string): Query => ({ expr, legend });

/** p50 / p90 / p99 of a histogram over the dashboard's rate window. */
function quantiles(metric: string, qs: number[] = [0.5, 0.9, 0.99]): Query[] {
  return qs.map((x) => q(`histogram_quantile(${x}, sum by (le) (rate(${metric}_bucket{${M}}${RATE})))`, `p${Math.round(x * 100)}`));
}

export const ROWS: RowSpec[] = [
  {
    title: 'Serving',
    panels: [
      {
        title: 'Requests running / waiting',
        description: 'Requests in the running batch (prefilling or decoding) and queued for admission.',
        unit: 'short',
        queries: [q(`sum(tandem_requests_running{${M}})`, 'running'), q(`sum(tandem_requests_waiting{${M}})`, 'waiting')],
      },
      {
        title: 'Finished requests by reason',
        description: 'Requests per second that ended, by finish reason: stop, length, abort, error.',
        unit: 'reqps',
        queries: [q(`sum by (finish_reason) (rate(tandem_requests_finished_total{${M}}${RATE}))`, '{{finish_reason}}')],
      },
      {
        title: 'Token throughput',
        description: 'Prompt tokens prefilled and tokens generated per second (rollouts of training jobs included).',
        unit: 'short',
        queries: [
          q(`sum(rate(tandem_prompt_tokens_total{${M}}${RATE}))`, 'prompt tokens/s'),
          q(`sum(rate(tandem_generation_tokens_total{${M}}${RATE}))`, 'generated tokens/s'),
        ],
      },
      {
        title: 'Time to first token',
        description: 'From a request\'s arrival to its first generated token.',
        unit: 's',
        queries: quantiles('tandem_time_to_first_token_seconds'),
      },
      {
        title: 'Inter-token latency',
        description: 'Gap between consecutive generated tokens of one request.',
        unit: 's',
        queries: quantiles('tandem_inter_token_latency_seconds'),
      },
      {
        title: 'End-to-end request latency',
        description: 'From a request\'s arrival to its end.',
        unit: 's',
        queries: quantiles('tandem_e2e_request_latency_seconds'),
      },
      {
        title: 'Queue time',
        description: 'From arrival to first being scheduled: time spent waiting for a place in the batch.',
        unit: 's',
        queries: quantiles('tandem_request_queue_time_seconds', [0.5, 0.99]),
      },
      {
        title: 'KV cache use',
        description: 'Share of KV cache blocks held by live requests, and share free but still holding a reusable prefix.',
        unit: 'percentunit',
        queries: [
          q(`sum(tandem_kv_cache_blocks_used{${M}}) / sum(tandem_kv_cache_blocks_total{${M}})`, 'used'),
          q(`sum(tandem_kv_cache_blocks_cached_free{${M}}) / sum(tandem_kv_cache_blocks_total{${M}})`, 'free, prefix cached'),
        ],
      },
      {
        title: 'Prefix cache hit rate',
        description: 'Share of prompt tokens found in the prefix cache at admission (not computed again).',
        unit: 'percentunit',
        queries: [
          q(`sum(rate(tandem_prefix_cache_hits_tokens_total{${M}}${RATE})) / sum(rate(tandem_prefix_cache_queries_tokens_total{${M}}${RATE}))`, 'hit rate'),
        ],
      },
      {
        title: 'Engine step time',
        description:
          'One engine step: schedule, forward (packed prefill chunks + decodes), sample. p50 / p99 over all steps, and the mean per kind: ' +
          'graph (a replayed decode graph), decode (one token per row, eager), mixed (prompt chunks beside decodes), prefill.',
        unit: 's',
        queries: [
          ...quantiles('tandem_engine_step_seconds', [0.5, 0.99]),
          q(`sum by (kind) (rate(tandem_engine_step_seconds_sum{${M}}${RATE})) / sum by (kind) (rate(tandem_engine_step_seconds_count{${M}}${RATE}))`, '{{kind}} mean'),
        ],
      },
      {
        title: 'Engine steps by kind',
        description:
          'Engine steps per second: graph (a replayed decode graph), decode (one token per row, eager), mixed (prompt chunks beside decodes, eager), prefill. Eager decode steps where graphs are on mean a bucket without a graph.',
        unit: 'short',
        queries: [q(`sum by (kind) (rate(tandem_engine_step_seconds_count{${M}}${RATE}))`, '{{kind}}')],
      },
      {
        title: 'Request lengths',
        description: 'Median prompt and generated tokens of finished requests.',
        unit: 'short',
        queries: [
          q(`histogram_quantile(0.5, sum by (le) (rate(tandem_request_prompt_tokens_bucket{${M}}${RATE})))`, 'prompt p50'),
          q(`histogram_quantile(0.5, sum by (le) (rate(tandem_request_generation_tokens_bucket{${M}}${RATE})))`, 'generated p50'),
        ],
      },
      {
        title: 'Preemptions',
        description: 'Running requests sent back to wait (KV blocks freed, recomputed later) per second: the KV cache is too small for the load.',
        unit: 'short',
        queries: [q(`sum(rate(tandem_preemptions_total{${M}}${RATE}))`, 'preemptions/s')],
      },
    ],
  },
  {
    title: 'Memory',
    panels: [
      {
        title: 'Backend memory by category',
        description: 'Bytes the compute backend (GPU memory on cuda) holds: weights, KV cache, scratch, adapters...',
        unit: 'bytes',
        stacked: true,
        width: 12,
        queries: [q(`sum by (category) (tandem_backend_memory_bytes{${M}})`, '{{category}}')],
      },
      {
        title: 'GPU memory budget',
        description: 'The --gpu-memory partition planned at start (cuda only; absent on the CPU backend).',
        unit: 'bytes',
        stacked: true,
        width: 12,
        queries: [q(`sum by (category) (tandem_gpu_memory_budget_bytes{${M}})`, '{{category}}')],
      },
      {
        title: 'Process memory',
        description: 'The Node.js process: resident set, V8 heap in use, and memory outside the heap (ArrayBuffers: CPU tensors).',
        unit: 'bytes',
        queries: [
          q(`tandem_process_resident_memory_bytes{${M}}`, 'resident {{instance}}'),
          q(`tandem_nodejs_heap_size_used_bytes{${M}}`, 'V8 heap {{instance}}'),
          q(`tandem_nodejs_external_memory_bytes{${M}}`, 'external {{instance}}'),
        ],
      },
      {
        title: 'Adapter memory',
        description: 'Backend bytes of LoRA adapter weights per adapter, all resident versions (also in backend memory).',
        unit: 'bytes',
        queries: [q(`sum by (adapter) (tandem_adapter_bytes{${MA}})`, '{{adapter}}')],
      },
      {
        title: 'Adapter versions loaded',
        description: 'Versions on the backend per adapter: the current one plus replaced ones still used by running requests.',
        unit: 'short',
        queries: [q(`sum by (adapter) (tandem_adapter_versions_loaded{${MA}})`, '{{adapter}}')],
      },
      {
        title: 'Event loop lag',
        description: 'Node.js event-loop delay: high values mean HTTP handling waits behind compute.',
        unit: 's',
        width: 24,
        queries: [
          q(`max(tandem_nodejs_eventloop_lag_p50_seconds{${M}})`, 'p50'),
          q(`max(tandem_nodejs_eventloop_lag_p99_seconds{${M}})`, 'p99'),
        ],
      },
    ],
  },
  {
    title: 'Training',
    panels: [
      { title: 'Step', description: 'Optimizer steps completed by each job.', unit: 'short', kind: 'stat', width: 6, queries: [q(`tandem_train_step{${MA}}`, '{{adapter}}')] },
      {
        title: 'Adapter version',
        description: 'Version number each job last published (what chat requests for the adapter get).',
        unit: 'short',
        kind: 'stat',
        width: 6,
        queries: [q(`tandem_train_adapter_version{${MA}}`, '{{adapter}}')],
      },
      {
        title: 'Skipped steps',
        description: 'Steps skipped because the loss or a gradient was not finite (0 until the first one).',
        unit: 'short',
        kind: 'stat',
        width: 6,
        // The counter has no series until a step is skipped: show 0 for every job until then.
        queries: [q(`sum by (adapter) (tandem_train_skipped_steps_total{${MA}}) or sum by (adapter) (0 * tandem_train_steps_total{${MA}})`, '{{adapter}}')],
      },
      { title: 'Jobs running', description: 'Training jobs running now (one trains at a time).', unit: 'short', kind: 'stat', width: 6, queries: [q(`sum(tandem_train_jobs_running{${M}})`, 'running')] },
      {
        title: 'Reward',
        description: 'Mean total reward of the last generation batch (GRPO).',
        unit: 'short',
        queries: [q(`tandem_train_reward{${MA}}`, '{{adapter}}')],
      },
      {
        title: 'Reward by function',
        description: 'Mean of each reward function over the last generation batch (unweighted).',
        unit: 'short',
        queries: [q(`tandem_train_reward_function{${MA}}`, '{{adapter}} {{reward}}')],
      },
      {
        title: 'Reward std',
        description: 'Standard deviation of the total reward and of each reward function in the last generation batch.',
        unit: 'short',
        queries: [q(`tandem_train_reward_std{${MA}}`, '{{adapter}} total'), q(`tandem_train_reward_function_std{${MA}}`, '{{adapter}} {{reward}}')],
      },
      { title: 'Loss', description: 'Loss of the last optimizer step.', unit: 'short', queries: [q(`tandem_train_loss{${MA}}`, '{{adapter}}')] },
      {
        title: 'KL to the base model',
        description: 'Mean per-token KL to the reference model (k3 estimator; GRPO with beta > 0).',
        unit: 'short',
        queries: [q(`tandem_train_kl{${MA}}`, '{{adapter}}')],
      },
      {
        title: 'Gradient norm',
        description: 'Global gradient norm of the last step, before clipping.',
        unit: 'short',
        queries: [q(`tandem_train_grad_norm{${MA}}`, '{{adapter}}')],
      },
      { title: 'Learning rate', description: 'Learning rate of the last step (after warmup and schedule).', unit: 'short', queries: [q(`tandem_train_learning_rate{${MA}}`, '{{adapter}}')] },
      {
        title: 'Completion length',
        description: 'Mean completion length in tokens of the last generation batch.',
        unit: 'short',
        queries: [q(`tandem_train_completion_length{${MA}}`, '{{adapter}}')],
      },
      {
        title: 'Rollout tokens/s',
        description: 'Completion tokens per second of the last rollout (generation shares the engine with user requests).',
        unit: 'short',
        queries: [q(`tandem_train_rollout_tokens_per_second{${MA}}`, '{{adapter}}')],
      },
      {
        title: 'Step time by phase',
        description: 'Mean seconds per step: rollout (generation, rewards) and training (forward, backward, optimizer).',
        unit: 's',
        stacked: true,
        queries: [
          q(
            `sum by (adapter, phase) (rate(tandem_train_step_seconds_sum{${MA}}${RATE})) / sum by (adapter, phase) (rate(tandem_train_step_seconds_count{${MA}}${RATE}))`,
            '{{adapter}} {{phase}}',
          ),
        ],
      },
      {
        title: 'Steps per minute',
        description: 'Optimizer steps run per minute (skipped ones included).',
        unit: 'short',
        queries: [q(`sum by (adapter) (rate(tandem_train_steps_total{${MA}}${RATE})) * 60`, '{{adapter}}')],
      },
      {
        title: 'Clip ratio',
        description: 'Share of completion tokens whose probability ratio was clipped (GRPO; 0 with num_iterations 1).',
        unit: 'percentunit',
        queries: [q(`tandem_train_clip_ratio{${MA}}`, '{{adapter}}')],
      },
    ],
  },
];

/** Grafana panel JSON for one spec at (x, y). */
function panelJson(spec: PanelSpec, id: number, x: number, y: number, height: number): Record<string, unknown> {
  const kind = spec.kind ?? 'timeseries';
  const targets = spec.queries.map((query, i) => ({
    refId: String.fromCharCode(65 + i),
    datasource: DS,
    editorMode: 'code',
    expr: query.expr,
    legendFormat: query.legend,
    range: true,
  }));
  const base = { id, type: kind, title: spec.title, description: spec.description, datasource: DS, gridPos: { h: height, w: spec.width ?? 8, x, y }, targets };
  if (kind === 'stat') {
    return {
      ...base,
      fieldConfig: { defaults: { unit: spec.unit, decimals: 0, color: { mode: 'thresholds' }, thresholds: { mode: 'absolute', steps: [{ color: 'blue', value: null }] } }, overrides: [] },
      options: { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'value', graphMode: 'area', justifyMode: 'auto', textMode: 'value_and_name', orientation: 'auto' },
    };
  }
  return {
    ...base,
    fieldConfig: {
      defaults: {
        unit: spec.unit,
        color: { mode: 'palette-classic' },
        custom: { drawStyle: 'line', lineWidth: 1, fillOpacity: spec.stacked ? 40 : 10, showPoints: 'never', spanNulls: true, stacking: { mode: spec.stacked ? 'normal' : 'none', group: 'A' } },
      },
      overrides: [],
    },
    options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
  };
}

/** Lays the rows out top to bottom, panels left to right, wrapping at 24 columns. */
export function buildDashboard(): Record<string, unknown> {
  const panels: Record<string, unknown>[] = [];
  let id = 1;
  let y = 0;
  for (const row of ROWS) {
    panels.push({ id: id++, type: 'row', title: row.title, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y }, panels: [] });
    y += 1;
    let x = 0;
    let lineHeight = 0;
    for (const spec of row.panels) {
      const w = spec.width ?? 8;
      const h = spec.kind === 'stat' ? 4 : 8;
      if (x + w > 24) {
        y += lineHeight;
        x = 0;
        lineHeight = 0;
      }
      panels.push(panelJson(spec, id++, x, y, h));
      x += w;
      lineHeight = Math.max(lineHeight, h);
    }
    y += lineHeight;
  }
  const queryVariable = (name: string, label: string, definition: string) => ({
    name,
    label,
    type: 'query',
    datasource: DS,
    definition,
    query: { query: definition, refId: `${name}-values` },
    refresh: 2,
    includeAll: true,
    allValue: '.*',
    multi: true,
    current: { text: 'All', value: '$__all' },
    sort: 1,
    hide: 0,
    regex: '',
    options: [],
  });
  return {
    uid: 'tandem',
    title: 'Tandem: serving and training',
    description: 'One Tandem process: the requests it serves, the memory it holds, the LoRA adapters it trains. Source: scripts/gen-dashboard.ts.',
    tags: ['tandem', 'llm', 'grpo'],
    editable: true,
    graphTooltip: 1,
    refresh: '5s',
    schemaVersion: 39,
    version: 1,
    time: { from: 'now-30m', to: 'now' },
    timepicker: {},
    timezone: 'browser',
    annotations: { list: [] },
    links: [],
    templating: {
      list: [
        { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', current: {}, hide: 0, refresh: 1, regex: '', options: [] },
        // `model` is the target label prometheus.yml puts on each Tandem it scrapes.
        queryVariable('model', 'Model', 'label_values(tandem_requests_running, model)'),
        // Adapters that a training job reports on, or that are loaded for serving.
        queryVariable('adapter', 'Adapter', 'label_values({__name__=~"tandem_train_step|tandem_adapter_bytes", model=~"$model"}, adapter)'),
      ],
    },
    panels,
  };
}

/** The file's exact text: two-space JSON with a final newline. */
export function dashboardText(): string {
  return JSON.stringify(buildDashboard(), null, 2) + '\n';
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(DASHBOARD_PATH, dashboardText());
  console.log(`wrote ${DASHBOARD_PATH}`);
}
