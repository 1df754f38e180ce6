/**
 * Load generator for a running Tandem (or any OpenAI-compatible) server, measured the way
 * `vllm bench serve` measures:
 *   TTFT  time from sending a request to its first content chunk
 *   ITL   gaps between successive content chunks of a request
 *   TPOT  per request (e2e - ttft) / (output_tokens - 1), for requests with > 1 output token
 *   E2EL  time from sending a request to its last chunk
 *   request throughput = completed / duration, output throughput = output tokens / duration,
 *   total token throughput = (input + output tokens) / duration, duration = first send to last end.
 * Token counts come from the server's usage chunk (stream_options.include_usage), as vLLM's do.
 *
 * Prompts are windows of --input-len tokens (lengths drawn uniformly from
 * [len * (1 - ratio), len * (1 + ratio)], vLLM's --random-range-ratio) from a seeded pool of
 * random words; completions send the token ids, chat sends their text as one user message.
 * Every request sets ignore_eos and max_tokens = its drawn output length.
 *
 * Usage: node --import tsx bench/serve.ts [--base-url http://127.0.0.1:8000] [--endpoint completions|chat]
 *   [--concurrency 8] [--num-prompts 64] [--input-len 128] [--output-len 64] [--random-range-ratio 0]
 *   [--request-rate inf] [--seed 0] [--model NAME] [--api-key KEY] [--card TEXT] [--out FILE.json]
 */
import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { SeededRandom } from '../src/util/random.ts';

const { values: v } = parseArgs({
  options: {
    'base-url': { type: 'string', default: 'http://127.0.0.1:8000' },
    endpoint: { type: 'string', default: 'completions' },
    concurrency: { type: 'string', default: '8' },
    'num-prompts': { type: 'string', default: '64' },
    'input-len': { type: 'string', default: '128' },
    'output-len': { type: 'string', default: '64' },
    'random-range-ratio': { type: 'string', default: '0' },
    'request-rate': { type: 'string', default: 'inf' },
    seed: { type: 'string', default: '0' },
    model: { type: 'string' },
    'api-key': { type: 'string' },
    card: { type: 'string' },
    out: { type: 'string' },
  },
});

function num(name: string, min: number, integer = true): number {
  const raw = v[name as keyof typeof v] as string;
  const x = raw === 'inf' ? Infinity : Number(raw);
  if (Number.isNaN(x) || x < min || (integer && Number.isFinite(x) && !Number.isInteger(x))) {
    throw new Error(`--${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got '${raw}'`);
  }
  return x;
}

const baseUrl = v['base-url']!.replace(/\/$/, '');
const endpoint = v.endpoint === 'chat' ? 'chat' : v.endpoint === 'completions' ? 'completions' : null;
if (endpoint === null) throw new Error(`--endpoint must be completions or chat, got '${v.endpoint}'`);
const concurrency = num('concurrency', 1);
const numPrompts = num('num-prompts', 1);
const inputLen = num('input-len', 1);
const outputLen = num('output-len', 1);
const rangeRatio = num('random-range-ratio', 0, false);
if (rangeRatio >= 1) throw new Error('--random-range-ratio must be in [0, 1)');
const requestRate = num('request-rate', 0, false);
const rng = new SeededRandom(num('seed', 0));
const headers: Record<string, string> = { 'content-type': 'application/json' };
if (v['api-key'] ?? process.env.TANDEM_API_KEY) headers.authorization = `Bearer ${v['api-key'] ?? process.env.TANDEM_API_KEY}`;
const dispatcher = new Agent({ connections: Math.min(concurrency, numPrompts) + 1, keepAliveTimeout: 60_000, bodyTimeout: 0, headersTimeout: 0 });

async function postJson<T>(path: string, body: unknown): Promise<T> {
  const res = await request(baseUrl + path, { method: 'POST', headers, body: JSON.stringify(body), dispatcher });
  const json = (await res.body.json()) as T;
  if (res.statusCode !== 200) throw new Error(`${path}: ${res.statusCode} ${JSON.stringify(json)}`);
  return json;
}

async function servedModel(): Promise<string> {
  if (v.model) return v.model;
  const res = await request(`${baseUrl}/v1/models`, { headers, dispatcher });
  const json = (await res.body.json()) as { data?: { id: string }[] };
  if (res.statusCode !== 200 || !json.data?.[0]) throw new Error(`GET /v1/models answered ${res.statusCode}: pass --model`);
  return json.data[0].id;
}

const WORDS = ('the of and to in is was for on that with as by at from his her an are this which be or had not but what all were when we ' +
  'there can who been has their if would will more one about up out them so some time could into only other then its two like ' +
  'apple river number seven market window garden yellow quickly between answer problem sold friends clips half total each').split(' ');

