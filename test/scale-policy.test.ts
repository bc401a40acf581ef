import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { pickToStop } from '../autoscaler/autoscaler.js';
import { decide, initialTarget, workersForLoad, type PendingScale, type PolicyConfig, type ScaleState } from '../autoscaler/scale-policy.js';
import {
  cpuSlot,
  detectRenderGpus,
  gpuSlot,
  parseGpuIndices,
  parseNvidiaGpus,
  resolveSlots,
  slotEnv,
  type GpuInventory,
} from '../autoscaler/slots.js';
import { loadConfig } from '../shared/config.js';
import type { DriverWorker } from '../autoscaler/worker-driver.js';

/** The policy is a pure function: each row is a state, a config and the decision it must give. */

const base: PolicyConfig = {
  minWorkers: 0,
  maxWorkers: 2,
  initialWorkers: 0,
  targetJobsPerWorker: 1,
  upscaleDelayS: 5,
  downscaleDelayS: 60,
  downscaleToZeroDelayS: 300,
};
const T = 1_000_000;
const up = (ago: number): PendingScale => ({ direction: 'up', since: T - ago * 1000 });
const down = (ago: number): PendingScale => ({ direction: 'down', since: T - ago * 1000 });
const state = (s: Partial<ScaleState>): ScaleState => ({ now: T, load: 0, workers: 0, usableSlots: 2, pending: null, ...s });

interface Row {
  name: string;
  state: Partial<ScaleState>;
  config?: Partial<PolicyConfig>;
  expect: { target: number; action: 'up' | 'down' | 'hold'; reason: string; desired?: number; pending?: PendingScale | null };
}

