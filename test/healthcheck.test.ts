import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { checkHealth } from '../scripts/healthcheck.js';
import { loadConfig } from '../shared/config.js';
import { createRedis } from '../shared/redis.js';
import { WorkerRegistry, type WorkerRecord } from '../shared/worker-registry.js';
import { startNotifier } from '../notifier/notifier.js';
import { deletePrefix } from './helpers/autoscaler.js';
import { silentLogger, startStack } from './helpers/stack.js';

/**
 * scripts/healthcheck.ts, the containers' health checks (compose healthchecks, Kubernetes exec
 * probes), against the real Redis: each role is healthy only while it does its work.
 */
const prefix = `test-health-${randomUUID().slice(0, 8)}`;
const redis = createRedis(process.env['REDIS_URL'] ?? 'redis://127.0.0.1:6379', 'worker');
const config = (env: Record<string, string> = {}) => loadConfig({ QUEUE_PREFIX: prefix, LOG_LEVEL: 'silent', ...env });

afterAll(async () => {
  await deletePrefix(redis, prefix);
  redis.disconnect();
});

describe('healthcheck', () => {
  it('autoscaler: healthy while a leader ticks, unhealthy with no leader or a stale one', async () => {
    const registry = new WorkerRegistry(redis, prefix);
    expect(await checkHealth('autoscaler', config())).toMatchObject({ healthy: false, detail: expect.stringMatching(/no autoscaler/) });
    const status = { leader: 'a1', host: 'h', desired: 0, target: 0, load: 0, bounds: { min: 0, max: 1 }, lastDecision: null, slots: [] };
    const now = Date.now();
    await registry.putAutoscalerStatus({ ...status, at: now - 500 }, 60_000);
    expect((await checkHealth('autoscaler', config(), now)).healthy).toBe(true);
    await registry.putAutoscalerStatus({ ...status, at: now - 60_000 }, 60_000);
    expect(await checkHealth('autoscaler', config(), now)).toMatchObject({ healthy: false, detail: expect.stringMatching(/last ticked 60000 ms ago/) });
  });

  it('notifier: healthy while a notifier consumes the webhook queue', async () => {
    expect((await checkHealth('notifier', config())).healthy).toBe(false);
    const notifier = await startNotifier(config(), silentLogger);
    try {
      expect(await checkHealth('notifier', config())).toMatchObject({ healthy: true });
    } finally {
      await notifier.close();
    }
    expect((await checkHealth('notifier', config())).healthy).toBe(false);
  });

  it('worker: healthy while its heartbeat record is in the registry', async () => {
    expect(await checkHealth('worker', config())).toMatchObject({ healthy: false, detail: expect.stringMatching(/WORKER_ID/) });
    expect((await checkHealth('worker', config({ WORKER_ID: 'w-1' }))).healthy).toBe(false);
    const record: WorkerRecord = { id: 'w-1', slot: 'gpu0', state: 'ready', currentJob: null, startedAt: 1, lastSeenAt: Date.now(), jobsDone: 0, jobsFailed: 0, host: 'h', pid: 1, model: 'm' };
    await new WorkerRegistry(redis, prefix).put(record, 60_000);
    expect((await checkHealth('worker', config({ WORKER_ID: 'w-1' }))).healthy).toBe(true);
  });

  it('api: healthy when /readyz on its port answers 200, not when nothing listens', async () => {
    const stack = await startStack({ MODEL_DIR: inject('tinyModelDir'), STORAGE_DRIVER: 'local', STORAGE_LOCAL_DIR: `/tmp/${prefix}` }, { worker: false, notifier: false });
    try {
      const port = String(new URL(stack.api.url).port);
      expect(await checkHealth('api', config({ PORT: port, HOST: '0.0.0.0' }))).toMatchObject({ healthy: true });
      await stack.api.close();
      expect((await checkHealth('api', config({ PORT: port }))).healthy).toBe(false);
    } finally {
      await stack.close();
    }
  });

  it('answers unhealthy, naming Redis, when Redis is unreachable', async () => {
    const result = await checkHealth('autoscaler', config({ REDIS_URL: 'redis://127.0.0.1:1' }));
    expect(result).toMatchObject({ healthy: false, detail: expect.stringMatching(/Redis at redis:\/\/127\.0\.0\.1:1 is not reachable/) });
  });
});
