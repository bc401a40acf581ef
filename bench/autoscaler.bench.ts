/**
 * The autoscaler from zero and back, with real worker processes on the tiny model (CPU slots):
 *   - cold start: first enqueue at zero workers → the scale-up decision → the worker process
 *     started → the worker ready (model loaded) → the first image stored;
 *   - a burst of jobs and the idle tail after it: the worker count over time, down to zero.
 * A benchmark, not a test: it prints figures and asserts nothing.
 *
 *   npm run bench:autoscaler
 *   BENCH_SLOTS=2 BENCH_BURST=16 BENCH_STEPS=20 BENCH_SIZE=512 npm run bench:autoscaler
 *
 * Needs Redis at REDIS_URL (default 127.0.0.1:6379); uses a queue prefix of its own.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { pino } from 'pino';
import { startApi } from '../api/server.js';
import { startAutoscaler, type TickReport } from '../autoscaler/autoscaler.js';
import { loadConfig } from '../shared/config.js';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import { writeTinyModel } from '../scripts/tiny-model/index.js';

const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const SLOTS = num('BENCH_SLOTS', 2);
const BURST = num('BENCH_BURST', 12);
const STEPS = num('BENCH_STEPS', 20);
const SIZE = num('BENCH_SIZE', 512);
const UPSCALE_S = num('BENCH_UPSCALE_DELAY_S', 1);
const DOWNSCALE_S = num('BENCH_DOWNSCALE_DELAY_S', 2);
const TO_ZERO_S = num('BENCH_DOWNSCALE_TO_ZERO_DELAY_S', 3);
const INTERVAL_MS = num('BENCH_INTERVAL_MS', 100);

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const secs = (ms: number | null | undefined) => (ms === null || ms === undefined ? '—' : `${(ms / 1000).toFixed(2)} s`);

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(tmpdir(), 'sd-bench-autoscaler-'));
  const modelDir = path.join(dir, 'model');
  await writeTinyModel(modelDir);
  const env: Record<string, string> = {
    REDIS_URL: process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379',
    QUEUE_PREFIX: `bench-as-${randomUUID().slice(0, 8)}`,
    MODEL_DIR: modelDir,
    STORAGE_LOCAL_DIR: path.join(dir, 'images'),
    PORT: '0',
    LOG_LEVEL: 'warn',
    MAX_IMAGE_SIZE: String(Math.max(SIZE, 64)),
    MAX_STEPS: String(Math.max(STEPS, 150)),
    WORKER_HEARTBEAT_MS: '200',
    AUTOSCALER_GPUS: 'none',
    AUTOSCALER_CPU_SLOTS: String(SLOTS),
    AUTOSCALER_MIN_WORKERS: '0',
    AUTOSCALER_UPSCALE_DELAY_S: String(UPSCALE_S),
    AUTOSCALER_DOWNSCALE_DELAY_S: String(DOWNSCALE_S),
    AUTOSCALER_DOWNSCALE_TO_ZERO_DELAY_S: String(TO_ZERO_S),
    AUTOSCALER_INTERVAL_MS: String(INTERVAL_MS),
  };
  const config = loadConfig(env);
  const silent = pino({ level: 'silent' });
  const api = await startApi(config, silent);
  const running = await startAutoscaler(config, silent, { cwd: root, env: { ...process.env, ...env }, stdout: 'ignore' });
  const redis = createRedis(config.redisUrl, 'worker');
  const registry = new WorkerRegistry(redis, config.queuePrefix);
  const queue = new Queue(GENERATE_QUEUE, { connection: redis, prefix: config.queuePrefix });
  const ticks: TickReport[] = [];
  running.autoscaler.onTick((t) => ticks.push(t));
  const driverEvents: Array<{ type: string; at: number }> = [];
  running.driver.onEvent((e) => driverEvents.push({ type: e.type, at: Date.now() }));

  const post = async (body: Record<string, unknown>) => {
    const res = await fetch(`${api.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (res.status !== 202) throw new Error(`POST /v1/jobs: ${res.status} ${await res.text()}`);
    return ((await res.json()) as { id: string }).id;
  };
  const finished = async (ids: string[]) => {
    const jobs = await Promise.all(ids.map((id) => queue.getJob(id)));
    return jobs.every((j) => j?.finishedOn) ? jobs : null;
  };

  try {
    while (!running.autoscaler.isLeader || ticks.length < 3) await sleep(20);

    // 1. Cold start.
    let readyAt: number | null = null;
    const t0 = Date.now();
    const first = await post({ prompt: 'cold start', img_size: 64, num_inference_steps: 4, seed: 1 });
    let firstJobs;
    while (!(firstJobs = await finished([first]))) {
      if (readyAt === null) {
        const ready = (await registry.list()).find((r) => r.state !== 'starting');
        // The worker writes its record the moment it turns ready: lastSeenAt is that moment.
        if (ready) readyAt = ready.lastSeenAt;
      }
      await sleep(10);
    }
    const decisionAt = ticks.find((t) => t.decision.action === 'up')?.at ?? null;
    const spawnedAt = driverEvents.find((e) => e.type === 'started')?.at ?? null;
    const job = firstJobs[0];
    const rows: Array<[string, string]> = [
      ['first enqueue → scale-up decision', secs(decisionAt && decisionAt - t0)],
      ['first enqueue → worker process spawned', secs(spawnedAt && spawnedAt - t0)],
      ['first enqueue → worker ready (model loaded)', secs(readyAt && readyAt - t0)],
      ['first enqueue → job started', secs(job?.processedOn && job.processedOn - t0)],
      ['first enqueue → first image stored (job done)', secs(job?.finishedOn && job.finishedOn - t0)],
    ];

    // 2. Burst and idle tail.
    const burstStart = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < BURST; i++) ids.push(await post({ prompt: `burst ${i}`, img_size: SIZE, num_inference_steps: STEPS, seed: i }));
    const timeline: Array<{ at: number; live: number; draining: number; busy: number; load: number; target: number }> = [];
    let burstDoneAt: number | null = null;
    let zeroAt: number | null = null;
    const deadline = Date.now() + 10 * 60_000;
    while (Date.now() < deadline) {
      const tick = ticks.at(-1);
      const workers = running.driver.workers();
      const point = {
        at: Date.now() - burstStart,
        live: workers.filter((w) => w.phase !== 'draining').length,
        draining: workers.filter((w) => w.phase === 'draining').length,
        busy: workers.filter((w) => w.phase === 'busy').length,
        load: tick?.load.load ?? 0,
        target: tick?.decision.target ?? 0,
      };
      const last = timeline.at(-1);
      if (!last || last.live !== point.live || last.draining !== point.draining || last.busy !== point.busy || last.target !== point.target) timeline.push(point);
      if (burstDoneAt === null && (await finished(ids))) burstDoneAt = Date.now() - burstStart;
      if (burstDoneAt !== null && workers.length === 0) {
        zeroAt = Date.now() - burstStart;
        break;
      }
      await sleep(50);
    }
    const burstJobs = (await Promise.all(ids.map((id) => queue.getJob(id)))).filter((j) => j !== undefined);
    const perWorker = new Map<string, number>();
    for (const j of burstJobs) perWorker.set(j.returnvalue?.workerId ?? '?', (perWorker.get(j.returnvalue?.workerId ?? '?') ?? 0) + 1);

    rows.push(
      [`burst of ${BURST} jobs (${SIZE}px, ${STEPS} steps) → all done`, secs(burstDoneAt)],
      ['burst start → back to zero workers', secs(zeroAt)],
      ['peak workers during the burst', String(Math.max(...timeline.map((p) => p.live + p.draining)))],
      ['jobs per worker', [...perWorker.values()].join(' / ')],
      ['jobs started more than once', String(burstJobs.filter((j) => (j.attemptsStarted ?? 1) > 1).length)],
    );

    console.log(
      `Autoscaler, tiny model on CPU (${cpus().length} cores, ${cpus()[0]?.model.trim()}), ${SLOTS} CPU slots, max ${SLOTS}, min 0; ` +
        `upscale ${UPSCALE_S} s, downscale ${DOWNSCALE_S} s, to zero ${TO_ZERO_S} s, control loop ${INTERVAL_MS} ms.`,
    );
    console.log('| measure | value |\n| --- | --- |');
    for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
    console.log('\nWorker timeline from the burst (changes only; live includes starting workers):');
    console.log('|      t | live | busy | draining | target | load |\n| ------ | ---- | ---- | -------- | ------ | ---- |');
    for (const p of timeline) {
      console.log(`| ${(p.at / 1000).toFixed(2).padStart(5)}s | ${String(p.live).padStart(4)} | ${String(p.busy).padStart(4)} | ${String(p.draining).padStart(8)} | ${String(p.target).padStart(6)} | ${String(p.load).padStart(4)} |`);
    }
  } finally {
    await running.close();
    await api.close();
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    // Everything under the bench's own prefix: jobs, registry, lock, published model.
    for (let cursor = '0'; ; ) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${config.queuePrefix}:*`, 'COUNT', 500);
      if (keys.length > 0) await redis.del(...keys);
      if ((cursor = next) === '0') break;
    }
    await closeRedis(redis);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
