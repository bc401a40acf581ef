import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, afterEach, beforeAll, expect, inject, it } from 'vitest';
import { startApi, type RunningApi } from '../api/server.js';
import { pidAlive } from '../autoscaler/local-driver.js';
import { loadConfig, type Config } from '../shared/config.js';
import { GENERATE_QUEUE } from '../shared/queues.js';
import { createRedis } from '../shared/redis.js';
import { leaderKey, WorkerRegistry, type WorkerRecord } from '../shared/worker-registry.js';
import { fastAutoscalerEnv, repoRoot, sleep, submitJob, waitFor } from './helpers/autoscaler.js';
import { pollJob, silentLogger } from './helpers/stack.js';
import { dropTestQueue } from './helpers/queue-teardown.js';

/**
 * Two autoscaler processes on one queue: one leads, the other stands by. Together they never run
 * more than the maximum; when the leader is killed (-9, no goodbye) the standby takes the lock
 * within seconds, adopts the orphaned workers from their heartbeats, and scales them like its own.
 */
let dir: string;
let env: Record<string, string>;
let config: Readonly<Config>;
let api: RunningApi;
let redis: ReturnType<typeof createRedis>;
let registry: WorkerRegistry;
let queue: Queue;
const processes = new Map<string, { child: ChildProcess; log: string }>();
const seen = new Map<string, WorkerRecord>();
let peak = 0;
let sampling = true;
let sampler: Promise<void>;

function startAutoscaler(id: string): ChildProcess {
  const log = path.join(dir, `${id}.log`);
  const fd = fs.openSync(log, 'a');
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'autoscaler/main.ts')], {
    cwd: repoRoot,
    env: { ...process.env, ...env, AUTOSCALER_ID: id },
    stdio: ['ignore', fd, fd],
  });
  fs.closeSync(fd);
  processes.set(id, { child, log });
  return child;
}
const logOf = (id: string) => fs.readFileSync(processes.get(id)!.log, 'utf8');
const leader = () => redis.get(leaderKey(config.queuePrefix));
const exitOf = (child: ChildProcess) =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve({ code: child.exitCode, signal: child.signalCode })
    : new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sdjobs-leader-'));
  env = fastAutoscalerEnv(dir, inject('tinyModelDir'), {
    AUTOSCALER_DOWNSCALE_DELAY_S: '2',
    AUTOSCALER_DOWNSCALE_TO_ZERO_DELAY_S: '2',
    AUTOSCALER_INTERVAL_MS: '200',
    // The test counts starts: on a starved CI machine a 3 s lock can lapse between renewals, and a
    // lapsed lock is (rightly) a second start. The takeover does not depend on it.
    WORKER_LOCK_DURATION_MS: '15000',
  });
  config = loadConfig(env);
  api = await startApi(config, silentLogger);
  redis = createRedis(config.redisUrl, 'worker');
  registry = new WorkerRegistry(redis, config.queuePrefix);
  queue = new Queue(GENERATE_QUEUE, { connection: redis, prefix: config.queuePrefix });
  sampler = (async () => {
    while (sampling) {
      const records = await registry.list().catch(() => [] as WorkerRecord[]);
      peak = Math.max(peak, records.length);
      for (const r of records) seen.set(r.id, r);
      await sleep(50);
    }
  })();
});

afterAll(async () => {
  sampling = false;
  await sampler;
  for (const { child } of processes.values()) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  // Orphans of a killed autoscaler, if a test failed before they were stopped.
  for (const r of seen.values()) if (pidAlive(r.pid)) process.kill(r.pid, 'SIGKILL');
  await api?.close();
  await dropTestQueue(queue, redis, config.queuePrefix);
  fs.rmSync(dir, { recursive: true, force: true });
});

afterEach((ctx) => {
  if (ctx.task.result?.state !== 'fail' && !process.env['SHOW_AUTOSCALER_LOGS']) return;
  for (const id of processes.keys()) console.error(`--- ${id} ---\n${logOf(id).slice(-15_000)}`);
});

it('runs one leader; the standby takes over a killed leader, adopts its workers and never exceeds max', async () => {
  const a = startAutoscaler('as-a');
  await waitFor('as-a to lead', async () => (await leader()) === 'as-a', 20_000);
  const b = startAutoscaler('as-b');
  await waitFor('as-b to stand by', () => logOf('as-b').includes('autoscaler starting'), 20_000);
  await sleep(500);
  expect(await leader()).toBe('as-a');

  // A burst: the leader starts both workers; the standby starts none.
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) ids.push(await submitJob(api.url, { prompt: `burst ${i}`, img_size: 512, num_inference_steps: 40, seed: i }));
  const orphans = await waitFor('two workers from as-a', async () => {
    const records = await registry.list();
    return records.length === 2 && records.every((r) => r.state !== 'starting') ? records : null;
  });
  expect(logOf('as-b')).not.toContain('worker started');

  // The leader dies without a word; its workers keep running as orphans.
  a.kill('SIGKILL');
  await exitOf(a);
  const killedAt = Date.now();
  await waitFor('as-b to take over', async () => (await leader()) === 'as-b', 10_000);
  const takeoverMs = Date.now() - killedAt;
  await waitFor('as-b to adopt both workers', () => (logOf('as-b').match(/adopted an orphaned worker/g) ?? []).length === 2, 10_000);
  for (const o of orphans) expect(pidAlive(o.pid)).toBe(true);

  // Every job of the burst ran once, on the two original workers; no third worker appeared.
  for (const id of ids) expect((await pollJob(api.url, id, 100)).status).toBe('succeeded');
  const jobs = await Promise.all(ids.map((id) => queue.getJob(id)));
  expect(jobs.map((j) => j?.attemptsStarted)).toEqual(ids.map(() => 1));
  expect(new Set(jobs.map((j) => j?.returnvalue.workerId))).toEqual(new Set(orphans.map((o) => o.id)));
  expect(peak).toBe(2);
  expect([...seen.keys()].sort()).toEqual(orphans.map((o) => o.id).sort());
  // Takeover within the lock's TTL plus a renewal period or so.
  expect(takeoverMs).toBeLessThan(10_000);

  // The new leader scales the adopted workers like its own: down to zero when idle.
  await waitFor('as-b to stop the adopted workers', async () => (await registry.list()).length === 0, 20_000);
  await waitFor('the orphan processes to exit', () => orphans.every((o) => !pidAlive(o.pid)), 10_000);

  // And up again from zero for new work.
  const late = await submitJob(api.url, { prompt: 'after the takeover', img_size: 64, num_inference_steps: 3 });
  expect((await pollJob(api.url, late, 100)).status).toBe('succeeded');
  expect(peak).toBe(2);

  // A graceful stop drains its workers, releases the lock and exits 0.
  b.kill('SIGTERM');
  expect(await exitOf(b)).toEqual({ code: 0, signal: null });
  expect(await leader()).toBeNull();
  await waitFor('no workers left', async () => (await registry.list()).length === 0, 10_000);
  expect([...seen.values()].every((r) => !pidAlive(r.pid))).toBe(true);
});
