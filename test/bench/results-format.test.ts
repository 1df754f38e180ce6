/**
 * bench/results/ is checked by a script (issue 5): every file there (besides the README) is JSON
 * of the form {"card", "date", "command", "results": [{"name", "value", "unit", "floor"?,
 * "peer"?}]}, and every file is listed in the README's table, with no listed file missing.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const DIR = join(import.meta.dirname, '..', '..', 'bench', 'results');
const files = readdirSync(DIR).filter((f) => f !== 'README.md').sort();
const readme = readFileSync(join(DIR, 'README.md'), 'utf8');

describe('bench/results', () => {
  it('holds results files', () => assert.ok(files.length >= 10, `only ${files.length} files`));

  for (const file of files) {
    it(`${file} is a results document`, () => {
      assert.ok(file.endsWith('.json'), `${file}: results files are JSON`);
      const doc = JSON.parse(readFileSync(join(DIR, file), 'utf8')) as Record<string, unknown>;
      for (const key of ['card', 'command']) {
        assert.ok(typeof doc[key] === 'string' && (doc[key] as string).trim() !== '', `${file}: "${key}" must be a non-empty string`);
      }
      assert.match(String(doc.date), /^20\d\d-\d\d-\d\d$/, `${file}: "date" must be YYYY-MM-DD`);
      assert.ok(Array.isArray(doc.results) && doc.results.length > 0, `${file}: "results" must be a non-empty list`);
      const names = new Set<string>();
      for (const r of doc.results as Record<string, unknown>[]) {
        const where = `${file}: result ${JSON.stringify(r.name)}`;
        assert.ok(typeof r.name === 'string' && r.name !== '', `${where}: "name" must be a non-empty string`);
        assert.ok(!names.has(r.name as string), `${where}: names must be unique`);
        names.add(r.name as string);
        assert.ok(typeof r.value === 'number' && Number.isFinite(r.value), `${where}: "value" must be a finite number`);
        assert.ok(typeof r.unit === 'string' && r.unit !== '', `${where}: "unit" must be a non-empty string`);
        for (const opt of ['floor', 'peer']) {
          if (r[opt] !== undefined) assert.ok(typeof r[opt] === 'number' && Number.isFinite(r[opt]) && (r[opt] as number) > 0, `${where}: "${opt}" must be a positive number`);
        }
      }
    });
  }

  it('lists every file in its README table, and lists no file that is missing', () => {
    const listed = new Set([...readme.matchAll(/`([a-z0-9.-]+\.[a-z]+)`/g)].map((m) => m[1]).filter((f) => !f.includes('/') && f !== 'README.md'));
    for (const file of files) assert.ok(listed.has(file), `${file} is not in bench/results/README.md`);
    for (const name of listed) {
      if (/\.(json|txt)$/.test(name)) assert.ok(files.includes(name), `bench/results/README.md names ${name}, which is not there`);
    }
  });
});
