import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * `npm run build`: compiles the services to JavaScript in dist/ (tsconfig.build.json), then copies
 * beside the compiled modules the files they read at run time relative to themselves, so dist/
 * holds the same layout as the sources: `node dist/api/main.js` finds api/public/, the worker its
 * kernels.wasm, the tiny-model writer the CLIP tokenizer, and the pages the package version.
 *   npm run build [-- --out-dir DIR]
 */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Files the compiled code reads through paths relative to its own module (import.meta.url). */
export const RUNTIME_ASSETS = ['api/public', 'worker/pipeline/kernels/kernels.wasm', 'assets/clip-tokenizer'] as const;

export function build(outDir: string): void {
  fs.rmSync(outDir, { recursive: true, force: true });
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', outDir], { cwd: ROOT, stdio: 'inherit' });
  for (const asset of RUNTIME_ASSETS) fs.cpSync(path.join(ROOT, asset), path.join(outDir, asset), { recursive: true });
  // api/routes/pages.ts reads ../../package.json for the version; "type": "module" also keeps
  // dist/ ES modules wherever it is copied.
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };
  fs.writeFileSync(path.join(outDir, 'package.json'), `${JSON.stringify({ name: pkg.name, version: pkg.version, private: true, type: 'module' }, null, 2)}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const flag = process.argv.indexOf('--out-dir');
  const outDir = path.resolve(flag >= 0 && process.argv[flag + 1] ? process.argv[flag + 1] as string : path.join(ROOT, 'dist'));
  const started = Date.now();
  try {
    build(outDir);
  } catch {
    // tsc has printed the errors.
    process.stderr.write('build failed\n');
    process.exit(1);
  }
  process.stdout.write(`built ${path.relative(process.cwd(), outDir) || outDir} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
}
