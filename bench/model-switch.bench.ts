/**
 * What swapping a model costs against what a job costs: the measurement behind "one worker
 * process holds one model" (README, Models and routing). For each size it prints the time to load
 * the tiny model's pipeline (every ONNX session created, the files read) and the time of one
 * job on it, and how many jobs one load is worth. A benchmark, not a test: no assertions.
 *
 *   npm run bench:models
 *   BENCH_SIZES=512 BENCH_STEPS=25 BENCH_RUNS=5 BENCH_THREADS=1 npm run bench:models
 *
 * The tiny model's weights are a few hundred KB; a real SD 1.5 export reads about 2 GB (float16)
 * to 4 GB (float32) from disk into the device before its first step, so its load grows with the
 * weights while its step time grows with the UNet's work: the ratio printed here is a floor.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { writeTinyModel } from '../scripts/tiny-model/index.js';
import { loadPipeline } from '../worker/pipeline/index.js';

const SIZES = (process.env['BENCH_SIZES'] ?? '64,256,512').split(',').map(Number);
const STEPS = Number(process.env['BENCH_STEPS'] ?? 20);
const RUNS = Number(process.env['BENCH_RUNS'] ?? 5);
const THREADS = Number(process.env['BENCH_THREADS'] ?? 1);

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sdjobs-bench-models-'));
  try {
    // Two models, as npm start serves them: a swap loads the other one.
    const models = [path.join(dir, 'base'), path.join(dir, 'tuned')];
    await writeTinyModel(models[0]!, { seed: 42 });
    await writeTinyModel(models[1]!, { seed: 4242 });
    const loads: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const started = performance.now();
      const pipeline = await loadPipeline(models[i % 2]!, { cpuThreads: THREADS });
      loads.push(performance.now() - started);
      await pipeline.release();
    }
    const load = median(loads);
    process.stdout.write(`tiny model, CPU, ${THREADS} thread(s), ${STEPS} steps, median of ${RUNS}\n`);
    process.stdout.write(`load (sessions created, files read): ${load.toFixed(0)} ms\n`);
    process.stdout.write('size   job ms   jobs per load\n');
    const pipeline = await loadPipeline(models[0]!, { cpuThreads: THREADS });
    try {
      for (const size of SIZES) {
        const request = { prompt: 'photo of unqtkn dog having breakfast', negativePrompt: '', width: size, height: size, numInferenceSteps: STEPS, guidanceScale: 7.5, seed: 1, numImages: 1 };
        await pipeline.generate(request);
        const jobs: number[] = [];
        for (let i = 0; i < RUNS; i++) {
          const started = performance.now();
          await pipeline.generate(request);
          jobs.push(performance.now() - started);
        }
        const job = median(jobs);
        process.stdout.write(`${String(size).padStart(4)}   ${job.toFixed(0).padStart(6)}   ${(load / job).toFixed(2).padStart(13)}\n`);
      }
    } finally {
      await pipeline.release();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

void main();
