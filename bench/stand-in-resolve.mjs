// Module resolve hook (runs in Node's hooks thread): any import of worker/pipeline/index, from
// TypeScript sources or compiled JavaScript, resolves to the benchmark's stand-in pipeline: the
// compiled one beside this file when there is one (bench:system's build), else the TypeScript.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const compiled = new URL('./stand-in-pipeline.js', import.meta.url);
const standIn = existsSync(fileURLToPath(compiled)) ? compiled.href : new URL('./stand-in-pipeline.ts', import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  if (/\/worker\/pipeline\/index\.(ts|js)$/.test(resolved.url)) return { ...resolved, url: standIn, format: 'module' };
  return resolved;
}
