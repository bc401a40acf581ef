import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { decodeFailure } from '../shared/job-queue.js';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { BUILTIN_FINETUNED_MODEL, BUILTIN_FINETUNED_SEED, BUILTIN_TRIGGER_WORD, defaultQueueFor } from '../shared/model-catalogue.js';
import { writeTinyModel } from '../scripts/tiny-model/index.js';
import { startOwnRedis, type OwnRedis } from '../test/helpers/redis-server.js';
import { startRestartableS3Server, type RestartableS3 } from '../test/helpers/s3-server.js';
import { descendants, pidAlive, readJsonLines, repoRoot, startService, waitForExit, type ServiceProcess } from '../test/helpers/service-process.js';

/**
 * The chaos lab: an AOF Redis and an S3 server of its own, the service as `npm start` runs it
 * (two CPU slots, the tiny model), and the bookkeeping that tells what happened to every job:
 * from Redis (its final state) and from the service's logs (how many runs of it completed).
 */

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function waitUntil<T>(what: string, fn: () => T | Promise<T>, timeoutMs: number, intervalMs = 100): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await Promise.resolve()
      .then(fn)
      .catch(() => undefined);
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export interface LabOptions {
  /** Workers' slots (AUTOSCALER_CPU_SLOTS). */
  slots: number;
  /** The job every experiment submits: slow enough to be caught mid-run. */
  job: Record<string, unknown>;
  verbose: boolean;
}

export class Lab {
  readonly dir: string;
  readonly logFile: string;
  readonly modelDir: string;
  /** The "fine-tuned" tiny model (other weights, trigger word `unqtkn`) for the two-model experiment. */
  readonly tunedDir: string;
  /** Every model queue of the two-model catalogue (the default's first): jobs are looked up in each. */
  private queues: Queue[] = [];
  service: ServiceProcess | null = null;
  private standby: ChildProcess | null = null;
  private admin!: Redis;
  private queue!: Queue;
  redis!: OwnRedis;
  s3!: RestartableS3;
  prefix = '';

