import { execFile } from 'node:child_process';
import type { AutoscalerConfig } from '../shared/config.js';

/** A place for one worker: one GPU (one job on the GPU at a time), or a CPU share on a machine without GPUs. */
export interface Slot {
  id: string;
  kind: 'gpu' | 'cpu';
  /** The GPU index on this machine (CUDA_VISIBLE_DEVICES of the worker); GPU slots only. */
  gpu?: number;
}

export const gpuSlot = (index: number): Slot => ({ id: `gpu${index}`, kind: 'gpu', gpu: index });
export const cpuSlot = (index: number): Slot => ({ id: `cpu${index}`, kind: 'cpu' });

/** GPU indices from `nvidia-smi --query-gpu=index --format=csv,noheader`; [] when it is absent or fails. */
export function detectGpus(command = 'nvidia-smi'): Promise<number[]> {
  return new Promise((resolve) => {
    execFile(command, ['--query-gpu=index', '--format=csv,noheader'], { timeout: 10_000 }, (err, stdout) => {
      if (err) {
        resolve([]);
        return;
      }
      resolve(parseGpuIndices(stdout));
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

/**
 * The slots of this machine: the configured GPUs, else the GPUs nvidia-smi reports, else
 * AUTOSCALER_CPU_SLOTS CPU slots.
 */
export async function resolveSlots(
  config: Pick<AutoscalerConfig, 'gpus' | 'cpuSlots'>,
  detect: () => Promise<number[]> = () => detectGpus(),
): Promise<Slot[]> {
  const gpus = config.gpus === 'none' ? [] : config.gpus === 'detect' ? await detect() : config.gpus;
  if (gpus.length > 0) return gpus.map(gpuSlot);
  return Array.from({ length: config.cpuSlots }, (_, i) => cpuSlot(i));
}
