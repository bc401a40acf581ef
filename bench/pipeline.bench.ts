/**
 * Where a generation's time goes on the tiny model, per execution provider: per-image
 * milliseconds for each stage and the JavaScript overhead around ONNX Runtime. A benchmark, not
 * a test: no assertions.
 *
 *   npm run bench:pipeline            # sizes 64, 256, 512; cpu, webgpu (where an adapter exists), cuda (where installed)
 *   BENCH_PROVIDERS=cpu,webgpu BENCH_SIZES=512 BENCH_STEPS=20 BENCH_WARMUP=5 BENCH_RUNS=10 BENCH_SCHEDULER=euler_a npm run bench:pipeline
 *   BENCH_CPU_SPIN=1 npm run bench:pipeline   # ONNX Runtime's threads spinning (workers: WORKER_CPU_SPIN)
 *   BENCH_THREADS=1 npm run bench:pipeline    # ONNX Runtime's intra-op threads (workers: WORKER_CPU_THREADS)
 *   BENCH_WEBGPU_LAYOUT=NCHW npm run bench:pipeline  # the WebGPU provider's layout (workers: WORKER_WEBGPU_LAYOUT)
 *
 * A provider that cannot start here is listed with the reason instead of figures. The warm-up
 * runs absorb WebGPU's shader compilation (tens of seconds on the software lavapipe, once per
 * machine: Mesa caches the shaders on disk).
 *
 * JS overhead = generate's total − time inside ONNX Runtime (text encoder + UNet + VAE runs):
 * tokenizing, initial noise, tensor marshalling and float16 conversion, scheduler math,
 * guidance, postprocessing. It splits into the denoising loop's share, reported per step
 * (loop wall time − UNet time, over the steps) to set against a real UNet's step time, and
 * the rest, paid once per image.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { writeTinyModel } from '../scripts/tiny-model/index.js';
import {
  cudaProviderInstalled,
  describeWebGpuAdapter,
  loadPipeline,
  webgpuProviderBundled,
  type ExecutionProvider,
  type GenerateRequest,
  type StageTimings,
  type WebGpuLayout,
} from '../worker/pipeline/index.js';

const SIZES = (process.env['BENCH_SIZES'] ?? '64,256,512').split(',').map(Number);
const STEPS = Number(process.env['BENCH_STEPS'] ?? 10);
const WARMUP = Number(process.env['BENCH_WARMUP'] ?? 5);
const RUNS = Number(process.env['BENCH_RUNS'] ?? 10);
const SCHEDULER = process.env['BENCH_SCHEDULER'];
const WEBGPU_LAYOUT = process.env['BENCH_WEBGPU_LAYOUT'] as WebGpuLayout | undefined;
/** A real SD 1.x UNet step (512 px, batch 2 for guidance) on a GPU takes about this long: for scale. */
const REAL_UNET_STEP_MS = [30, 100] as const;

