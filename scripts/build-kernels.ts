/**
 * Compiles worker/pipeline/kernels/kernels.wat to kernels.wasm beside it (`npm run build:kernels`).
 * The binary is committed so that installs need no compiler; test/kernels.test.ts checks it
 * matches the source.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import wabtInit from 'wabt';

export const KERNELS_WAT = fileURLToPath(new URL('../worker/pipeline/kernels/kernels.wat', import.meta.url));
export const KERNELS_WASM = fileURLToPath(new URL('../worker/pipeline/kernels/kernels.wasm', import.meta.url));

/** The WebAssembly binary of `source` (WAT with SIMD). */
export async function compileKernels(source: string): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const module = wabt.parseWat('kernels.wat', source, { simd: true });
  try {
    module.validate();
    return module.toBinary({ log: false, write_debug_names: false }).buffer;
  } finally {
    module.destroy();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const binary = await compileKernels(await readFile(KERNELS_WAT, 'utf8'));
  await writeFile(KERNELS_WASM, binary);
  console.log(`wrote ${KERNELS_WASM} (${binary.byteLength} bytes)`);
}