/** Token windows with their lengths drawn as vLLM's random dataset draws them. */
async function makePrompts(): Promise<{ ids: number[]; text: string; maxTokens: number }[]> {
  const draw = (len: number): number => {
    const lo = Math.max(1, Math.floor(len * (1 - rangeRatio)));
    const hi = Math.max(lo, Math.ceil(len * (1 + rangeRatio)));
    return lo + Math.floor(rng.uniform() * (hi - lo + 1));
  };
  const lengths = Array.from({ length: numPrompts }, () => ({ input: draw(inputLen), output: draw(outputLen) }));
  const need = Math.max(...lengths.map((l) => l.input)) * 2 + 64;
  const words: string[] = [];
  for (let i = 0; i < need; i++) words.push(WORDS[Math.floor(rng.uniform() * WORDS.length)]);
  const pool = (await postJson<{ tokens: number[] }>('/tokenize', { prompt: words.join(' '), add_special_tokens: false })).tokens;
  const prompts = [];
  for (const l of lengths) {
    const start = Math.floor(rng.uniform() * (pool.length - l.input));
    const ids = pool.slice(start, start + l.input);
    const text = endpoint === 'chat' ? (await postJson<{ prompt: string }>('/detokenize', { tokens: ids })).prompt : '';
    prompts.push({ ids, text, maxTokens: l.output });
  }
  return prompts;
}

interface Outcome {
  ok: boolean;
  error?: string;
  ttft: number;
  e2e: number;
  itl: number[];
  inputTokens: number;
  outputTokens: number;
}

async function runOne(model: string, p: { ids: number[]; text: string; maxTokens: number }): Promise<Outcome> {
  const common = { model, max_tokens: p.maxTokens, ignore_eos: true, stream: true, stream_options: { include_usage: true } };
  const body =
    endpoint === 'chat' ? { ...common, messages: [{ role: 'user', content: p.text }] } : { ...common, prompt: p.ids };
  const out: Outcome = { ok: false, ttft: 0, e2e: 0, itl: [], inputTokens: 0, outputTokens: 0 };
  const start = performance.now();
  let last = start;
  try {
    const res = await request(`${baseUrl}/v1/${endpoint === 'chat' ? 'chat/completions' : 'completions'}`, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      dispatcher,
    });
    if (res.statusCode !== 200) {
      out.error = `${res.statusCode} ${await res.body.text()}`;
      return out;
    }
    let buffer = '';
    for await (const piece of res.body) {
      buffer += piece.toString();
      let cut: number;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
        const now = performance.now();
        const chunk = JSON.parse(event.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        const choice = chunk.choices?.[0];
        const content = endpoint === 'chat' ? choice?.delta?.content : choice?.text;
        if (content) {
          if (out.ttft === 0) out.ttft = now - start;
          else out.itl.push(now - last);
          last = now;
        }
        if (chunk.usage) {
          out.inputTokens = chunk.usage.prompt_tokens;
          out.outputTokens = chunk.usage.completion_tokens;
        }
      }
    }
    out.e2e = last - start;
    out.ok = true;
  } catch (err) {
    out.error = err instanceof Error ? err.message : String(err);
  }
  return out;
}

/** numpy.percentile's default (linear interpolation between closest ranks). */
function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const rank = (p / 100) * (s.length - 1);
  const lo = Math.floor(rank);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (rank - lo);
}
const mean = (xs: number[]): number => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);
const std = (xs: number[]): number => Math.sqrt(mean(xs.map((x) => (x - mean(xs)) ** 2)));

/** A Tandem server's engine steps so far by kind (count, seconds), from /metrics; empty for other servers. */
async function stepsByKind(): Promise<Map<string, { count: number; seconds: number }>> {
  const byKind = new Map<string, { count: number; seconds: number }>();
  const text = await request(`${baseUrl}/metrics`, { dispatcher, headers })
    .then((res) => (res.statusCode === 200 ? res.body.text() : res.body.dump().then(() => '')))
    .catch(() => '');
  for (const line of text.split('\n')) {
    const m = /^tandem_engine_step_seconds_(count|sum)\{[^}]*kind="([a-z]+)"[^}]*\} (\S+)$/.exec(line);
    if (!m) continue;
    const entry = byKind.get(m[2]) ?? { count: 0, seconds: 0 };
    if (m[1] === 'count') entry.count += Number(m[3]);
    else entry.seconds += Number(m[3]);
    byKind.set(m[2], entry);
  }
  return byKind;
}