const rows: Row[] = [
  // Cold start: jobs and no worker start at once, without the upscale delay, straight to what the load asks.
  { name: 'cold start with one job', state: { load: 1 }, expect: { target: 1, action: 'up', reason: 'cold-start', pending: null } },
  { name: 'cold start with a burst goes to max at once', state: { load: 7 }, expect: { target: 2, action: 'up', reason: 'cold-start', desired: 2 } },
  { name: 'cold start ignores a stale downward pending', state: { load: 3, pending: down(100) }, expect: { target: 2, action: 'up', reason: 'cold-start' } },
  { name: 'cold start capped by the usable slots', state: { load: 5, usableSlots: 1 }, expect: { target: 1, action: 'up', reason: 'cold-start', desired: 2 } },
  { name: 'no usable slot at all: hold at 0', state: { load: 5, usableSlots: 0 }, expect: { target: 0, action: 'hold', reason: 'slot-limit', desired: 2 } },
  { name: 'idle at zero stays at zero', state: { load: 0 }, expect: { target: 0, action: 'hold', reason: 'steady', desired: 0 } },

  // Upscale waits out upscale_delay_s, counted from the first tick that asked for it.
  { name: 'more load starts the upscale clock', state: { load: 2, workers: 1 }, expect: { target: 1, action: 'hold', reason: 'upscale-delay', pending: up(0) } },
  { name: 'upscale clock keeps running', state: { load: 2, workers: 1, pending: up(4) }, expect: { target: 1, action: 'hold', reason: 'upscale-delay', pending: up(4) } },
  { name: 'upscale after the delay', state: { load: 2, workers: 1, pending: up(5) }, expect: { target: 2, action: 'up', reason: 'upscale', pending: null } },
  { name: 'upscale clamps to max', state: { load: 50, workers: 1, pending: up(6) }, expect: { target: 2, action: 'up', reason: 'upscale', desired: 2 } },
  { name: 'a downward pending does not count for an upscale', state: { load: 2, workers: 1, pending: down(100) }, expect: { target: 1, action: 'hold', reason: 'upscale-delay', pending: up(0) } },
  { name: 'zero upscale delay acts at once', state: { load: 2, workers: 1 }, config: { upscaleDelayS: 0 }, expect: { target: 2, action: 'up', reason: 'upscale' } },
  { name: 'never more workers than usable slots', state: { load: 9, workers: 1, usableSlots: 1, pending: up(60) }, config: { maxWorkers: 4 }, expect: { target: 1, action: 'hold', reason: 'slot-limit', desired: 4 } },

  // target_jobs_per_worker: desired = ceil(load / target).
  { name: 'two jobs per worker: 3 jobs → 2 workers', state: { load: 3, workers: 1, pending: up(5) }, config: { targetJobsPerWorker: 2, maxWorkers: 4 }, expect: { target: 2, action: 'up', reason: 'upscale', desired: 2 } },
  { name: 'two jobs per worker: 4 jobs → 2 workers, steady', state: { load: 4, workers: 2 }, config: { targetJobsPerWorker: 2, maxWorkers: 4 }, expect: { target: 2, action: 'hold', reason: 'steady' } },
  { name: 'fractional target: 0.5 jobs per worker doubles up', state: { load: 2, workers: 0, usableSlots: 8 }, config: { targetJobsPerWorker: 0.5, maxWorkers: 8 }, expect: { target: 4, action: 'up', reason: 'cold-start' } },

  // Downscale waits out downscale_delay_s; n → 1 first, the last 1 → 0 under downscale_to_zero_delay_s.
  { name: 'less load starts the downscale clock', state: { load: 1, workers: 2 }, expect: { target: 2, action: 'hold', reason: 'downscale-delay', pending: down(0) } },
  { name: 'downscale after the delay', state: { load: 1, workers: 2, pending: down(60) }, expect: { target: 1, action: 'down', reason: 'downscale', pending: null } },
  { name: 'idle with 2 goes to 1 first, not 0', state: { load: 0, workers: 2, pending: down(60) }, expect: { target: 1, action: 'down', reason: 'downscale' } },
  { name: 'the last worker waits out the to-zero delay', state: { load: 0, workers: 1, pending: down(120) }, expect: { target: 1, action: 'hold', reason: 'downscale-delay' } },
  { name: 'the last worker goes after the to-zero delay', state: { load: 0, workers: 1, pending: down(300) }, expect: { target: 0, action: 'down', reason: 'downscale-to-zero' } },
  { name: 'min 1 keeps one worker when idle', state: { load: 0, workers: 1, pending: down(1000) }, config: { minWorkers: 1 }, expect: { target: 1, action: 'hold', reason: 'steady' } },
  { name: 'an upward pending does not count for a downscale', state: { load: 0, workers: 2, pending: up(100) }, expect: { target: 2, action: 'hold', reason: 'downscale-delay', pending: down(0) } },

  // Running jobs are load: busy workers are never scaled away.
  { name: 'two running jobs keep two workers', state: { load: 2, workers: 2, pending: down(1000) }, expect: { target: 2, action: 'hold', reason: 'steady', pending: null } },

  // Bounds hold at once.
  { name: 'below min starts workers without delay', state: { load: 0, workers: 0 }, config: { minWorkers: 1 }, expect: { target: 1, action: 'up', reason: 'below-min' } },
  { name: 'above max (adopted too many) stops at once', state: { load: 9, workers: 3 }, expect: { target: 2, action: 'down', reason: 'above-max' } },
  { name: 'slots lost to a crash loop lower the ceiling at once', state: { load: 9, workers: 2, usableSlots: 1 }, expect: { target: 1, action: 'down', reason: 'above-max' } },
  { name: 'min above the usable slots is capped', state: { load: 0, workers: 0, usableSlots: 1 }, config: { minWorkers: 2, maxWorkers: 2 }, expect: { target: 1, action: 'up', reason: 'below-min' } },
];