interface Sample extends StageTimings {
  png: number;
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

/** BENCH_PROVIDERS, else every provider this machine may have: the CPU, WebGPU where bundled, CUDA where installed. */
function providers(): ExecutionProvider[] {
  const listed = process.env['BENCH_PROVIDERS'];
  if (listed) return listed.split(',').map((p) => p.trim() as ExecutionProvider);
  return ['cpu', ...(webgpuProviderBundled() ? (['webgpu'] as const) : []), ...(cudaProviderInstalled() ? (['cuda'] as const) : [])];
}

/** What the provider runs on, for the table's heading. */
async function deviceOf(provider: ExecutionProvider): Promise<string> {
  if (provider === 'cpu') return `${cpus().length} cores, ${cpus()[0]?.model ?? 'unknown'}`;
  if (provider === 'cuda') return `CUDA device ${process.env['CUDA_VISIBLE_DEVICES'] ?? 0}`;
  const described = await describeWebGpuAdapter();
  const layout = WEBGPU_LAYOUT ?? 'NHWC';
  return described.adapter
    ? `${described.adapter.vendor} ${described.adapter.device} (${described.adapter.type}, ${described.adapter.backend}, ${described.adapter.driver ?? 'driver ?'}), layout ${layout}`
    : `adapter unknown: ${described.reason}, layout ${layout}`;
}

async function benchProvider(dir: string, provider: ExecutionProvider): Promise<{ rows: string[][]; perStep: string[] }> {
  const pipeline = await loadPipeline(dir, {
    provider,
    cpuSpinning: process.env['BENCH_CPU_SPIN'] === '1',
    ...(process.env['BENCH_THREADS'] ? { cpuThreads: Number(process.env['BENCH_THREADS']) } : {}),
    ...(WEBGPU_LAYOUT ? { webgpuLayout: WEBGPU_LAYOUT } : {}),
  });
  const rows: string[][] = [];
  const perStep: string[] = [];
  try {
    for (const size of SIZES) {
      const request: GenerateRequest = {
        prompt: 'a photograph of an astronaut riding a horse on mars',
        width: size,
        height: size,
        numInferenceSteps: STEPS,
        guidanceScale: 7.5,
        seed: 1234,
        numImages: 1,
        ...(SCHEDULER ? { scheduler: SCHEDULER } : {}),
      };
      const samples: Sample[] = [];
      let steps = 0;
      for (let run = 0; run < WARMUP + RUNS; run++) {
        let runSteps = 0;
        const { images, timings } = await pipeline.generate(
          { ...request, seed: request.seed + run },
          { onStep: () => (runSteps += 1) },
        );
        steps = runSteps; // PNDM's PLMS warm-up visits one timestep twice: count UNet steps
        const image = images[0]!;
        const pngStart = performance.now();
        await sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), {
          raw: { width: image.width, height: image.height, channels: 3 },
        })
          .png()
          .toBuffer();
        const png = performance.now() - pngStart;
        if (run >= WARMUP) samples.push({ ...timings, png });
      }
      const m = (key: keyof Sample) => median(samples.map((s) => s[key]));
      const onnx = median(samples.map((s) => s.textEncoder + s.unet + s.vae));
      const overhead = median(samples.map((s) => s.total - s.textEncoder - s.unet - s.vae));
      const loopPerStep = median(samples.map((s) => (s.denoise - s.unet) / steps));
      const outsideLoop = median(samples.map((s) => s.total - s.denoise - s.textEncoder - s.vae));
      rows.push([
        provider,
        `${size}×${size}`,
        ...(['tokenize', 'textEncoder', 'unet', 'scheduler', 'vae', 'png', 'total'] as const).map((k) => m(k).toFixed(2)),
        onnx.toFixed(2),
        overhead.toFixed(2),
        `${((overhead / onnx) * 100).toFixed(1)}%`,
        (m('unet') / steps).toFixed(2),
        (loopPerStep * 1000).toFixed(0),
        outsideLoop.toFixed(2),
      ]);
      perStep.push(`${provider} ${size}×${size}: ${(loopPerStep * 1000).toFixed(0)} µs/step = ` +
        REAL_UNET_STEP_MS.map((ms) => `${((loopPerStep / ms) * 100).toFixed(2)}%`).join('–'));
    }
  } finally {
    await pipeline.release();
  }
  return { rows, perStep };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sd-bench-'));
  try {
    await writeTinyModel(dir);
    const rows: string[][] = [];
    const perStep: string[] = [];
    const devices: string[] = [];
    for (const provider of providers()) {
      try {
        const result = await benchProvider(dir, provider);
        rows.push(...result.rows);
        perStep.push(...result.perStep);
        devices.push(`${provider}: ${await deviceOf(provider)}`);
      } catch (err) {
        devices.push(`${provider}: unavailable (${(err as Error).message.split('\n')[0]})`);
      }
    }

    const header = [
      'provider',
      'size',
      'tokenize',
      'text enc',
      `unet (${STEPS} steps)`,
      'scheduler',
      'vae',
      'png',
      'total',
      'in ORT',
      'JS overhead',
      'overhead/ORT',
      'unet ms/step',
      'loop JS µs/step',
      'JS outside loop',
    ];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (cells: string[]) => `| ${cells.map((c, i) => c.padStart(widths[i]!)).join(' | ')} |`;
    console.log(
      `Tiny model, ${STEPS} steps, ${SCHEDULER ?? 'the model\'s scheduler'}, guidance 7.5 (batch 2), ORT CPU thread spinning ` +
        `${process.env['BENCH_CPU_SPIN'] === '1' ? 'on' : 'off'}, median of ${RUNS} runs after ${WARMUP} warm-up (each column its own median); ` +
        'ms per image unless marked; total = generate() without PNG.',
    );
    for (const device of devices) console.log(`  ${device}`);
    console.log(line(header));
    console.log(`| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`);
    for (const row of rows) console.log(line(row));
    console.log(
      `Loop JS per step against a real SD UNet step of ${REAL_UNET_STEP_MS.join('–')} ms (GPU): ${perStep.join('; ')}.`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
