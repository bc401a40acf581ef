import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { pino, type Logger } from 'pino';
import { startApi, type RunningApi } from '../../api/server.js';
import { startAutoscaler, type RunningAutoscaler, type StartAutoscalerOptions } from '../../autoscaler/autoscaler.js';
import type { DriverEvent } from '../../autoscaler/worker-driver.js';
import { loadConfig, type Config } from '../../shared/config.js';
import { GENERATE_QUEUE } from '../../shared/queues.js';
import { closeRedis, createRedis } from '../../shared/redis.js';
import { WorkerRegistry, type WorkerRecord } from '../../shared/worker-registry.js';

export const repoRoot = path.resolve(import.meta.dirname, '../..');

/**
 * Settings that keep autoscaler tests fast: short delays, quick heartbeats and a job lock that
 * lapses within seconds, so a killed worker's job is back in the queue soon.
 */
export function fastAutoscalerEnv(dir: string, modelDir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    QUEUE_PREFIX: `test-as-${randomUUID().slice(0, 8)}`,
    MODEL_DIR: modelDir,
    STORAGE_LOCAL_DIR: path.join(dir, 'images'),
    LOG_LEVEL: 'info',
    PORT: '0',
    MAX_STEPS: '1000',
    MAX_IMAGE_SIZE: '512',
    JOB_BACKOFF_MS: '50',
    WORKER_CPU_THREADS: '1',
    WORKER_HEARTBEAT_MS: '200',
    WORKER_LOCK_DURATION_MS: '3000',
    WORKER_STALLED_INTERVAL_MS: '1000',
    AUTOSCALER_GPUS: 'none',
    AUTOSCALER_CPU_SLOTS: '2',
    AUTOSCALER_MAX_WORKERS: '2',
    AUTOSCALER_INTERVAL_MS: '100',
    AUTOSCALER_UPSCALE_DELAY_S: '0.5',
    AUTOSCALER_DOWNSCALE_DELAY_S: '1.5',
    AUTOSCALER_DOWNSCALE_TO_ZERO_DELAY_S: '1.5',
    AUTOSCALER_STOP_GRACE_S: '60',
    AUTOSCALER_RESTART_BACKOFF_MS: '200',
    AUTOSCALER_LEADER_TTL_MS: '1500',
    ...extra,
  };
}

/** A pino logger writing to a file in `dir` (printed when a test fails, silent otherwise). */
export function fileLogger(dir: string, name: string): { logger: Logger; file: string } {
  const file = path.join(dir, `${name}.log`);
  return { logger: pino({ level: 'debug', base: { process: name } }, pino.destination({ dest: file, sync: true })), file };
}

export interface ScaledStack {
  dir: string;
  env: Record<string, string>;
  config: Readonly<Config>;
  api: RunningApi;
  running: RunningAutoscaler;
  registry: WorkerRegistry;
  queue: Queue;
  events: DriverEvent[];
  /** Most worker processes alive at once, counted from the driver's start/exit events. */
  peakProcesses(): number;
  /** Most workers in the registry at once, sampled every 50 ms. */
  peakRegistered(): number;
  logs(): string;
  close(): Promise<void>;
}

/** The API plus an in-process autoscaler spawning real worker processes, on a queue prefix of their own. */
export async function startScaledStack(
  modelDir: string,
  extra: Record<string, string> = {},
  options: Partial<StartAutoscalerOptions> = {},
): Promise<ScaledStack> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-as-'));
  const env = fastAutoscalerEnv(dir, modelDir, extra);
  const config = loadConfig(env);
  const api = await startApi(config, pino({ level: 'silent' }));
  const { logger, file } = fileLogger(dir, 'autoscaler');
  const workerLog = fs.openSync(path.join(dir, 'workers.log'), 'a');
  const running = await startAutoscaler(config, logger, {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdout: workerLog,
    ...options,
  });
  const events: DriverEvent[] = [];
  let alive = 0;
  let peak = 0;
  running.driver.onEvent((event) => {
    events.push(event);
    if (event.type === 'started' || event.type === 'adopted') peak = Math.max(peak, ++alive);
    if (event.type === 'exited') alive -= 1;
  });
  const redis = createRedis(config.redisUrl, 'worker');
  const registry = new WorkerRegistry(redis, config.queuePrefix);
  const queue = new Queue(GENERATE_QUEUE, { connection: redis, prefix: config.queuePrefix });
  let peakRegistered = 0;
  let sampling = true;
  const sample = async () => {
    while (sampling) {
      const records = await registry.list().catch(() => [] as WorkerRecord[]);
      peakRegistered = Math.max(peakRegistered, records.length);
      await sleep(50);
    }
  };
  const sampler = sample();
  return {
    dir,
    env,
    config,
    api,
    running,
    registry,
    queue,
    events,
    peakProcesses: () => peak,
    peakRegistered: () => peakRegistered,
    logs: () => `${fs.readFileSync(file, 'utf8')}\n--- workers ---\n${fs.readFileSync(path.join(dir, 'workers.log'), 'utf8')}`,
    close: async () => {
      sampling = false;
      await sampler;
      await running.close();
      await api.close();
      await queue.obliterate({ force: true }).catch(() => undefined);
      await queue.close();
      await deletePrefix(redis, config.queuePrefix).catch(() => undefined);
      await closeRedis(redis);
      fs.closeSync(workerLog);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Removes every key under a test's queue prefix (jobs, registry, leader lock, published model). */
export async function deletePrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 500);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== '0');
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `fn` until it returns a truthy value; throws with `what` after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 30_000, intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export async function submitJob(baseUrl: string, body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${baseUrl}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  if (res.status !== 202) throw new Error(`POST /v1/jobs answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { id: string }).id;
}

export async function getJob(baseUrl: string, id: string): Promise<Record<string, any>> {
  return (await (await fetch(`${baseUrl}/v1/jobs/${id}`)).json()) as Record<string, any>;
}

/** A job slow enough on the tiny model to be caught mid-run (many denoising steps at 512 px). */
export const SLOW_JOB = { prompt: 'a slow lighthouse', img_size: 512, num_inference_steps: 200, guidance_scale: 7.5, seed: 1 };

/** Waits until the job has run some steps but not all: it is mid-job. */
export async function waitMidJob(baseUrl: string, id: string): Promise<{ step: number; total: number }> {
  return waitFor(`job ${id} to be mid-run`, async () => {
    const job = await getJob(baseUrl, id);
    if (['succeeded', 'failed', 'canceled'].includes(job.status)) throw new Error(`job ${id} finished (${job.status}) before it was caught mid-run`);
    const p = job.progress as { step: number; total: number } | null;
    return job.status === 'running' && p && p.step >= 2 && p.step < p.total ? p : null;
  }, 60_000, 20);
}
