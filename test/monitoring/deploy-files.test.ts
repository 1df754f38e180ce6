/**
 * The deployment files agree with each other and with the repository, checked without Docker
 * (CI has no daemon): what docker-compose.yml mounts exists, Grafana's provisioning points where
 * compose mounts the dashboards, Prometheus scrapes the compose service Tandem runs as with the
 * model label the dashboard filters on, and the Dockerfile builds on CUDA 13, runs as a non-root
 * user with a /health check. promtool (Debian's prometheus package) checks prometheus.yml where
 * it is installed.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './dashboard.ts';

const read = (file: string): string => readFileSync(join(ROOT, file), 'utf8');
const compose = read('docker-compose.yml');
const dockerfile = read('Dockerfile');

/** The text of one top-level service of docker-compose.yml (up to the next service or section). */
function service(name: string): string {
  const m = new RegExp(`^  ${name}:\\n((?:    .*\\n|\\s*\\n)*)`, 'm').exec(compose);
  assert.ok(m, `docker-compose.yml has no service '${name}'`);
  return m[1];
}

/** `- HOST:CONTAINER[:ro]` volume lines of a service whose host side is a path in the repository. */
function bindMounts(svc: string): { host: string; target: string }[] {
  return [...svc.matchAll(/^\s*- (\.\/[^:\s]+):([^:\s]+)(?::ro)?$/gm)].map((m) => ({ host: m[1], target: m[2] }));
}

describe('docker-compose.yml, grafana/ and prometheus.yml', () => {
  it('mounts only files that exist, and Grafana loads the dashboards from where they are mounted', () => {
    const mounts = ['tandem', 'prometheus', 'grafana'].flatMap((s) => bindMounts(service(s)));
    assert.ok(mounts.length >= 3, JSON.stringify(mounts));
    for (const m of mounts) assert.ok(existsSync(join(ROOT, m.host)), `${m.host} is mounted but does not exist`);
    const grafana = bindMounts(service('grafana'));
    const dashboards = grafana.find((m) => m.host === './grafana/dashboards');
    assert.ok(dashboards, 'grafana mounts ./grafana/dashboards');
    assert.ok(grafana.some((m) => m.host === './grafana/provisioning' && m.target === '/etc/grafana/provisioning'));
    const provider = read('grafana/provisioning/dashboards/tandem.yml');
    assert.equal(/^\s*path: (\S+)$/m.exec(provider)?.[1], dashboards.target, 'the dashboard provider reads the mounted folder');
    assert.match(service('grafana'), new RegExp(`HOME_DASHBOARD_PATH=${dashboards.target}/tandem\\.json`));
    assert.ok(bindMounts(service('prometheus')).some((m) => m.host === './grafana/prometheus.yml' && m.target === '/etc/prometheus/prometheus.yml'));
  });

  it('Grafana reaches Prometheus and Prometheus reaches Tandem by their compose service names', () => {
    const url = /^\s*url: http:\/\/([\w-]+):(\d+)$/m.exec(read('grafana/provisioning/datasources/prometheus.yml'));
    assert.ok(url, 'datasource url');
    assert.equal(url[1], 'prometheus');
    assert.match(service('prometheus'), new RegExp(`:${url[2]}"$`, 'm'), 'prometheus publishes the port Grafana uses');
    const prom = read('grafana/prometheus.yml');
    const target = /targets: \['([\w-]+):(\d+)'\]/.exec(prom);
    assert.ok(target, 'scrape target');
    assert.equal(target[1], 'tandem');
    assert.match(service('tandem'), new RegExp(`:${target[2]}"$`, 'm'), 'tandem listens on the scraped port');
    assert.match(dockerfile, new RegExp(`TANDEM_PORT=${target[2]}\\b`));
  });

  it("labels the scraped Tandem with the model compose serves by default (the dashboard's model variable)", () => {
    const label = /^\s*model: (\S+)$/m.exec(read('grafana/prometheus.yml'))?.[1];
    const served = /TANDEM_MODEL=\/models\/\$\{TANDEM_MODEL_NAME:-([^}]+)\}/.exec(service('tandem'))?.[1];
    assert.ok(label && served, `label ${label}, served ${served}`);
    assert.equal(label, served);
    assert.ok(existsSync(join(ROOT, 'models', served, 'config.json')), `models/${served} is the default model folder`);
  });

  it('reserves one NVIDIA GPU for tandem', () => {
    assert.match(service('tandem'), /reservations:\s*\n\s*devices:\s*\n\s*- driver: nvidia\s*\n\s*count: 1\s*\n\s*capabilities: \[gpu\]/);
  });

  it('promtool accepts grafana/prometheus.yml', { skip: spawnSync('promtool', ['--version']).error ? 'promtool not installed (apt-get install prometheus)' : false }, () => {
    const r = spawnSync('promtool', ['check', 'config', join(ROOT, 'grafana/prometheus.yml')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout + r.stderr);
  });
});

describe('Dockerfile', () => {
  it('builds on CUDA 13 devel, runs on CUDA 13 runtime, with Node 20 and the release archs', () => {
    assert.match(dockerfile, /^ARG CUDA_VERSION=13\.\d+\.\d+$/m);
    assert.match(dockerfile, /^FROM nvidia\/cuda:\$\{CUDA_VERSION\}-devel-ubuntu\$\{UBUNTU_VERSION\} AS build$/m);
    assert.match(dockerfile, /^FROM nvidia\/cuda:\$\{CUDA_VERSION\}-runtime-ubuntu\$\{UBUNTU_VERSION\}$/m);
    assert.match(dockerfile, /^FROM node:20[\w.-]* AS node$/m);
    assert.match(dockerfile, /TANDEM_CUDA_ARCHS="90 89 80"/);
    assert.match(dockerfile, /bash kernels\/build\.sh/);
  });

  it('runs as a non-root user, checks /health, keeps models in a volume and serves on all interfaces', () => {
    const users = [...dockerfile.matchAll(/^USER (\S+)$/gm)].map((m) => m[1]);
    assert.ok(users.length > 0 && !['root', '0'].includes(users.at(-1)!), `USER ${users.at(-1)}`);
    assert.match(dockerfile, /^HEALTHCHECK .*\\\n\s+CMD .*\/health/m);
    assert.match(dockerfile, /^VOLUME \[.*"\/models".*\]$/m);
    assert.match(dockerfile, /^CMD \["serve", "--host", "0\.0\.0\.0"\]$/m);
  });

  it('copies only paths that exist and that .dockerignore lets into the build context', () => {
    const ignored = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1].split(/\s+/));
    assert.ok(sources.includes('src') && sources.includes('kernels'), sources.join(' '));
    for (const s of sources) {
      assert.ok(existsSync(join(ROOT, s)), `COPY ${s}: no such path`);
      assert.ok(!ignored.includes(s), `COPY ${s}, but .dockerignore leaves it out`);
    }
  });
});
