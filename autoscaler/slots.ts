import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AutoscalerConfig } from '../shared/config.js';

/** What runs a GPU slot's worker: ONNX Runtime's CUDA provider, or its WebGPU provider (Vulkan). */
export type GpuProvider = 'cuda' | 'webgpu';

/** A place for one worker: one GPU (one job on the GPU at a time), or a CPU share on a machine without GPUs. */
export interface Slot {
  id: string;
  kind: 'gpu' | 'cpu';
  /** The GPU index on this machine (nvidia-smi's, else the order of the GPUs' render nodes); GPU slots only. */
  gpu?: number;
  /** What serves the slot; GPU slots only. */
  provider?: GpuProvider;
  /** The GPU's PCI address (`0000:01:00.0`) when known: a WebGPU worker's Vulkan is narrowed to it. */
  pciAddress?: string;
}

export const gpuSlot = (index: number, provider: GpuProvider = 'cuda', pciAddress?: string): Slot => ({
  id: `gpu${index}`,
  kind: 'gpu',
  gpu: index,
  provider,
  ...(pciAddress ? { pciAddress } : {}),
});
export const cpuSlot = (index: number): Slot => ({ id: `cpu${index}`, kind: 'cpu' });

/** A GPU found on this machine. */
export interface DetectedGpu {
  index: number;
  vendor: 'nvidia' | 'amd' | 'intel' | 'other';
  pciAddress?: string;
}

/** The GPUs of this machine: NVIDIA's (nvidia-smi) and every GPU with a DRM render node (for WebGPU). */
export interface GpuInventory {
  nvidia: DetectedGpu[];
  render: DetectedGpu[];
}

/** GPU indices from `nvidia-smi --query-gpu=index --format=csv,noheader`; [] when it is absent or fails. */
export async function detectGpus(command = 'nvidia-smi'): Promise<number[]> {
  return (await detectNvidiaGpus(command)).map((gpu) => gpu.index);
}

/** NVIDIA GPUs with their PCI addresses (`nvidia-smi --query-gpu=index,pci.bus_id`); [] without nvidia-smi. */
export function detectNvidiaGpus(command = 'nvidia-smi'): Promise<DetectedGpu[]> {
  return new Promise((resolve) => {
    execFile(command, ['--query-gpu=index,pci.bus_id', '--format=csv,noheader'], { timeout: 10_000 }, (err, stdout) => {
      resolve(err ? [] : parseNvidiaGpus(stdout));
    });
  });
}

export function parseGpuIndices(text: string): number[] {
  return [
    ...new Set(
      text
        .split(/\r?\n/)
        .map((line) => line.trim())
        .filter((line) => /^\d+$/.test(line))
        .map(Number),
    ),
  ];
}

/** `index, pci.bus_id` lines (nvidia-smi writes an 8-digit PCI domain: 00000000:01:00.0). */
export function parseNvidiaGpus(text: string): DetectedGpu[] {
  const gpus = new Map<number, DetectedGpu>();
  for (const line of text.split(/\r?\n/)) {
    const m = line.trim().match(/^(\d+)\s*(?:,\s*([0-9a-f]+):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7]))?$/i);
    if (!m) continue;
    const index = Number(m[1]);
    const pciAddress = m[2] ? `${m[2].slice(-4)}:${m[3]}:${m[4]}.${m[5]}`.toLowerCase() : undefined;
    if (!gpus.has(index)) gpus.set(index, { index, vendor: 'nvidia', ...(pciAddress ? { pciAddress } : {}) });
  }
  return [...gpus.values()];
}

const PCI_VENDORS: Record<string, DetectedGpu['vendor']> = { '0x10de': 'nvidia', '0x1002': 'amd', '0x8086': 'intel' };
/** GPU makers whose Vulkan drivers serve compute (virtual display adapters of VMs are left out). */
const RENDER_GPU_VENDORS = new Set(['0x10de', '0x1002', '0x8086', '0x13b5', '0x5143']);

/**
 * GPUs with a DRM render node (`/sys/class/drm/renderD*`), ordered by PCI address: AMD and
 * Intel GPUs (and NVIDIA's with nvidia-drm), which WebGPU reaches through Vulkan.
 */
