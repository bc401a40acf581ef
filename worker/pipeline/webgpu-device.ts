/**
 * The Vulkan side of ONNX Runtime's WebGPU provider (Dawn over Vulkan on Linux): why no adapter
 * could be had, which adapter Dawn takes, and whether it runs float16 shaders.
 *
 * onnxruntime-node 1.30 does not expose the adapter Dawn picks (its `env.webgpu.adapter` and
 * `device` exist in ONNX Runtime Web only), nor take an adapter index. So the adapter is named
 * from Vulkan: `vulkaninfo --summary` (Debian's vulkan-tools) lists the devices the process can
 * see, and Dawn's own order for a high-performance request (discrete, integrated, CPU, other;
 * ties in enumeration order) names the one it takes. A worker of an autoscaler GPU slot sees one
 * GPU only (see autoscaler/slots.ts), so there is nothing to choose.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import type { InferenceSession } from 'onnxruntime-node';

/** What Vulkan shows this process: the loader library and the driver manifests (ICDs). */
export interface VulkanSetup {
  /** Path of libvulkan.so.1, when found. */
  loader: string | undefined;
  /** Driver manifests: file name and the Vulkan version each declares (Mesa's lavapipe from Mesa 22 says 1.3.230). */
  drivers: Array<{ file: string; apiVersion: string | undefined }>;
  /** Where the manifests were looked for. */
  searched: string[];
}

const LOADER_DIRS = [
  '/usr/lib/x86_64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu',
  '/usr/lib64',
  '/usr/lib',
  '/usr/local/lib',
];

/** The Vulkan loader's driver manifest search (VK_DRIVER_FILES / VK_ICD_FILENAMES replace it, VK_ADD_DRIVER_FILES adds to it). */
function icdLocations(env: NodeJS.ProcessEnv): string[] {
  const override = env['VK_DRIVER_FILES'] || env['VK_ICD_FILENAMES'];
  if (override) return override.split(':').filter(Boolean);
  const added = (env['VK_ADD_DRIVER_FILES'] ?? '').split(':').filter(Boolean);
  const home = os.homedir();
  const configDirs = (env['XDG_CONFIG_DIRS'] || '/etc/xdg').split(':');
  const dataDirs = (env['XDG_DATA_DIRS'] || '/usr/local/share:/usr/share').split(':');
  return [
    ...added,
    path.join(env['XDG_CONFIG_HOME'] || path.join(home, '.config'), 'vulkan/icd.d'),
    ...configDirs.map((d) => path.join(d, 'vulkan/icd.d')),
    '/etc/vulkan/icd.d',
    path.join(env['XDG_DATA_HOME'] || path.join(home, '.local/share'), 'vulkan/icd.d'),
    ...dataDirs.map((d) => path.join(d, 'vulkan/icd.d')),
  ].filter((dir, i, all) => all.indexOf(dir) === i);
}

function manifestApiVersion(file: string): string | undefined {
  try {
    const manifest = JSON.parse(readFileSync(file, 'utf8')) as { ICD?: { api_version?: unknown } };
    return typeof manifest.ICD?.api_version === 'string' ? manifest.ICD.api_version : undefined;
  } catch {
    return undefined;
  }
}

export function vulkanSetup(env: NodeJS.ProcessEnv = process.env): VulkanSetup {
  const libDirs = [...(env['LD_LIBRARY_PATH'] ?? '').split(':').filter(Boolean), ...LOADER_DIRS];
  const loader = libDirs.map((dir) => path.join(dir, 'libvulkan.so.1')).find((file) => existsSync(file));
  const searched = icdLocations(env);
  const drivers: VulkanSetup['drivers'] = [];
  for (const location of searched) {
    let files: string[] = [];
    if (location.endsWith('.json')) files = existsSync(location) ? [location] : [];
    else if (existsSync(location)) {
      try {
        files = readdirSync(location).filter((f) => f.endsWith('.json')).sort().map((f) => path.join(location, f));
      } catch {
        files = [];
      }
    }
    for (const file of files) drivers.push({ file: path.basename(file), apiVersion: manifestApiVersion(file) });
  }
  return { loader, drivers, searched };
}

const WEBGPU_DRIVER_HINT =
  'WebGPU needs a Vulkan driver Dawn accepts: the NVIDIA driver\'s Vulkan ICD (in containers ' +
  'NVIDIA_DRIVER_CAPABILITIES must include graphics), or Mesa ≥ 23 for AMD, Intel and the software ' +
  'lavapipe (Debian bookworm: mesa-vulkan-drivers and libvulkan1 from bookworm-backports); or set ' +
  'WORKER_ALLOW_CPU_FALLBACK=true to run on the CPU';

/**
 * ONNX Runtime's error for a WebGPU session that did not start, with the cause on the Vulkan
 * side when the adapter or device is what failed.
 */