describe('decide(state, config)', () => {
  it.each(rows)('$name', (row) => {
    const decision = decide(state(row.state), { ...base, ...row.config });
    expect({ target: decision.target, action: decision.action, reason: decision.reason }).toEqual({
      target: row.expect.target,
      action: row.expect.action,
      reason: row.expect.reason,
    });
    if (row.expect.desired !== undefined) expect(decision.desired).toBe(row.expect.desired);
    if (row.expect.pending !== undefined) expect(decision.pending).toEqual(row.expect.pending);
  });

  it('does not flap: a load that dips for less than the delay never scales down', () => {
    const config = { ...base, downscaleDelayS: 3, upscaleDelayS: 3 };
    let workers = 2;
    let pending: PendingScale | null = null;
    const targets: number[] = [];
    // One tick per second: the load alternates between "needs 2" and "needs 1" for a minute.
    for (let second = 0; second < 60; second++) {
      const d = decide({ now: T + second * 1000, load: second % 2 === 0 ? 2 : 1, workers, usableSlots: 2, pending }, config);
      workers = d.target;
      pending = d.pending;
      targets.push(workers);
    }
    expect(new Set(targets)).toEqual(new Set([2]));
  });

  it('scales a sustained change exactly once per delay, with the clock measured in time, not ticks', () => {
    const config = { ...base, downscaleDelayS: 10, downscaleToZeroDelayS: 10 };
    let workers = 2;
    let pending: PendingScale | null = null;
    const changes: Array<[number, number]> = [];
    // Irregular tick spacing: delays are wall-clock. The 1 → 0 clock starts at the first tick after reaching 1.
    for (const ms of [0, 100, 4000, 9999, 10_000, 12_000, 21_999, 22_000, 30_000]) {
      const d = decide({ now: T + ms, load: 0, workers, usableSlots: 2, pending }, config);
      if (d.target !== workers) changes.push([ms, d.target]);
      workers = d.target;
      pending = d.pending;
    }
    expect(changes).toEqual([
      [10_000, 1],
      [22_000, 0],
    ]);
  });

  it('computes the load-based size with ceil and no float noise', () => {
    expect(workersForLoad(0, 1)).toBe(0);
    expect(workersForLoad(1, 1)).toBe(1);
    expect(workersForLoad(5, 2)).toBe(3);
    expect(workersForLoad(3, 0.1)).toBe(30);
    expect(workersForLoad(0.3, 0.1)).toBe(3);
  });

  it('starts at initial_replicas within the bounds and the slots', () => {
    expect(initialTarget({ ...base, initialWorkers: 1 }, 2)).toBe(1);
    expect(initialTarget({ ...base, initialWorkers: 0, minWorkers: 0 }, 2)).toBe(0);
    expect(initialTarget({ ...base, initialWorkers: 2 }, 1)).toBe(1);
  });
});

describe('which workers stop first', () => {
  const w = (id: string, phase: DriverWorker['phase'], startedAt: number): DriverWorker => ({
    id,
    slot: id,
    pid: 1,
    phase,
    currentJob: phase === 'busy' ? 'job' : null,
    startedAt,
    adopted: false,
  });
  it('picks idle workers, then loading ones, busy ones last', () => {
    const workers = [w('busy-old', 'busy', 1), w('idle-old', 'ready', 2), w('loading', 'starting', 3), w('idle-young', 'ready', 4), w('busy-young', 'busy', 5)];
    expect(pickToStop(workers, 1).map((x) => x.id)).toEqual(['idle-young']);
    expect(pickToStop(workers, 3).map((x) => x.id)).toEqual(['idle-young', 'idle-old', 'loading']);
    expect(pickToStop(workers, 5).map((x) => x.id).slice(3)).toEqual(['busy-young', 'busy-old']);
    expect(pickToStop(workers, 0)).toEqual([]);
  });
});

