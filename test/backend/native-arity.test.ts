/**
 * The Node-API binding checks each call's argument count (kernels/binding.h's Args throws on a
 * mismatch), but only on a machine with a GPU. This reads both sides as text so CI catches a
 * NativeCuda signature (src/backend/cuda/native.ts) that no longer matches its binding: each
 * `Args a(env, info, N, "name")` against the TS method's parameters (a rest parameter must leave
 * room for the fixed ones).
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const root = join(import.meta.dirname, '..', '..');

/** name -> argument count, from every binding*.cpp. */
function bindingArities(): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of readdirSync(join(root, 'kernels')).filter((n) => /^binding.*\.cpp$/.test(n))) {
    const text = readFileSync(join(root, 'kernels', f), 'utf8');
    for (const m of text.matchAll(/Args a\(env, info, (\d+), "([A-Za-z0-9]+)"\)/g)) out.set(m[2], Number(m[1]));
  }
  return out;
}

/** name -> { fixed parameters, whether a rest parameter follows }, from the NativeCuda interface. */
function tsSignatures(): Map<string, { fixed: number; rest: boolean }> {
  const text = readFileSync(join(root, 'src', 'backend', 'cuda', 'native.ts'), 'utf8');
  const start = text.indexOf('export interface NativeCuda {');
  assert.ok(start >= 0, 'native.ts declares NativeCuda');
  const body = text.slice(start, text.indexOf('\n}', start));
  const out = new Map<string, { fixed: number; rest: boolean }>();
  for (const m of body.matchAll(/^ {2}([a-zA-Z0-9]+)\(/gm)) {
    // The parameter list: up to the matching parenthesis.
    let depth = 0;
    let i = m.index! + m[0].length - 1;
    const open = i;
    for (; i < body.length; i++) {
      if (body[i] === '(') depth++;
      else if (body[i] === ')' && --depth === 0) break;
    }
    const params = body
      .slice(open + 1, i)
      .replace(/\/\*[\s\S]*?\*\//g, '')
      .split(',')
      .map((p) => p.trim())
      .filter((p) => p !== '');
    const rest = params.some((p) => p.startsWith('...'));
    out.set(m[1], { fixed: params.filter((p) => !p.startsWith('...')).length, rest });
  }
  return out;
}

describe('native binding arity', () => {
  const cpp = bindingArities();
  const ts = tsSignatures();

  it('finds both sides', () => {
    assert.ok(cpp.size >= 40, `${cpp.size} bindings read`);
    assert.ok(ts.size >= 40, `${ts.size} NativeCuda methods read`);
  });

  it('every binding that counts its arguments is declared in NativeCuda with that many', () => {
    const wrong: string[] = [];
    for (const [name, n] of cpp) {
      const sig = ts.get(name);
      if (sig === undefined) {
        wrong.push(`${name}: bound with ${n} arguments, missing from NativeCuda`);
      } else if (sig.rest ? sig.fixed > n : sig.fixed !== n) {
        wrong.push(`${name}: the binding takes ${n} arguments, NativeCuda declares ${sig.fixed}${sig.rest ? ' + rest' : ''}`);
      }
    }
    assert.deepEqual(wrong, []);
  });
});
