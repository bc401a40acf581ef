import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * STYLE.md point 1: api/, worker/, autoscaler/ (and notifier/) import shared/, never each other,
 * shared/ imports none of them, and no module cycle exists anywhere in the service code.
 */
const root = path.resolve(import.meta.dirname, '..');
const PROCESS_FOLDERS = ['api', 'worker', 'autoscaler', 'notifier'];
const SERVICE_FOLDERS = [...PROCESS_FOLDERS, 'shared'];

function sourceFiles(folder: string): string[] {
  const dir = path.join(root, folder);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => path.join(dir, f));
}

/** Relative imports of a file, resolved to .ts paths (NodeNext specifiers end in .js). */
function relativeImports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:import|export)\s[^'"]*?from\s+['"](\.[^'"]+)['"]|import\(\s*['"](\.[^'"]+)['"]\s*\)/g)].map(
    (m) => (m[1] ?? m[2]) as string,
  );
  return specs.map((spec) => path.resolve(path.dirname(file), spec.replace(/\.js$/, '.ts')));
}

const topFolder = (file: string) => path.relative(root, file).split(path.sep)[0] as string;

const files = SERVICE_FOLDERS.flatMap(sourceFiles);
const graph = new Map(files.map((f) => [f, relativeImports(f)]));

describe('module boundaries', () => {
  it('finds the service code it checks', () => {
    expect(files.some((f) => topFolder(f) === 'api')).toBe(true);
    expect(files.some((f) => topFolder(f) === 'worker')).toBe(true);
    expect(files.some((f) => topFolder(f) === 'shared')).toBe(true);
  });

  it('keeps process folders from importing each other, and shared/ from importing them', () => {
    const violations: string[] = [];
    for (const [file, imports] of graph) {
      const from = topFolder(file);
      for (const target of imports) {
        const to = topFolder(target);
        if (to === from || to === 'shared') continue;
        if (SERVICE_FOLDERS.includes(to) || to === 'scripts' || to === 'test') {
          violations.push(`${path.relative(root, file)} → ${path.relative(root, target)}`);
        }
      }
    }
    expect(violations).toEqual([]);
  });

  it('has no import cycles', () => {
    const cycles: string[] = [];
    const state = new Map<string, 'visiting' | 'done'>();
    const stack: string[] = [];
    const visit = (file: string) => {
      state.set(file, 'visiting');
      stack.push(file);
      for (const next of graph.get(file) ?? []) {
        if (!graph.has(next)) continue;
        if (state.get(next) === 'visiting') {
          cycles.push(stack.slice(stack.indexOf(next)).concat(next).map((f) => path.relative(root, f)).join(' → '));
        } else if (!state.has(next)) {
          visit(next);
        }
      }
      stack.pop();
      state.set(file, 'done');
    };
    for (const file of graph.keys()) if (!state.has(file)) visit(file);
    expect(cycles).toEqual([]);
  });
});