describe('slots', () => {
  it('uses the configured GPUs, one slot each', async () => {
    const slots = await resolveSlots({ gpus: [0, 2], cpuSlots: 4 }, async () => [0, 1, 2, 3]);
    expect(slots).toEqual([
      { id: 'gpu0', kind: 'gpu', gpu: 0, provider: 'cuda' },
      { id: 'gpu2', kind: 'gpu', gpu: 2, provider: 'cuda' },
    ]);
  });
  it('detects GPUs with nvidia-smi when none are configured', async () => {
    const slots = await resolveSlots({ gpus: 'detect', cpuSlots: 1 }, async () => parseGpuIndices('0\n1\n\n'));
    expect(slots.map((s) => s.id)).toEqual(['gpu0', 'gpu1']);
  });
  it('falls back to CPU slots without GPUs, or when told to', async () => {
    expect((await resolveSlots({ gpus: 'detect', cpuSlots: 2 }, async () => [])).map((s) => s.id)).toEqual(['cpu0', 'cpu1']);
    expect((await resolveSlots({ gpus: 'none', cpuSlots: 1 }, async () => [0])).map((s) => s.id)).toEqual(['cpu0']);
  });
  it("parses nvidia-smi's index list, ignoring noise", () => {
    expect(parseGpuIndices('0\r\n1\n3\nNo devices were found\n')).toEqual([0, 1, 3]);
  });
  it("parses nvidia-smi's index and PCI address list", () => {
    expect(parseNvidiaGpus('0, 00000000:1B:00.0\n1, 00000000:43:00.0\r\nNo devices were found\n2\n')).toEqual([
      { index: 0, vendor: 'nvidia', pciAddress: '0000:1b:00.0' },
      { index: 1, vendor: 'nvidia', pciAddress: '0000:43:00.0' },
      { index: 2, vendor: 'nvidia' },
    ]);
  });

  const nvidia: GpuInventory = {
    nvidia: [
      { index: 0, vendor: 'nvidia', pciAddress: '0000:1b:00.0' },
      { index: 1, vendor: 'nvidia', pciAddress: '0000:43:00.0' },
    ],
    render: [{ index: 0, vendor: 'intel', pciAddress: '0000:00:02.0' }],
  };
  const amd: GpuInventory = {
    nvidia: [],
    render: [
      { index: 0, vendor: 'amd', pciAddress: '0000:03:00.0' },
      { index: 1, vendor: 'amd', pciAddress: '0000:83:00.0' },
    ],
  };
  it('serves GPU slots with cuda or webgpu: auto keeps CUDA for NVIDIA and gives other GPUs WebGPU', async () => {
    expect(await resolveSlots({ gpus: 'detect', cpuSlots: 1 }, async () => nvidia)).toEqual([
      { id: 'gpu0', kind: 'gpu', gpu: 0, provider: 'cuda' },
      { id: 'gpu1', kind: 'gpu', gpu: 1, provider: 'cuda' },
    ]);
    // A machine with Vulkan GPUs and no CUDA gets GPU slots.
    expect(await resolveSlots({ gpus: 'detect', cpuSlots: 1, gpuProvider: 'auto' }, async () => amd)).toEqual([
      { id: 'gpu0', kind: 'gpu', gpu: 0, provider: 'webgpu', pciAddress: '0000:03:00.0' },
      { id: 'gpu1', kind: 'gpu', gpu: 1, provider: 'webgpu', pciAddress: '0000:83:00.0' },
    ]);
    // webgpu on NVIDIA: nvidia-smi's GPUs (CUDA's numbering), each pinned by its PCI address.
    expect(await resolveSlots({ gpus: [1], cpuSlots: 1, gpuProvider: 'webgpu' }, async () => nvidia)).toEqual([
      { id: 'gpu1', kind: 'gpu', gpu: 1, provider: 'webgpu', pciAddress: '0000:43:00.0' },
    ]);
    // cuda asked for on a machine with AMD GPUs only: no GPU slots.
    expect((await resolveSlots({ gpus: 'detect', cpuSlots: 2, gpuProvider: 'cuda' }, async () => amd)).map((s) => s.id)).toEqual(['cpu0', 'cpu1']);
    expect((await resolveSlots({ gpus: 'detect', cpuSlots: 1, gpuProvider: 'webgpu' }, async () => ({ nvidia: [], render: [] }))).map((s) => s.id)).toEqual(['cpu0']);
  });

  it("finds GPUs by their DRM render nodes in sysfs, leaving out VMs' display adapters", async () => {
    const sys = fs.mkdtempSync(path.join(os.tmpdir(), 'sd-sysfs-'));
    try {
      const device = (address: string, vendor: string) => {
        const dir = path.join(sys, 'devices/pci0000:00', address);
        fs.mkdirSync(dir, { recursive: true });
        fs.writeFileSync(path.join(dir, 'vendor'), `${vendor}\n`);
        return dir;
      };
      const node = (name: string, target: string) => {
        fs.mkdirSync(path.join(sys, 'class/drm', name), { recursive: true });
        fs.symlinkSync(target, path.join(sys, 'class/drm', name, 'device'));
      };
      node('renderD129', device('0000:83:00.0', '0x1002'));
      node('renderD128', device('0000:03:00.0', '0x1002'));
      node('renderD130', device('0000:00:02.0', '0x8086'));
      node('renderD131', device('0000:00:05.0', '0x1af4')); // virtio-gpu
      node('card0', device('0000:00:01.0', '0x1234'));
      expect(detectRenderGpus(sys)).toEqual([
        { index: 0, vendor: 'intel', pciAddress: '0000:00:02.0' },
        { index: 1, vendor: 'amd', pciAddress: '0000:03:00.0' },
        { index: 2, vendor: 'amd', pciAddress: '0000:83:00.0' },
      ]);
      expect(detectRenderGpus(path.join(sys, 'absent'))).toEqual([]);
    } finally {
      fs.rmSync(sys, { recursive: true, force: true });
    }
  });

  it("puts a worker on its slot: CUDA_VISIBLE_DEVICES, or Vulkan narrowed to the GPU's PCI address", () => {
    expect(slotEnv(gpuSlot(1, 'cuda'), {}, 2)).toEqual({ WORKER_PROVIDER: 'cuda', CUDA_VISIBLE_DEVICES: '1', WORKER_DEVICE_ID: '0' });
    expect(slotEnv(gpuSlot(1, 'webgpu', '0000:83:00.0'), {}, 2)).toEqual({
      WORKER_PROVIDER: 'webgpu',
      CUDA_VISIBLE_DEVICES: '1',
      WORKER_DEVICE_ID: '0',
      DRI_PRIME: 'pci-0000_83_00_0',
      MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: '1',
    });
    expect(slotEnv(gpuSlot(0, 'webgpu'), {}, 1)).toEqual({ WORKER_PROVIDER: 'webgpu', CUDA_VISIBLE_DEVICES: '0', WORKER_DEVICE_ID: '0' });
    // CPU slots run on the CPU, sharing the cores, unless WebGPU is asked for there (a software adapter).
    expect(slotEnv(cpuSlot(0), { WORKER_PROVIDER: 'cuda' }, 2)).toMatchObject({ WORKER_PROVIDER: 'cpu', CUDA_VISIBLE_DEVICES: '' });
    expect(slotEnv(cpuSlot(0), { WORKER_PROVIDER: 'webgpu', WORKER_CPU_THREADS: '3' }, 2)).toEqual({ WORKER_PROVIDER: 'webgpu', CUDA_VISIBLE_DEVICES: '' });
    expect(slotEnv(cpuSlot(0), {}, 1)['WORKER_CPU_THREADS']).toBe(String(os.availableParallelism()));
  });
});

