// Module resolve hook (runs in Node's hooks thread): any import of worker/pipeline/index, from
// TypeScript sources or compiled JavaScript, resolves to the benchmark's stand-in pipeline.
const standIn = new URL('./stand-in-pipeline.ts', import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  const resolved = await nextResolve(specifier, context);
  if (/\/worker\/pipeline\/index\.(ts|js)$/.test(resolved.url)) return { ...resolved, url: standIn, format: 'module' };
  return resolved;
}
