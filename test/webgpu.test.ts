/**
 * ONNX Runtime's WebGPU provider (Dawn over Vulkan): the pipeline on it against the CPU, the
 * errors without an adapter, the adapter in the load log, and a job through the API served by a
 * webgpu worker process (float16 exports: test/webgpu-float16.test.ts). CI runs all of it on Mesa's software Vulkan (lavapipe, from
 * bookworm-backports: .ci/run installs it); a machine without a Vulkan device Dawn accepts skips
 * the part that needs one and says why.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { float16ProbeModel } from '../scripts/tiny-model/float16-probe.js';
import type { Pipeline } from '../worker/pipeline/index.js';
import { resolveExecutionProvider, sessionOptionsFor } from '../worker/pipeline/onnx-session.js';
import {
  dawnAdapterChoice,
  describeWebGpuAdapter,
  describeWebGpuFailure,
  FLOAT16_PROBE_MODEL,
  parseVulkanSummary,
  vulkanSetup,
} from '../worker/pipeline/webgpu-device.js';
import { getJob, repoRoot, startScaledStack, submitJob, waitFor, type ScaledStack } from './helpers/autoscaler.js';
import { tinyPipelines } from './helpers/tiny-pipelines.js';
import { capturingLogger, difference, GPU_TIMEOUT_MS, REQUEST as request, REQUESTS, webgpuSkipReason } from './helpers/webgpu.js';

const skip = await webgpuSkipReason();
const gpuTitle = (title: string) => `${title}${skip ? ` (skipped: ${skip})` : ''}`;
const { tempDir, load } = tinyPipelines('sd-webgpu-test-');

/** test/fixtures/load-webgpu.ts in a process of its own, with `env` added. */
function loadInChild(dir: string, env: Record<string, string>, mode?: 'fallback'): Promise<Record<string, any>> {
  const args = ['--import', 'tsx', path.join(repoRoot, 'test/fixtures/load-webgpu.ts'), dir, ...(mode ? [mode] : [])];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd: repoRoot, env: { ...process.env, ...env }, timeout: 90_000 }, (err, stdout, stderr) => {
      const line = stdout.trim().split('\n').at(-1);
      if (!line) {
        reject(new Error(`fixture printed nothing (${err?.message ?? ''}): ${stderr.slice(-2000)}`));
        return;
      }
      resolve(JSON.parse(line) as Record<string, any>);
    });
  });
}

describe('WebGPU here', () => {
  // .ci/run installs lavapipe and sets REQUIRE_WEBGPU=1: there the GPU tests must run, never skip.
  it.runIf(process.env['REQUIRE_WEBGPU'] === '1')('has a WebGPU adapter, as REQUIRE_WEBGPU=1 demands', () => {
    expect(skip).toBeUndefined();
  });
});

describe('WebGPU without a Vulkan driver', () => {
  let dir: string;
  beforeAll(async () => {
    dir = inject('tinyModelDir');
  });

  it('refuses to load, with provider_unavailable naming the cause', async () => {
    const out = await loadInChild(dir, { VK_DRIVER_FILES: '/nonexistent/none.json' });
    expect(out).toMatchObject({ ok: false, name: 'ModelLoadError', code: 'provider_unavailable' });
    expect(out.message).toContain('Could not start a WebGPU session for text_encoder/model.onnx: no WebGPU adapter');
    expect(out.message).toMatch(/no Vulkan (driver manifest was found \(searched \/nonexistent\/none\.json\)|loader \(libvulkan\.so\.1\) was found)/);
    expect(out.message).toContain('Failed to get a WebGPU adapter');
    expect(out.message).toContain('WORKER_ALLOW_CPU_FALLBACK');
  });

  it('runs on the CPU with a warning per model when the fallback is allowed, never unseen', async () => {
    const out = await loadInChild(dir, { VK_DRIVER_FILES: '/nonexistent/none.json' }, 'fallback');
    expect(out.ok).toBe(true);
    expect(out.bytes).toBe(64 * 64 * 3);
    const warnings = (out.logs as Array<{ level: string; fields: { file: string; fallback: string } }>).filter((l) => l.level === 'warn');
    expect(warnings.map((w) => [w.fields.file, w.fields.fallback])).toEqual([
      ['text_encoder/model.onnx', 'cpu'],
      ['unet/model.onnx', 'cpu'],
      ['vae_decoder/model.onnx', 'cpu'],
      // The tiny model carries a safety checker: it goes through the same provider choice.
      ['safety_checker/model.onnx', 'cpu'],
    ]);
    const loaded = (out.logs as Array<{ message: string; fields: Record<string, unknown> }>).find((l) => l.message === 'Stable Diffusion pipeline loaded');
    expect(loaded?.fields).toMatchObject({ provider: 'cpu' });
    expect(loaded?.fields).not.toHaveProperty('adapter');
  });
});

