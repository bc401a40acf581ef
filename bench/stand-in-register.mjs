// `node --import tsx --import ./bench/stand-in-register.mjs worker/main.ts` runs the real worker
// with bench/stand-in-pipeline.ts in place of worker/pipeline/index: nothing else is swapped.
import { register } from 'node:module';

register('./stand-in-resolve.mjs', import.meta.url);