export function describeWebGpuFailure(reason: string, setup: () => VulkanSetup = vulkanSetup): string {
  const adapterFailure = reason.match(/Failed to (?:get|create) (?:a )?WebGPU (?:adapter|device)[^\n]*/i);
  if (!adapterFailure) return reason;
  const vk = setup();
  let cause: string;
  if (!vk.loader) cause = 'no Vulkan loader (libvulkan.so.1) was found';
  else if (vk.drivers.length === 0) cause = `no Vulkan driver manifest was found (searched ${vk.searched.join(', ')})`;
  else {
    const drivers = vk.drivers.map((d) => (d.apiVersion ? `${d.file} (Vulkan ${d.apiVersion})` : d.file)).join(', ');
    cause = `the Vulkan drivers present (${drivers}) gave Dawn no usable device`;
  }
  return `no WebGPU adapter: ${cause} (ONNX Runtime: ${adapterFailure[0].trim()}). ${WEBGPU_DRIVER_HINT}`;
}

// ---------------------------------------------------------------------------------------------
// The adapter

export type VulkanDeviceType = 'discrete' | 'integrated' | 'virtual' | 'cpu' | 'other';

/** One device of `vulkaninfo --summary`. */
export interface VulkanDevice {
  /** Position in Vulkan's enumeration. */
  index: number;
  name: string;
  type: VulkanDeviceType;
  vendorId: number;
  deviceId: number;
  vendor: string;
  driver: string | undefined;
  driverInfo: string | undefined;
  apiVersion: string | undefined;
}

/** The adapter as the worker logs it. */
export interface WebGpuAdapterInfo {
  backend: 'vulkan';
  vendor: string;
  device: string;
  type: VulkanDeviceType;
  driver: string | undefined;
  apiVersion: string | undefined;
  /** How the adapter was named (Dawn's choice is not visible through ONNX Runtime's Node binding). */
  source: string;
  /** Set when the slot's GPU pinning did not narrow Vulkan to one device. */
  warning?: string;
}

const VENDORS: Record<number, string> = {
  0x10de: 'NVIDIA',
  0x1002: 'AMD',
  0x1022: 'AMD',
  0x8086: 'Intel',
  0x10005: 'Mesa',
  0x13b5: 'ARM',
  0x5143: 'Qualcomm',
  0x1010: 'Imagination',
  0x106b: 'Apple',
  0x1af4: 'virtio',
  0x15ad: 'VMware',
};

const DEVICE_TYPES: Record<string, VulkanDeviceType> = {
  PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: 'discrete',
  PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: 'integrated',
  PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: 'virtual',
  PHYSICAL_DEVICE_TYPE_CPU: 'cpu',
};

/** The `Devices:` part of `vulkaninfo --summary` (blocks `GPU<n>:` of `key = value` lines). */
export function parseVulkanSummary(text: string): VulkanDevice[] {
  const devices: VulkanDevice[] = [];
  const devicesAt = text.search(/^Devices:\s*$/m);
  if (devicesAt < 0) return devices;
  let fields: Record<string, string> | undefined;
  const flush = () => {
    if (!fields) return;
    const vendorId = Number.parseInt(fields['vendorID'] ?? '', 16);
    devices.push({
      index: devices.length,
      name: fields['deviceName'] ?? 'unknown',
      type: DEVICE_TYPES[fields['deviceType'] ?? ''] ?? 'other',
      vendorId: Number.isNaN(vendorId) ? 0 : vendorId,
      deviceId: Number.parseInt(fields['deviceID'] ?? '0', 16) || 0,
      vendor: VENDORS[vendorId] ?? (Number.isNaN(vendorId) ? 'unknown' : `0x${vendorId.toString(16)}`),
      driver: fields['driverName'],
      driverInfo: fields['driverInfo'],
      apiVersion: fields['apiVersion']?.split(' ')[0],
    });
    fields = undefined;
  };
  for (const line of text.slice(devicesAt).split(/\r?\n/)) {
    if (/^GPU\d+:\s*$/.test(line.trim())) {
      flush();
      fields = {};
      continue;
    }
    const kv = line.match(/^\s+(\w+)\s*=\s*(.*)$/);
    if (kv && fields) fields[kv[1]!] = kv[2]!.trim();
  }
  flush();
  return devices;
}

/** Dawn's rank for a high-performance adapter request (its SortAdapters): lower first. */
const DAWN_RANK: Record<VulkanDeviceType, number> = { discrete: 0, integrated: 1, cpu: 2, virtual: 3, other: 3 };