describe('choosing the WebGPU device', () => {
  it('warns that WebGPU takes no device index, and says how a GPU is chosen', () => {
    const log = capturingLogger();
    expect(resolveExecutionProvider({ provider: 'webgpu', deviceId: 1, logger: log })).toBe('webgpu');
    expect(log.lines).toHaveLength(1);
    expect(log.lines[0]!.message).toContain('DRI_PRIME=pci-');
    resolveExecutionProvider({ provider: 'webgpu', deviceId: 0, logger: log });
    expect(log.lines).toHaveLength(1);
  });
});

describe('the Vulkan side', () => {
  const noLoader = () => ({ loader: undefined, drivers: [], searched: [] });
  const noDrivers = () => ({ loader: '/usr/lib/libvulkan.so.1', drivers: [], searched: ['/etc/vulkan/icd.d', '/usr/share/vulkan/icd.d'] });
  const oldMesa = () => ({ loader: '/usr/lib/libvulkan.so.1', drivers: [{ file: 'lvp_icd.json', apiVersion: '1.3.230' }], searched: ['/usr/share/vulkan/icd.d'] });
  const ortError = 'webgpu_context.cc:136 ... adapter_result.status == wgpu::RequestAdapterStatus::Success was false. Failed to get a WebGPU adapter: No supported adapters\n';

  it('names what is missing when no adapter could be had', () => {
    expect(describeWebGpuFailure(ortError, noLoader)).toMatch(/^no WebGPU adapter: no Vulkan loader \(libvulkan\.so\.1\) was found \(ONNX Runtime: Failed to get a WebGPU adapter: No supported adapters\)\. /);
    expect(describeWebGpuFailure(ortError, noDrivers)).toContain('no Vulkan driver manifest was found (searched /etc/vulkan/icd.d, /usr/share/vulkan/icd.d)');
    expect(describeWebGpuFailure(ortError, oldMesa)).toContain('the Vulkan drivers present (lvp_icd.json (Vulkan 1.3.230)) gave Dawn no usable device');
    expect(describeWebGpuFailure(ortError, oldMesa)).toContain('bookworm-backports');
    // Any other failure is ONNX Runtime's own message.
    expect(describeWebGpuFailure('Load model from x failed: Protobuf parsing failed.', noLoader)).toBe('Load model from x failed: Protobuf parsing failed.');
  });

  it('finds driver manifests where VK_DRIVER_FILES points, with the Vulkan version each declares', async () => {
    const dir = await tempDir();
    fs.writeFileSync(path.join(dir, 'lvp_icd.json'), JSON.stringify({ file_format_version: '1.0.1', ICD: { library_path: 'libvulkan_lvp.so', api_version: '1.4.305' } }));
    fs.writeFileSync(path.join(dir, 'broken.json'), '{');
    fs.writeFileSync(path.join(dir, 'README'), 'not a manifest');
    expect(vulkanSetup({ VK_DRIVER_FILES: dir }).drivers).toEqual([
      { file: 'broken.json', apiVersion: undefined },
      { file: 'lvp_icd.json', apiVersion: '1.4.305' },
    ]);
    expect(vulkanSetup({ VK_ICD_FILENAMES: path.join(dir, 'lvp_icd.json') }).drivers).toEqual([{ file: 'lvp_icd.json', apiVersion: '1.4.305' }]);
    // VK_ADD_DRIVER_FILES comes before the standard places.
    const added = vulkanSetup({ VK_ADD_DRIVER_FILES: path.join(dir, 'lvp_icd.json') });
    expect(added.searched[0]).toBe(path.join(dir, 'lvp_icd.json'));
    expect(added.drivers[0]).toEqual({ file: 'lvp_icd.json', apiVersion: '1.4.305' });
  });

  const summary = (devices: string) => `==========\nVULKANINFO\n==========\n\nVulkan Instance Version: 1.3.239\n\nInstance Extensions: count = 1\n-------------------------------\nVK_KHR_surface : extension revision 25\n\nDevices:\n========\n${devices}`;
  const lavapipe = `GPU0:\n\tapiVersion         = 1.4.305\n\tdriverVersion      = 0.0.1\n\tvendorID           = 0x10005\n\tdeviceID           = 0x0000\n\tdeviceType         = PHYSICAL_DEVICE_TYPE_CPU\n\tdeviceName         = llvmpipe (LLVM 15.0.6, 256 bits)\n\tdriverID           = DRIVER_ID_MESA_LLVMPIPE\n\tdriverName         = llvmpipe\n\tdriverInfo         = Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)\n`;
  const h200 = (n: number) => `GPU${n}:\n\tapiVersion         = 1.4.312\n\tvendorID           = 0x10de\n\tdeviceID           = 0x2335\n\tdeviceType         = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU\n\tdeviceName         = NVIDIA H200\n\tdriverName         = NVIDIA\n\tdriverInfo         = 580.95.05\n`;

  it("reads vulkaninfo --summary and names Dawn's high-performance choice", () => {
    const devices = parseVulkanSummary(summary(lavapipe.replace('GPU0', 'GPU0') + h200(1)));
    expect(devices.map((d) => [d.index, d.vendor, d.type, d.name])).toEqual([
      [0, 'Mesa', 'cpu', 'llvmpipe (LLVM 15.0.6, 256 bits)'],
      [1, 'NVIDIA', 'discrete', 'NVIDIA H200'],
    ]);
    expect(devices[0]).toMatchObject({ vendorId: 0x10005, driver: 'llvmpipe', driverInfo: 'Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6)', apiVersion: '1.4.305' });
    // Discrete before CPU; among equals, the first enumerated.
    expect(dawnAdapterChoice(devices)?.name).toBe('NVIDIA H200');
    expect(dawnAdapterChoice(parseVulkanSummary(summary(h200(0) + h200(1))))?.index).toBe(0);
    expect(dawnAdapterChoice(parseVulkanSummary(summary(lavapipe)))?.type).toBe('cpu');
    expect(parseVulkanSummary('ERROR: [Loader Message] Code 0 : vkCreateInstance: Found no drivers!')).toEqual([]);
  });

  it('describes the adapter from vulkaninfo, warns when a slot pinning did not narrow Vulkan, and says why it cannot', async () => {
    const dir = await tempDir();
    const fake = path.join(dir, 'vulkaninfo');
    fs.writeFileSync(path.join(dir, 'summary.txt'), summary(h200(0) + lavapipe.replace('GPU0', 'GPU1')));
    fs.writeFileSync(fake, `#!/bin/sh\n[ "$1" = --summary ] && cat "${path.join(dir, 'summary.txt')}"\n`, { mode: 0o755 });
    const described = await describeWebGpuAdapter({ vulkaninfo: fake, env: {} });
    expect(described.adapter).toEqual({
      backend: 'vulkan',
      vendor: 'NVIDIA',
      device: 'NVIDIA H200',
      type: 'discrete',
      driver: '580.95.05',
      apiVersion: '1.4.312',
      source: "vulkaninfo: Dawn's high-performance choice of 2 Vulkan devices",
    });
    const pinned = await describeWebGpuAdapter({ vulkaninfo: fake, env: { DRI_PRIME: 'pci-0000_01_00_0', MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1' } });
    expect(pinned.adapter?.warning).toContain('did not narrow Vulkan');
    expect(await describeWebGpuAdapter({ vulkaninfo: path.join(dir, 'absent'), env: {} })).toEqual({
      adapter: null,
      reason: 'vulkaninfo not found (install vulkan-tools to name the adapter)',
    });
  });

  it('keeps the float16 probe model as the tiny-model builder makes it', () => {
    expect(Buffer.from(FLOAT16_PROBE_MODEL).equals(Buffer.from(float16ProbeModel()))).toBe(true);
  });
});

describe.skipIf(skip)(gpuTitle('pipeline on WebGPU against the CPU'), { timeout: GPU_TIMEOUT_MS }, () => {
  let dir32: string;
  let cpu32: Pipeline;
  let gpu32: Pipeline;
  const loadLog = capturingLogger();

  beforeAll(async () => {
    dir32 = inject('tinyModelDir');
    cpu32 = await load(dir32);
    gpu32 = await load(dir32, { provider: 'webgpu', logger: loadLog });
  }, GPU_TIMEOUT_MS);

  it.each(REQUESTS)('float32: %s gives the same images within 2 levels', async (_name, overrides) => {
    const r = { ...request, ...overrides };
    const [onCpu, onGpu] = [await cpu32.generate(r), await gpu32.generate(r)];
    expect(onGpu.images).toHaveLength(r.numImages);
    for (const [i, image] of onGpu.images.entries()) {
      expect([image.width, image.height, image.seed]).toEqual([r.width, r.height, r.seed + i]);
      const { max } = difference(onCpu.images[i]!.data, image.data);
      expect(max).toBeLessThanOrEqual(2);
    }
    expect(onGpu.timings.unet).toBeGreaterThan(0);
  });

  it('runs the UNet on WebGPU: only index and timestep arithmetic is left to the CPU', async () => {
    const profileDir = await tempDir();
    const session = await ort.InferenceSession.create(path.join(dir32, 'unet/model.onnx'), {
      ...sessionOptionsFor('webgpu', {}),
      enableProfiling: true,
      profileFilePrefix: path.join(profileDir, 'unet'),
    });
    await session.run({
      sample: new ort.Tensor('float32', new Float32Array(2 * 4 * 8 * 8), [2, 4, 8, 8]),
      timestep: new ort.Tensor('int64', new BigInt64Array([500n, 500n]), [2]),
      encoder_hidden_states: new ort.Tensor('float32', new Float32Array(2 * 77 * 32), [2, 77, 32]),
    });
    session.endProfiling();
    await session.release();
    const [file] = fs.readdirSync(profileDir);
    const events = JSON.parse(fs.readFileSync(path.join(profileDir, file!), 'utf8')) as Array<{ cat: string; name: string; args: { op_name?: string; provider?: string } }>;
    const ops = (provider: string) => new Set(events.filter((e) => e.cat === 'Node' && e.args.provider === provider).map((e) => e.args.op_name));
    const onGpu = ops('WebGpuExecutionProvider');
    for (const op of ['Conv', 'MatMul', 'Gemm', 'Softmax', 'InstanceNormalization', 'Add', 'Mul']) expect(onGpu, op).toContain(op);
    expect([...ops('CPUExecutionProvider')].sort()).toEqual(['Cast', 'Gather', 'Round']);
  });

  it('logs the provider and the adapter (vendor, device, backend)', async () => {
    const loaded = loadLog.lines.find((l) => l.message === 'Stable Diffusion pipeline loaded');
    expect(loaded?.fields).toMatchObject({ provider: 'webgpu', dtype: 'float32' });
    const described = await describeWebGpuAdapter();
    if (described.adapter) {
      // vulkaninfo present (CI installs vulkan-tools): on lavapipe, Mesa's llvmpipe device.
      expect(loaded?.fields['adapter']).toMatchObject({ backend: 'vulkan', vendor: described.adapter.vendor, device: described.adapter.device });
      expect(String(described.adapter.vendor).length).toBeGreaterThan(0);
    } else {
      expect(loaded?.fields).toMatchObject({ adapter: null, adapterUnknown: described.reason });
    }
  });
});

describe.skipIf(skip)(gpuTitle('a job through the API, served by a webgpu worker process'), { timeout: GPU_TIMEOUT_MS }, () => {
  let stack: ScaledStack;
  afterAll(async () => {
    await stack?.close();
  });

  it('succeeds, its image matches the CPU within 2 levels, and the worker log names provider and adapter', async () => {
    const modelDir = inject('tinyModelDir');
    // A machine without GPUs has CPU slots; WORKER_PROVIDER=webgpu runs them on WebGPU's software adapter.
    stack = await startScaledStack(modelDir, { WORKER_PROVIDER: 'webgpu', AUTOSCALER_CPU_SLOTS: '1', AUTOSCALER_MAX_WORKERS: '1' });
    const id = await submitJob(stack.api.url, { prompt: request.prompt, width: 64, height: 64, num_inference_steps: 3, guidance_scale: 7.5, seed: 42 });
    const job = await waitFor(`job ${id} to finish`, async () => {
      const j = await getJob(stack.api.url, id);
      return ['succeeded', 'failed', 'canceled'].includes(j.status) ? j : null;
    }, GPU_TIMEOUT_MS - 60_000, 100);
    expect(job.status, stack.logs()).toBe('succeeded');

    const png = Buffer.from(await (await fetch(`${stack.api.url}/v1/jobs/${id}/images/0.png`)).arrayBuffer());
    const served = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    expect([served.info.width, served.info.height, served.info.channels]).toEqual([64, 64, 3]);
    const cpu = await load(modelDir);
    const { images } = await cpu.generate({ ...request, negativePrompt: '' });
    expect(difference(images[0]!.data, new Uint8Array(served.data)).max).toBeLessThanOrEqual(2);

    const workerLines = stack
      .logs()
      .split('--- workers ---')[1]!
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, any>);
    const loaded = workerLines.find((l) => l.msg === 'Stable Diffusion pipeline loaded');
    expect(loaded, stack.logs()).toMatchObject({ provider: 'webgpu' });
    expect(loaded!['adapter'] === null ? loaded!['adapterUnknown'] : loaded!['adapter'].backend).toBeTruthy();
    expect(workerLines.find((l) => l.msg === 'worker starting')).toMatchObject({ provider: 'webgpu' });
  });
});