  constructor(readonly options: LabOptions) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-chaos-'));
    this.logFile = path.join(this.dir, 'service.log');
    this.modelDir = path.join(this.dir, 'models', 'tiny-sd');
    this.tunedDir = path.join(this.dir, 'models', BUILTIN_FINETUNED_MODEL);
  }

  async setUp(): Promise<void> {
    await writeTinyModel(this.modelDir);
    await writeTinyModel(this.tunedDir, { seed: BUILTIN_FINETUNED_SEED });
    // Each restart spends a while LOADING its AOF, as a production Redis with data does: the
    // window in which a client that skips the ready check has its commands refused.
    this.redis = await startOwnRedis({ appendfsync: 'everysec', logFile: path.join(this.dir, 'redis.log'), keyLoadDelayUs: 50 });
    this.s3 = await startRestartableS3Server();
    this.admin = new Redis(this.redis.url, { maxRetriesPerRequest: null, enableReadyCheck: true, retryStrategy: () => 200 });
    this.admin.on('error', () => undefined);
    await this.admin.call('DEBUG', 'POPULATE', '15000', 'chaos-filler');
    await this.admin.bgrewriteaof();
    await waitUntil('the AOF rewrite', async () => /aof_rewrite_in_progress:0/.test(await this.admin.info('persistence')), 30_000);
  }

  /** A fresh queue prefix for the next experiment, so counts never mix. */
  async newPrefix(): Promise<void> {
    await Promise.all(this.queues.map((q) => q.close().catch(() => undefined)));
    this.prefix = `chaos-${randomUUID().slice(0, 8)}`;
    this.queues = [GENERATE_QUEUE, defaultQueueFor(BUILTIN_FINETUNED_MODEL, false)].map((name) => new Queue(name, { connection: this.admin, prefix: this.prefix }));
    for (const queue of this.queues) queue.on('error', () => undefined);
    this.queue = this.queues[0] as Queue;
  }

  /** The two-model catalogue (MODELS_JSON): tiny-sd (default) and tiny-sd-unqtkn (trigger word unqtkn). */
  catalogue(): string {
    return JSON.stringify({
      models: [
        { name: 'tiny-sd', dir: this.modelDir, default: true },
        { name: BUILTIN_FINETUNED_MODEL, dir: this.tunedDir, trigger_words: [BUILTIN_TRIGGER_WORD] },
      ],
    });
  }

  env(extra: Record<string, string> = {}): Record<string, string> {
    return {
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      REDIS_URL: this.redis.url,
      QUEUE_PREFIX: this.prefix,
      STORAGE_DRIVER: 's3',
      S3_ENDPOINT: this.s3.endpoint,
      S3_BUCKET: 'chaos',
      S3_CREATE_BUCKET: 'true',
      S3_ACCESS_KEY_ID: 'S3RVER',
      S3_SECRET_ACCESS_KEY: 'S3RVER',
      MODEL_DIR: this.modelDir,
      MODEL_NAME: 'tiny-sd',
      MODEL_AUTO_TINY: 'false',
      MAX_STEPS: '1000',
      MAX_IMAGE_SIZE: '512',
      AUTOSCALER_GPUS: 'none',
      AUTOSCALER_CPU_SLOTS: String(this.options.slots),
      AUTOSCALER_INITIAL_WORKERS: String(this.options.slots),
      AUTOSCALER_DOWNSCALE_DELAY_S: '120',
      AUTOSCALER_INTERVAL_MS: '250',
      AUTOSCALER_RESTART_BACKOFF_MS: '250',
      AUTOSCALER_LEADER_TTL_MS: '2000',
      AUTOSCALER_MODEL_RETRY_MAX_S: '2',
      WORKER_HEARTBEAT_MS: '500',
      JOB_BACKOFF_MS: '250',
      STORAGE_RETRY_MAX_DELAY_S: '1',
      ...extra,
    };
  }

  async startService(extra: Record<string, string> = {}): Promise<ServiceProcess> {
    this.service = await startService({ env: this.env(extra), logFile: this.logFile, via: 'npm', readyTimeoutMs: 120_000 });
    return this.service;
  }

  /** Waits until `n` workers are ready (their models loaded). */
  async workersReady(n = this.options.slots, timeoutMs = 120_000): Promise<void> {
    await waitUntil(`${n} ready workers`, async () => (await this.workers()).filter((w) => w.state !== 'starting').length >= n, timeoutMs, 200);
  }

  async workers(): Promise<{ id: string; pid: number; state: string; currentJob: string | null }[]> {
    const ids = await this.admin.zrange(`${this.prefix}:workers`, 0, -1);
    if (ids.length === 0) return [];
    const raws = await this.admin.mget(ids.map((id) => `${this.prefix}:worker:${id}`));
    return raws.flatMap((raw) => (raw ? [JSON.parse(raw) as { id: string; pid: number; state: string; currentJob: string | null }] : []));
  }

  /** Every process of the service now: npm, its shell, start.ts, the workers, a standby autoscaler. */
  async processes(): Promise<number[]> {
    const pids = new Set<number>();
    if (this.service) {
      if (pidAlive(this.service.pid)) pids.add(this.service.pid);
      for (const p of descendants(this.service.pid)) if (!p.cmd.includes('esbuild')) pids.add(p.pid);
    }
    if (this.standby?.pid && pidAlive(this.standby.pid)) pids.add(this.standby.pid);
    for (const w of await this.workers().catch(() => [])) if (pidAlive(w.pid)) pids.add(w.pid);
    return [...pids];
  }

  /** SIGTERM to npm and waits for every process to exit (drained). */
  async stopService(timeoutMs = 120_000): Promise<void> {
    const pids = await this.processes();
    if (this.service && pidAlive(this.service.pid)) process.kill(this.service.pid, 'SIGTERM');
    await waitForExit(pids, timeoutMs);
    this.service = null;
  }

  async startStandby(extra: Record<string, string> = {}): Promise<void> {
    const out = fs.openSync(this.logFile, 'a');
    this.standby = spawn(process.execPath, ['--import', 'tsx', 'autoscaler/main.ts'], {
      cwd: repoRoot,
      env: { ...process.env, ...this.env({ AUTOSCALER_ID: 'standby', ...extra }) },
      stdio: ['ignore', out, out],
      detached: true,
    });
    fs.closeSync(out);
  }

  async stopStandby(): Promise<void> {
    const pid = this.standby?.pid;
    if (pid && pidAlive(pid)) {
      process.kill(pid, 'SIGTERM');
      await waitForExit([pid], 120_000);
    }
    this.standby = null;
  }

  async leader(): Promise<string | null> {
    return this.admin.get(`${this.prefix}:autoscaler:leader`);
  }

  /** POST /v1/jobs; null when the service refused it or could not be reached (not submitted). */
  async submit(body: Record<string, unknown> = this.options.job): Promise<{ id: string } | { refused: number; code: string }> {
    const url = this.service?.url;
    if (!url) return { refused: 0, code: 'no_service' };
    try {
      const res = await fetch(`${url}/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...body, seed: Math.floor(Math.random() * 1e9) }),
        signal: AbortSignal.timeout(5000),
      });
      const json = (await res.json()) as { id?: string; error?: { code: string } };
      if (res.status === 202 && json.id) return { id: json.id };
      return { refused: res.status, code: json.error?.code ?? 'unknown' };
    } catch (err) {
      return { refused: 0, code: (err as Error).name };
    }
  }

  /** BullMQ's view of a job, read from Redis (the API may be down). */
  async jobState(id: string): Promise<{ state: string; code: string | null; processedOn: number | null; finishedOn: number | null; model?: string }> {
    let job = await this.queue.getJob(id);
    for (const queue of this.queues.slice(1)) job ??= await queue.getJob(id);
    if (!job) return { state: 'missing', code: null, processedOn: null, finishedOn: null };
    const state = await job.getState();
    return {
      state,
      code: state === 'failed' ? decodeFailure(job.failedReason).code : null,
      processedOn: job.processedOn ?? null,
      finishedOn: job.finishedOn ?? null,
      model: (job.data as { model?: string }).model,
    };
  }

  /** The service's log lines for this experiment's jobs. */
  logs(): Record<string, any>[] {
    return readJsonLines(this.logFile);
  }

  async tearDown(): Promise<void> {
    for (const pid of await this.processes().catch(() => [])) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
    await Promise.all(this.queues.map((q) => q.close().catch(() => undefined)));
    this.admin?.disconnect();
    await this.s3?.close().catch(() => undefined);
    await this.redis?.close().catch(() => undefined);
    if (!this.options.verbose) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** What happened to the jobs an experiment submitted. */
export interface Outcome {
  submitted: number;
  succeeded: number;
  failed: number;
  /** Failures with the code the experiment expects (model_unavailable for a broken model). */
  expectedFailures: number;
  /** Submissions the service refused (503), counted apart: nothing was queued for them. */
  refused: number;
  /** Submitted jobs that did not finish: missing, or still queued/running when the experiment ended. */
  lost: string[];
  /** Jobs whose run completed (images stored) more than once. */
  runTwice: string[];
  /** Jobs that started more than once (their worker died under them): expected under kills. */
  restarted: number;
  /** Runs completed from an earlier run's stored result (its completion had not reached Redis): no second generation. */
  reused: number;
}

export async function settle(lab: Lab, ids: string[], refused: number, timeoutMs: number, expectedFailure?: string): Promise<Outcome> {
  const deadline = Date.now() + timeoutMs;
  let states = new Map<string, Awaited<ReturnType<Lab['jobState']>>>();
  for (;;) {
    states = new Map(await Promise.all(ids.map(async (id) => [id, await lab.jobState(id).catch(() => ({ state: 'unreadable', code: null, processedOn: null, finishedOn: null }))] as const)));
    const open = [...states.values()].filter((s) => s.state !== 'completed' && s.state !== 'failed');
    if (open.length === 0 || Date.now() > deadline) break;
    await sleep(250);
  }
  let reused = 0;
  const succeededRuns = new Map<string, number>();
  const starts = new Map<string, number>();
  const wanted = new Set(ids);
  for (const line of lab.logs()) {
    if (!wanted.has(line.jobId)) continue;
    if (line.msg === 'job succeeded') succeededRuns.set(line.jobId, (succeededRuns.get(line.jobId) ?? 0) + 1);
    if (line.msg === 'job started') starts.set(line.jobId, (starts.get(line.jobId) ?? 0) + 1);
    if (typeof line.msg === 'string' && line.msg.startsWith('job result reused')) reused += 1;
  }
  const values = [...states.entries()];
  const failed = values.filter(([, s]) => s.state === 'failed');
  return {
    submitted: ids.length,
    succeeded: values.filter(([, s]) => s.state === 'completed').length,
    failed: failed.length,
    expectedFailures: failed.filter(([, s]) => s.code === expectedFailure).length,
    refused,
    lost: values.filter(([, s]) => s.state !== 'completed' && s.state !== 'failed').map(([id, s]) => `${id} (${s.state})`),
    runTwice: [...succeededRuns.entries()].filter(([, n]) => n > 1).map(([id, n]) => `${id} (${n} runs stored)`),
    restarted: [...starts.values()].filter((n) => n > 1).length,
    reused,
  };
}

/**
 * Keeps the service busy: submits a job whenever fewer than `depth` of its jobs are unfinished
 * (or `everyMs` has passed since the last refusal), up to `max` jobs, until stopped. Keeps the ids
 * of the accepted ones and counts refusals (503, API away).
 */
export class Load {
  readonly ids: string[] = [];
  refused = 0;
  private readonly finished = new Set<string>();
  private running = true;
  private readonly loop: Promise<void>;

  constructor(
    private readonly lab: Lab,
    private readonly everyMs: number,
    private readonly max: number,
    private readonly depth = 4,
    /** The body of the i-th submission; default the lab's job. */
    private readonly body?: (i: number) => Record<string, unknown>,
  ) {
    this.loop = this.run();
  }

  private async unfinished(): Promise<number> {
    for (const id of this.ids) {
      if (this.finished.has(id)) continue;
      const s = await this.lab.jobState(id).catch(() => null);
      if (s && (s.state === 'completed' || s.state === 'failed')) this.finished.add(id);
    }
    return this.ids.length - this.finished.size;
  }

  private async run(): Promise<void> {
    while (this.running && this.ids.length < this.max) {
      if ((await this.unfinished().catch(() => this.depth)) < this.depth) {
        const result = await this.lab.submit(this.body?.(this.ids.length + this.refused));
        if ('id' in result) this.ids.push(result.id);
        else {
          this.refused += 1;
          if (this.lab.options.verbose) process.stdout.write(`[load] refused: ${result.refused} ${result.code}\n`);
        }
      }
      await sleep(this.everyMs);
    }
  }

  /** Stops once `count` jobs were accepted (or `timeoutMs` passed): the load goes on through the recovery. */
  async stopAfter(count: number, timeoutMs = 120_000): Promise<void> {
    await waitUntil(`${count} accepted jobs`, () => this.ids.length >= Math.min(count, this.max), timeoutMs, 100).catch(() => undefined);
    await this.stop();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}
