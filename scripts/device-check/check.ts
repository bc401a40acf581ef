/**
 * The device check's measuring half (scripts/device-check/run.sh runs it on a lent GPU machine;
 * `npx tsx scripts/device-check/check.ts` runs it here, on lavapipe): the Vulkan devices and the
 * adapter Dawn takes, whether WebGPU sessions start and run float16 shaders, and the tiny model's
 * timings per provider at 512 px with the same request and seed on each, images compared with the
 * CPU's. Prints a report; writes it as JSON too when DEVICE_CHECK_JSON names a file.
 *
 *   DEVICE_CHECK_SIZE=512 DEVICE_CHECK_STEPS=10 DEVICE_CHECK_WARMUP=2 DEVICE_CHECK_RUNS=5
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { writeTinyModel } from '../tiny-model/index.js';
import {
  cudaProviderInstalled,
  describeWebGpuAdapter,
  loadPipeline,
  vulkanSetup,
  webgpuProviderBundled,
  type ExecutionProvider,
  type GenerateRequest,
  type Pipeline,
  type RgbImage,
  type WebGpuLayout,
} from '../../worker/pipeline/index.js';
import { sessionOptionsFor } from '../../worker/pipeline/onnx-session.js';
import { FLOAT16_PROBE_MODEL, webgpuFloat16Unsupported } from '../../worker/pipeline/webgpu-device.js';

const SIZE = Number(process.env['DEVICE_CHECK_SIZE'] ?? 512);
const STEPS = Number(process.env['DEVICE_CHECK_STEPS'] ?? 10);
const WARMUP = Number(process.env['DEVICE_CHECK_WARMUP'] ?? 2);
const RUNS = Number(process.env['DEVICE_CHECK_RUNS'] ?? 5);

const report: Record<string, unknown> = {};
const say = (line: string) => console.log(line);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1] ?? NaN;
const ms = (value: number) => `${value.toFixed(value < 10 ? 2 : 1)} ms`;
const firstLine = (err: unknown) => (err instanceof Error ? err.message : String(err)).split('\n').find((l) => l.trim()) ?? '';

function maxAbsDiff(a: RgbImage, b: RgbImage): number {
  let max = 0;
  for (let i = 0; i < a.data.length; i++) max = Math.max(max, Math.abs(a.data[i]! - b.data[i]!));
  return max;
}

async function environment(): Promise<void> {
  const backends = ort.listSupportedBackends().map((b) => `${b.name}${b.bundled ? '' : ' (not bundled)'}`);
  report['environment'] = { node: process.version, onnxruntime: ort.env.versions.node, backends, cpu: `${cpus().length} × ${cpus()[0]?.model ?? '?'}`, cudaProviderInstalled: cudaProviderInstalled() };
  say(`== environment\nnode ${process.version}, onnxruntime-node ${ort.env.versions.node}; backends: ${backends.join(', ')}; CPU: ${cpus().length} × ${cpus()[0]?.model ?? '?'}`);
}

async function vulkan(): Promise<void> {
  const setup = vulkanSetup();
  const described = await describeWebGpuAdapter();
  report['vulkan'] = { setup, ...described };
  say('\n== Vulkan');
  say(`loader: ${setup.loader ?? 'not found'}`);
  say(`driver manifests: ${setup.drivers.map((d) => `${d.file} (Vulkan ${d.apiVersion ?? '?'})`).join(', ') || `none (searched ${setup.searched.join(', ')})`}`);
  if (described.adapter) {
    for (const d of described.devices) say(`device ${d.index}: ${d.vendor} ${d.name}, ${d.type}, driver ${d.driverInfo ?? d.driver ?? '?'}, Vulkan ${d.apiVersion ?? '?'}`);
    say(`adapter Dawn takes: ${described.adapter.vendor} ${described.adapter.device} (${described.adapter.source})`);
  } else {
    say(`devices: unknown (${described.reason})`);
  }
}

async function webgpuStarts(): Promise<boolean> {
  say('\n== WebGPU');
  if (!webgpuProviderBundled()) {
    say('no WebGPU provider in this onnxruntime-node build');
    report['webgpu'] = { starts: false, reason: 'not bundled' };
    return false;
  }
  const options = sessionOptionsFor('webgpu', {});
  try {
    const started = performance.now();
    const session = await ort.InferenceSession.create(FLOAT16_PROBE_MODEL, options);
    await session.release();
    const f16 = await webgpuFloat16Unsupported(options);
    report['webgpu'] = { starts: true, startMs: performance.now() - started, float16: f16 ?? 'yes' };
    say(`a session starts (${ms(performance.now() - started)}); float16 shaders: ${f16 === undefined ? 'yes' : `no (${f16})`}`);
    return true;
  } catch (err) {
    report['webgpu'] = { starts: false, reason: firstLine(err) };
    say(`no session: ${firstLine(err)}`);
    return false;
  }
}

interface Row {
  model: string;
  provider: string;
  loadMs: number;
  firstRunMs: number;
  textEncoderMs: number;
  unetMs: number;
  unetPerStepMs: number;
  vaeMs: number;
  totalMs: number;
  maxDiffVsCpu: number | null;
}

async function timeProvider(
  model: string,
  dir: string,
  provider: ExecutionProvider,
  layout: WebGpuLayout | undefined,
  request: GenerateRequest,
  reference: RgbImage | undefined,
): Promise<{ row: Row; image: RgbImage }> {
  let started = performance.now();
  const pipeline: Pipeline = await loadPipeline(dir, { provider, ...(layout ? { webgpuLayout: layout } : {}) });
  const loadMs = performance.now() - started;
  try {
    started = performance.now();
    const first = await pipeline.generate(request);
    const firstRunMs = performance.now() - started;
    for (let i = 1; i < WARMUP; i++) await pipeline.generate(request);
    const runs: Array<Awaited<ReturnType<Pipeline['generate']>>['timings']> = [];
    for (let i = 0; i < RUNS; i++) runs.push((await pipeline.generate(request)).timings);
    const pick = (key: 'textEncoder' | 'unet' | 'vae' | 'total') => median(runs.map((t) => t[key]));
    const image = first.images[0]!;
    return {
      image,
      row: {
        model,
        provider: layout ? `${provider} ${layout}` : provider,
        loadMs,
        firstRunMs,
        textEncoderMs: pick('textEncoder'),
        unetMs: pick('unet'),
        unetPerStepMs: pick('unet') / (STEPS + 1),
        vaeMs: pick('vae'),
        totalMs: pick('total'),
        maxDiffVsCpu: reference ? maxAbsDiff(reference, image) : null,
      },
    };
  } finally {
    await pipeline.release();
  }
}

async function timings(haveWebgpu: boolean): Promise<void> {
  say(`\n== tiny model at ${SIZE}×${SIZE}, ${STEPS} steps, guidance 7.5 (UNet batch 2), seed 1234; median of ${RUNS} runs after ${WARMUP} (the first run includes shader compilation)`);
  const root = await mkdtemp(path.join(tmpdir(), 'device-check-'));
  const rows: Row[] = [];
  const skipped: string[] = [];
  try {
    const request: GenerateRequest = { prompt: 'a photograph of an astronaut riding a horse', width: SIZE, height: SIZE, numInferenceSteps: STEPS, guidanceScale: 7.5, seed: 1234, numImages: 1 };
    for (const dtype of ['float32', 'float16'] as const) {
      const dir = path.join(root, dtype);
      await writeTinyModel(dir, { dtype });
      const cpu = await timeProvider(dtype, dir, 'cpu', undefined, request, undefined);
      rows.push(cpu.row);
      const plans: Array<[ExecutionProvider, WebGpuLayout | undefined]> = [];
      if (haveWebgpu) plans.push(['webgpu', 'NHWC']);
      if (haveWebgpu && dtype === 'float32') plans.push(['webgpu', 'NCHW']);
      if (cudaProviderInstalled()) plans.push(['cuda', undefined]);
      else if (dtype === 'float32') skipped.push('cuda: onnxruntime-node\'s CUDA provider libraries are not installed (they come from outside the npm registry)');
      for (const [provider, layout] of plans) {
        try {
          rows.push((await timeProvider(dtype, dir, provider, layout, request, cpu.image)).row);
        } catch (err) {
          skipped.push(`${dtype} ${provider}${layout ? ` ${layout}` : ''}: ${firstLine(err)}`);
        }
      }
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
  report['timings'] = { size: SIZE, steps: STEPS, runs: RUNS, rows, skipped };
  const header = ['model', 'provider', 'load', 'first run', 'text enc', 'unet', 'unet/step', 'vae', 'total', 'max diff vs cpu'];
  const cells = rows.map((r) => [
    r.model,
    r.provider,
    ms(r.loadMs),
    ms(r.firstRunMs),
    ms(r.textEncoderMs),
    ms(r.unetMs),
    ms(r.unetPerStepMs),
    ms(r.vaeMs),
    ms(r.totalMs),
    r.maxDiffVsCpu === null ? '—' : String(r.maxDiffVsCpu),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => `| ${c.map((v, i) => v.padStart(widths[i]!)).join(' | ')} |`;
  say(line(header));
  say(`| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`);
  for (const c of cells) say(line(c));
  for (const s of skipped) say(`not run: ${s}`);
}

/** Item 2 of the WebGPU issue: text states fed from a GPU buffer (bound once) against from the CPU each run. */
async function textStatesOnDevice(): Promise<void> {
  say(`\n== UNet runs at ${SIZE}×${SIZE}, batch 2: text states from the CPU each run vs left on the GPU (gpu-buffer)`);
  const root = await mkdtemp(path.join(tmpdir(), 'device-check-io-'));
  try {
    await writeTinyModel(root);
    const options = sessionOptionsFor('webgpu', {});
    const textEncoder = await ort.InferenceSession.create(path.join(root, 'text_encoder/model.onnx'), { ...options, preferredOutputLocation: { last_hidden_state: 'gpu-buffer' } });
    const textEncoderCpu = await ort.InferenceSession.create(path.join(root, 'text_encoder/model.onnx'), options);
    const unet = await ort.InferenceSession.create(path.join(root, 'unet/model.onnx'), options);
    const ids = new ort.Tensor('int32', new Int32Array(2 * 77).fill(7), [2, 77]);
    const onGpu = (await textEncoder.run({ input_ids: ids }))['last_hidden_state']!;
    const onCpu = (await textEncoderCpu.run({ input_ids: ids }))['last_hidden_state']!;
    const latent = SIZE / 8;
    const sample = new ort.Tensor('float32', new Float32Array(2 * 4 * latent * latent).fill(0.1), [2, 4, latent, latent]);
    const timestep = new ort.Tensor('int64', new BigInt64Array([500n, 500n]), [2]);
    const results: Record<string, number[]> = { cpu: [], 'gpu-buffer': [] };
    for (let round = 0; round < 3; round++) {
      for (const [name, states] of [['cpu', onCpu], ['gpu-buffer', onGpu]] as const) {
        await unet.run({ sample, timestep, encoder_hidden_states: states });
        const started = performance.now();
        for (let i = 0; i < 5; i++) await unet.run({ sample, timestep, encoder_hidden_states: states });
        results[name]!.push((performance.now() - started) / 5);
      }
    }
    report['textStatesOnDevice'] = { cpuMsPerRun: median(results['cpu']!), gpuBufferMsPerRun: median(results['gpu-buffer']!) };
    say(`from the CPU: ${ms(median(results['cpu']!))}/run; from a GPU buffer: ${ms(median(results['gpu-buffer']!))}/run (medians of 3 rounds of 5)`);
    await Promise.all([textEncoder.release(), textEncoderCpu.release(), unet.release()]);
  } catch (err) {
    say(`not measured: ${firstLine(err)}`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  await environment();
  await vulkan();
  const haveWebgpu = await webgpuStarts();
  await timings(haveWebgpu);
  if (haveWebgpu) await textStatesOnDevice();
  say(`\ndevice check took ${((performance.now() - started) / 1000).toFixed(1)} s`);
  const json = process.env['DEVICE_CHECK_JSON'];
  if (json) await writeFile(json, `${JSON.stringify(report, null, 2)}\n`);
}

await main();