/** The device Dawn takes for ONNX Runtime's high-performance request: best rank, first enumerated. */
export function dawnAdapterChoice(devices: readonly VulkanDevice[]): VulkanDevice | undefined {
  return [...devices].sort((a, b) => DAWN_RANK[a.type] - DAWN_RANK[b.type] || a.index - b.index)[0];
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { env, timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
}

/**
 * The adapter the WebGPU provider runs on, as Vulkan names it, or why it cannot be named (no
 * vulkaninfo: install vulkan-tools). Never throws.
 */
export async function describeWebGpuAdapter(
  options: { env?: NodeJS.ProcessEnv; vulkaninfo?: string; timeoutMs?: number } = {},
): Promise<{ adapter: WebGpuAdapterInfo; devices: VulkanDevice[] } | { adapter: null; reason: string }> {
  const env = options.env ?? process.env;
  let text: string;
  try {
    text = await run(options.vulkaninfo ?? 'vulkaninfo', ['--summary'], env, options.timeoutMs ?? 10_000);
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    return { adapter: null, reason: missing ? 'vulkaninfo not found (install vulkan-tools to name the adapter)' : `vulkaninfo failed: ${(err as Error).message.split('\n')[0]}` };
  }
  const devices = parseVulkanSummary(text);
  const chosen = dawnAdapterChoice(devices);
  if (!chosen) return { adapter: null, reason: 'vulkaninfo lists no device' };
  // An autoscaler GPU slot pins its worker's Vulkan to one GPU through Mesa's device-select layer.
  const pinned = env['DRI_PRIME']?.startsWith('pci-') && env['MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE'] === '1';
  const warning =
    pinned && devices.length > 1
      ? `DRI_PRIME=${env['DRI_PRIME']} did not narrow Vulkan to the slot's GPU (${devices.length} devices visible): install mesa-vulkan-drivers, whose device-select layer does it`
      : undefined;
  return {
    adapter: {
      backend: 'vulkan',
      vendor: chosen.vendor,
      device: chosen.name,
      type: chosen.type,
      driver: chosen.driverInfo ?? chosen.driver,
      apiVersion: chosen.apiVersion,
      source: devices.length === 1 ? 'vulkaninfo: the only Vulkan device' : `vulkaninfo: Dawn's high-performance choice of ${devices.length} Vulkan devices`,
      ...(warning ? { warning } : {}),
    },
    devices,
  };
}

// ---------------------------------------------------------------------------------------------
// float16

/**
 * A float16 model of one node, y = x · x, to try the adapter's f16 shaders: ONNX Runtime's WebGPU
 * kernels use WGSL `f16`, which needs the adapter's shader-f16 feature, and without it the first
 * float16 node fails only when it runs ("Program Mul requires f16 but the device does not
 * support it"). Made with the tiny-model builder (test/webgpu.test.ts checks the bytes).
 */
export const FLOAT16_PROBE_MODEL = Uint8Array.from(
  Buffer.from(
    'CAgSEnNkLWpvYnMgdGlueS1tb2RlbBoBMTIYZmxvYXQxNiBwcm9iZTogeSA9IHggKiB4OkIKFAoBeAoBeBIBeRoEL011bCIDTXVsEghmMTZwcm9iZVoPCgF4EgoKCAgKEgQKAggEYg8KAXkSCgoICAoSBAoCCARCBAoAEBE=',
    'base64',
  ),
);
/** The probe's input, 1 … 4 as float16 bits, and what it must return (1, 4, 9, 16). */
const PROBE_INPUT = Uint16Array.from([0x3c00, 0x4000, 0x4200, 0x4400]);
const PROBE_OUTPUT = [0x3c00, 0x4400, 0x4880, 0x4c00];

let float16Probe: Promise<string | undefined> | undefined;

/**
 * Whether the WebGPU adapter runs float16 kernels: undefined when it does, else why not. Tried
 * once per process (every session shares one device).
 */
export function webgpuFloat16Unsupported(sessionOptions: InferenceSession.SessionOptions): Promise<string | undefined> {
  float16Probe ??= (async () => {
    let session: InferenceSession | undefined;
    try {
      session = await ort.InferenceSession.create(FLOAT16_PROBE_MODEL, sessionOptions);
      const out = await session.run({ x: new ort.Tensor('float16', PROBE_INPUT.slice(), [4]) });
      const y = Array.from(out['y']!.data as Uint16Array);
      return y.every((bits, i) => bits === PROBE_OUTPUT[i]) ? undefined : `a float16 multiply gave wrong results (${y.join(', ')})`;
    } catch (err) {
      return (err as Error).message.split('\n')[0]!.replace(/^.*?(Program \w+ requires f16)/, '$1');
    } finally {
      await session?.release().catch(() => undefined);
    }
  })();
  return float16Probe;
}

/** For tests: forget the probe's answer. */
export function resetWebGpuFloat16Probe(): void {
  float16Probe = undefined;
}