describe('AUTOSCALER_* configuration', () => {
  it("defaults to Ray's scale-to-zero shape: min 0, initial = min, max = one per slot", () => {
    const { autoscaler } = loadConfig({ MODEL_DIR: 'models/tiny-sd' });
    expect(autoscaler).toMatchObject({ minWorkers: 0, initialWorkers: 0, maxWorkers: undefined, targetJobsPerWorker: 1, gpus: 'detect', cpuSlots: 1 });
    // Without GPUs, one CPU slot per served model by default (the two built-in tiny models: two, on a machine with two cores).
    expect(loadConfig({}).autoscaler.cpuSlots).toBe(Math.min(2, os.availableParallelism()));
    expect(loadConfig({ AUTOSCALER_CPU_SLOTS: '3' }).autoscaler.cpuSlots).toBe(3);
    expect(autoscaler.downscaleToZeroDelayS).toBe(autoscaler.downscaleDelayS);
  });
  it('reads GPU lists, decimal delays and an explicit to-zero delay', () => {
    const { autoscaler } = loadConfig({ AUTOSCALER_GPUS: '0,1,1', AUTOSCALER_UPSCALE_DELAY_S: '0.5', AUTOSCALER_DOWNSCALE_TO_ZERO_DELAY_S: '900', AUTOSCALER_MAX_WORKERS: '2' });
    expect(autoscaler).toMatchObject({ gpus: [0, 1], upscaleDelayS: 0.5, downscaleToZeroDelayS: 900, maxWorkers: 2 });
    expect(loadConfig({ AUTOSCALER_GPUS: 'none' }).autoscaler.gpus).toBe('none');
  });
  it('names bad values and bounds that contradict each other', () => {
    expect(() => loadConfig({ AUTOSCALER_GPUS: 'gpu0' })).toThrow(/AUTOSCALER_GPUS: expected none or GPU indices/);
    expect(() => loadConfig({ AUTOSCALER_MIN_WORKERS: '3', AUTOSCALER_MAX_WORKERS: '2' })).toThrow(/AUTOSCALER_MIN_WORKERS: must not exceed AUTOSCALER_MAX_WORKERS/);
    expect(() => loadConfig({ AUTOSCALER_INITIAL_WORKERS: '5', AUTOSCALER_MAX_WORKERS: '2' })).toThrow(/AUTOSCALER_INITIAL_WORKERS/);
    expect(() => loadConfig({ AUTOSCALER_UPSCALE_DELAY_S: 'soon' })).toThrow(/AUTOSCALER_UPSCALE_DELAY_S: expected a number of seconds/);
  });
});
