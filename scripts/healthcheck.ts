import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { loadConfig, type Config } from '../shared/config.js';
import { WEBHOOK_QUEUE } from '../shared/queues.js';
import { closeRedis } from '../shared/redis.js';
import { WorkerRegistry } from '../shared/worker-registry.js';

/**
 * A container's health check, for compose `healthcheck` and Kubernetes exec probes:
 *   node dist/scripts/healthcheck.js api|autoscaler|notifier|worker
 * It reads the environment of the process it checks and exits 0 when that role does its work,
 * 1 with the reason on stderr when it does not (2 for a wrong argument).
 *  - api: GET /readyz on its port answers 200 (Redis and storage reachable).
 *  - autoscaler: a leader has written its status within a few control ticks: this one, or the
 *    leader it stands by for (a standby takes over within AUTOSCALER_LEADER_TTL_MS).
 *  - notifier: a consumer is connected to the webhook queue.
 *  - worker: its heartbeat record (WORKER_ID) is in the registry: it is loading, ready, busy or draining.
 */
export type HealthRole = 'api' | 'autoscaler' | 'notifier' | 'worker';
export const HEALTH_ROLES: readonly HealthRole[] = ['api', 'autoscaler', 'notifier', 'worker'];

export interface HealthResult {
  healthy: boolean;
  detail: string;
}

const REDIS_TIMEOUT_MS = 3000;

export async function checkHealth(role: HealthRole, config: Readonly<Config>, now = Date.now()): Promise<HealthResult> {
  if (role === 'api') return checkApi(config);
  // One connection attempt, no reconnects: a check answers within seconds either way.
  const redis = new Redis(config.redisUrl, { lazyConnect: true, connectTimeout: REDIS_TIMEOUT_MS, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    if (role === 'autoscaler') return await checkAutoscaler(redis, config, now);
    if (role === 'notifier') return await checkNotifier(redis, config);
    return await checkWorker(redis, config);
  } catch (err) {
    return { healthy: false, detail: `Redis at ${config.redisUrl} is not reachable: ${(err as Error).message}` };
  } finally {
    await closeRedis(redis).catch(() => redis.disconnect());
  }
}

async function checkApi(config: Readonly<Config>): Promise<HealthResult> {
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${config.port}/readyz`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(REDIS_TIMEOUT_MS) });
    const body = await res.text();
    return { healthy: res.ok, detail: `${url} answered ${res.status}${res.ok ? '' : `: ${body.slice(0, 300)}`}` };
  } catch (err) {
    return { healthy: false, detail: `${url}: ${(err as Error).message}` };
  }
}

async function checkAutoscaler(redis: Redis, config: Readonly<Config>, now: number): Promise<HealthResult> {
  const status = await new WorkerRegistry(redis, config.queuePrefix).autoscaler();
  if (!status) return { healthy: false, detail: `no autoscaler leads queue prefix ${config.queuePrefix}` };
  const { intervalMs, leaderTtlMs } = config.autoscaler;
  const maxAgeMs = Math.max(10_000, leaderTtlMs + 5 * intervalMs);
  const ageMs = now - status.at;
  return ageMs <= maxAgeMs
    ? { healthy: true, detail: `leader ${status.leader} on ${status.host} ticked ${ageMs} ms ago (target ${status.target}, load ${status.load})` }
    : { healthy: false, detail: `leader ${status.leader} last ticked ${ageMs} ms ago (more than ${maxAgeMs} ms)` };
}

async function checkNotifier(redis: Redis, config: Readonly<Config>): Promise<HealthResult> {
  const queue = new Queue(WEBHOOK_QUEUE, { connection: redis, prefix: config.queuePrefix });
  try {
    const consumers = (await queue.getWorkers()).length;
    return consumers > 0
      ? { healthy: true, detail: `${consumers} consumer(s) on the webhook queue` }
      : { healthy: false, detail: `no consumer on the webhook queue (prefix ${config.queuePrefix})` };
  } finally {
    await queue.close();
  }
}

async function checkWorker(redis: Redis, config: Readonly<Config>): Promise<HealthResult> {
  const id = config.worker.id;
  if (!id) return { healthy: false, detail: 'WORKER_ID is not set: the check cannot find this worker' };
  const record = (await new WorkerRegistry(redis, config.queuePrefix).list()).find((r) => r.id === id);
  return record
    ? { healthy: true, detail: `worker ${id} is ${record.state} (${record.jobsDone} jobs done)` }
    : { healthy: false, detail: `worker ${id} has no heartbeat in the registry` };
}

async function main(): Promise<void> {
  const role = process.argv[2] as HealthRole;
  if (!HEALTH_ROLES.includes(role)) {
    process.stderr.write(`usage: healthcheck ${HEALTH_ROLES.join('|')}\n`);
    process.exit(2);
  }
  let config: Readonly<Config>;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(1);
  }
  const result = await checkHealth(role, config);
  (result.healthy ? process.stdout : process.stderr).write(`${role}: ${result.detail}\n`);
  process.exit(result.healthy ? 0 : 1);
}

if (process.argv[1] && /healthcheck\.[jt]s$/.test(process.argv[1])) void main();
