import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Metrics } from '../../src/metrics.ts';
import { metricSum } from '../metrics-text.ts';
import { collect, makeEngine, randomPrompt, request, tinyModel, type TinyModel } from './helpers.ts';

/** The value of one sample line, e.g. `tandem_kv_cache_blocks_total 64`. */
function sample(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  assert.ok(line, `no ${series} in the exposition`);
  return Number(line.slice(series.length + 1));
}

describe('metrics', () => {
  let m: TinyModel;
  before(() => {
    m = tinyModel(2);
  });
  after(() => m.dispose());

  it('exports engine, token, latency and memory metrics per engine, each in its own registry', async () => {
    const metrics = new Metrics(); // with process metrics
    const engine = makeEngine(m.loaded, { metrics, blockSize: 4, numBlocks: 64 });
    const other = makeEngine(m.loaded); // a second engine registers the same names without clashing
    const prompt = randomPrompt(12, 3);
    await Promise.all([1, 2].map(() => collect(engine.add(request(prompt, { maxTokens: 5 })))));
    const stopped = engine.add(request(prompt, { maxTokens: 50 }));
    for await (const _ of stopped) break;

    assert.match(metrics.contentType, /^text\/plain/);
    const text = await metrics.metricsText();
    assert.equal(sample(text, 'tandem_kv_cache_blocks_total'), 64);
    assert.equal(sample(text, 'tandem_kv_cache_blocks_used'), 0);
    assert.equal(sample(text, 'tandem_requests_running'), 0);
    assert.equal(sample(text, 'tandem_requests_finished_total{finish_reason="length"}'), 2);
    assert.equal(sample(text, 'tandem_requests_finished_total{finish_reason="abort"}'), 1);
    assert.equal(sample(text, 'tandem_prompt_tokens_total'), 36);
    assert.equal(sample(text, 'tandem_generation_tokens_total'), 11);
    assert.equal(sample(text, 'tandem_time_to_first_token_seconds_count'), 3);
    assert.equal(sample(text, 'tandem_inter_token_latency_seconds_count'), 8);
    assert.equal(sample(text, 'tandem_e2e_request_latency_seconds_count'), 3);
    assert.equal(sample(text, 'tandem_request_queue_time_seconds_count'), 3);
    assert.equal(sample(text, 'tandem_request_generation_tokens_sum'), 11);
    assert.equal(sample(text, 'tandem_prefix_cache_queries_tokens_total'), 36);
    // Identical prompts added together: the second waits a step and finds 2 full blocks of 4.
    assert.equal(sample(text, 'tandem_prefix_cache_hits_tokens_total'), 16);
    assert.ok(sample(text, 'tandem_backend_memory_bytes{category="kv_cache"}') > 0);
    assert.ok(sample(text, 'tandem_backend_memory_bytes{category="weights"}') > 0);
    assert.ok(sample(text, 'tandem_process_resident_memory_bytes') > 0);
    // Steps by kind (no graphs on the cpu backend): the prompts' chunks, then one-token decodes.
    // The second identical prompt, a step behind the first, runs its chunk beside the first's decode.
    const steps = (kind: string): number => sample(text, `tandem_engine_step_seconds_count{kind="${kind}"}`);
    assert.ok(steps('prefill') >= 1, `prefill steps ${steps('prefill')}`);
    assert.ok(steps('mixed') >= 1, `mixed steps ${steps('mixed')}`);
    assert.ok(steps('decode') >= 3, `decode steps ${steps('decode')}`);
    assert.ok(!text.includes('tandem_engine_step_seconds_count{kind="graph"}'), 'no graph steps without cudaGraphs');
    assert.equal(metricSum(text, 'tandem_engine_step_seconds_count'), steps('prefill') + steps('mixed') + steps('decode'));

    const otherText = await other.metrics.metricsText();
    assert.equal(sample(otherText, 'tandem_generation_tokens_total'), 0);
    assert.ok(!otherText.includes('tandem_process_resident_memory_bytes'), 'process metrics are optional');
    await engine.close();
    await other.close();
  });
});