async function main(): Promise<void> {
  const model = await servedModel();
  const prompts = await makePrompts();
  const warm = await runOne(model, { ...prompts[0], maxTokens: Math.min(prompts[0].maxTokens, 4) });
  if (!warm.ok) throw new Error(`warm-up request failed: ${warm.error}`);

  const outcomes: Outcome[] = new Array(prompts.length);
  let next = 0;
  let arrival = performance.now();
  const stepsBefore = await stepsByKind();
  const started = performance.now();
  // `concurrency` workers take prompts in order; with a request rate, each waits for its
  // prompt's Poisson arrival time first (vLLM's --request-rate with --max-concurrency).
  const worker = async (): Promise<void> => {
    while (next < prompts.length) {
      const i = next++;
      if (Number.isFinite(requestRate) && requestRate > 0) {
        arrival += (-Math.log(1 - rng.uniform()) / requestRate) * 1000;
        const wait = arrival - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      outcomes[i] = await runOne(model, prompts[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, prompts.length) }, worker));
  const duration = (performance.now() - started) / 1000;
  const stepsAfter = await stepsByKind();

  const done = outcomes.filter((o) => o.ok);
  const failed = outcomes.filter((o) => !o.ok);
  const totalIn = done.reduce((a, o) => a + o.inputTokens, 0);
  const totalOut = done.reduce((a, o) => a + o.outputTokens, 0);
  const ttft = done.map((o) => o.ttft);
  const tpot = done.filter((o) => o.outputTokens > 1).map((o) => (o.e2e - o.ttft) / (o.outputTokens - 1));
  const itl = done.flatMap((o) => o.itl);
  const e2el = done.map((o) => o.e2e);
  const r = (x: number, digits = 2): number => Number(x.toFixed(digits));
  const results: { name: string; value: number; unit: string }[] = [
    { name: 'completed', value: done.length, unit: 'requests' },
    { name: 'failed', value: failed.length, unit: 'requests' },
    { name: 'duration', value: r(duration, 3), unit: 's' },
    { name: 'total_input_tokens', value: totalIn, unit: 'tokens' },
    { name: 'total_output_tokens', value: totalOut, unit: 'tokens' },
    { name: 'request_throughput', value: r(done.length / duration, 3), unit: 'requests/s' },
    { name: 'output_throughput', value: r(totalOut / duration), unit: 'tokens/s' },
    { name: 'total_token_throughput', value: r((totalIn + totalOut) / duration), unit: 'tokens/s' },
  ];
  for (const [metric, xs] of [['ttft', ttft], ['tpot', tpot], ['itl', itl], ['e2el', e2el]] as const) {
    results.push(
      { name: `mean_${metric}_ms`, value: r(mean(xs)), unit: 'ms' },
      { name: `median_${metric}_ms`, value: r(percentile(xs, 50)), unit: 'ms' },
      { name: `std_${metric}_ms`, value: r(std(xs)), unit: 'ms' },
      { name: `p99_${metric}_ms`, value: r(percentile(xs, 99)), unit: 'ms' },
    );
  }

  // Where the server's time went (Tandem only): its engine steps during the run, by kind.
  for (const [kind, after] of stepsAfter) {
    const before = stepsBefore.get(kind) ?? { count: 0, seconds: 0 };
    const count = after.count - before.count;
    if (count <= 0) continue;
    results.push(
      { name: `engine_steps_${kind}`, value: count, unit: 'steps' },
      { name: `engine_step_mean_ms_${kind}`, value: r(((after.seconds - before.seconds) / count) * 1000, 3), unit: 'ms' },
    );
  }

  const health = await request(`${baseUrl}/health`, { dispatcher }).then((res) => res.body.json() as Promise<{ backend?: string }>).catch(() => ({}) as { backend?: string });
  const doc = {
    card: v.card ?? `${cpus()[0]?.model ?? 'unknown CPU'} (${cpus().length} cores; server backend ${health.backend ?? 'unknown'})`,
    date: new Date().toISOString().slice(0, 10),
    command: `node --import tsx bench/serve.ts ${process.argv.slice(2).join(' ')}`.trim(),
    model,
    endpoint,
    config: { concurrency, num_prompts: numPrompts, input_len: inputLen, output_len: outputLen, random_range_ratio: rangeRatio, request_rate: requestRate },
    results,
  };
  if (v.out) writeFileSync(v.out, JSON.stringify(doc, null, 2) + '\n');

  const rows = results.map((x) => [x.name, String(x.value), x.unit]);
  const width = [0, 1, 2].map((c) => Math.max(...rows.map((row) => row[c].length)));
  process.stdout.write(`${doc.card}\n${baseUrl} ${endpoint}, model ${model}, concurrency ${concurrency}, ${numPrompts} prompts\n`);
  for (const row of rows) process.stdout.write(`  ${row[0].padEnd(width[0])}  ${row[1].padStart(width[1])}  ${row[2]}\n`);
  if (failed.length > 0) process.stdout.write(`first failure: ${failed[0].error}\n`);
  await dispatcher.close();
  if (done.length === 0) process.exitCode = 1;
}

await main();