export function detectRenderGpus(sysRoot = '/sys'): DetectedGpu[] {
  const drm = path.join(sysRoot, 'class/drm');
  let nodes: string[];
  try {
    nodes = fs.readdirSync(drm).filter((name) => /^renderD\d+$/.test(name));
  } catch {
    return [];
  }
  const found = new Map<string, DetectedGpu['vendor']>();
  for (const node of nodes) {
    try {
      const device = fs.realpathSync(path.join(drm, node, 'device'));
      const vendorId = fs.readFileSync(path.join(device, 'vendor'), 'utf8').trim().toLowerCase();
      const address = path.basename(device);
      if (!RENDER_GPU_VENDORS.has(vendorId) || !/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(address)) continue;
      found.set(address.toLowerCase(), PCI_VENDORS[vendorId] ?? 'other');
    } catch {
      // Not a PCI device, or gone: not a slot.
    }
  }
  return [...found.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([pciAddress, vendor], index) => ({ index, vendor, pciAddress }));
}

async function detectInventory(): Promise<GpuInventory> {
  return { nvidia: await detectNvidiaGpus(), render: detectRenderGpus() };
}

/**
 * The slots of this machine: the configured GPUs, else the GPUs found, else AUTOSCALER_CPU_SLOTS
 * CPU slots. GPU slots are served by `gpuProvider`; `auto` keeps CUDA for NVIDIA GPUs and gives
 * a machine without them, but with other GPUs (AMD, Intel), WebGPU slots.
 */
export async function resolveSlots(
  config: Pick<AutoscalerConfig, 'gpus' | 'cpuSlots'> & Partial<Pick<AutoscalerConfig, 'gpuProvider'>>,
  detect: () => Promise<number[] | GpuInventory> = detectInventory,
): Promise<Slot[]> {
  const cpuSlots = () => Array.from({ length: config.cpuSlots }, (_, i) => cpuSlot(i));
  if (config.gpus === 'none') return cpuSlots();
  const found = await detect();
  // A bare index list is nvidia-smi's answer alone.
  const inventory: GpuInventory = Array.isArray(found) ? { nvidia: found.map((index) => ({ index, vendor: 'nvidia' })), render: [] } : found;
  const wanted = config.gpuProvider ?? 'auto';
  const provider: GpuProvider = wanted === 'auto' ? (inventory.nvidia.length > 0 || inventory.render.length === 0 ? 'cuda' : 'webgpu') : wanted;
  // CUDA reaches NVIDIA GPUs only; WebGPU any GPU, NVIDIA's first (their indices match CUDA's).
  const candidates = provider === 'cuda' || inventory.nvidia.length > 0 ? inventory.nvidia : inventory.render;
  const gpus = config.gpus === 'detect' ? candidates : config.gpus.map((index) => candidates.find((g) => g.index === index) ?? { index, vendor: 'other' as const });
  if (gpus.length === 0) return cpuSlots();
  return gpus.map((gpu) => gpuSlot(gpu.index, provider, provider === 'webgpu' ? gpu.pciAddress : undefined));
}

/** Mesa's device-select layer tag for a PCI address: `0000:01:00.0` → `pci-0000_01_00_0`. */
export function driPrimeTag(pciAddress: string): string {
  return `pci-${pciAddress.replace(/[:.]/g, '_')}`;
}

/**
 * The environment that puts a worker on its slot. A GPU slot's worker sees its GPU only: CUDA
 * through CUDA_VISIBLE_DEVICES (as device 0); WebGPU through Vulkan, which Mesa's device-select
 * layer (in mesa-vulkan-drivers; it works over any vendor's driver) narrows to the GPU at the
 * slot's PCI address. A CPU slot runs on the CPU, or on WebGPU when WORKER_PROVIDER=webgpu asks
 * for it there (a machine without GPUs then has a software adapter such as Mesa's lavapipe).
 */
export function slotEnv(slot: Slot, base: NodeJS.ProcessEnv, slotCount: number): NodeJS.ProcessEnv {
  if (slot.kind === 'gpu') {
    const env: NodeJS.ProcessEnv = { WORKER_PROVIDER: slot.provider ?? 'cuda', CUDA_VISIBLE_DEVICES: String(slot.gpu), WORKER_DEVICE_ID: '0' };
    if (slot.provider === 'webgpu' && slot.pciAddress) {
      env['DRI_PRIME'] = driPrimeTag(slot.pciAddress);
      env['MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE'] = '1';
    }
    return env;
  }
  const env: NodeJS.ProcessEnv = { WORKER_PROVIDER: base['WORKER_PROVIDER'] === 'webgpu' ? 'webgpu' : 'cpu', CUDA_VISIBLE_DEVICES: '' };
  // CPU slots share the cores instead of each taking all of them.
  if (!base['WORKER_CPU_THREADS'] || base['WORKER_CPU_THREADS'] === '0') {
    env['WORKER_CPU_THREADS'] = String(Math.max(1, Math.floor(os.availableParallelism() / slotCount)));
  }
  return env;
}
