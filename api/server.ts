import type { Server } from 'node:http';
import type { Redis } from 'ioredis';
import type { Config } from '../shared/config.js';
import { BullJobQueue } from '../shared/job-queue.js';
import { RedisIdempotencyStore } from '../shared/idempotency.js';
import type { Logger } from '../shared/logger.js';
import { ModelCapabilitiesError, readModelCapabilities, type ModelCapabilities } from '../shared/model-capabilities.js';
import { readModel, readModelState, readUnavailableModel } from '../shared/model-registry.js';
import { failFastOnRedis } from '../shared/errors.js';
import { BullQueueMonitor } from '../shared/queue-monitor.js';
import { WEBHOOK_QUEUE } from '../shared/queues.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { runShutdownSteps } from '../shared/shutdown.js';
import { createImageStore } from '../shared/storage/index.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import { ModelQueueLoads } from '../shared/queue-load.js';
import { RetentionSweeper } from '../shared/retention.js';
import { createApp } from './app.js';
import { answerClientErrors } from './client-errors.js';
import { createMetrics } from './metrics.js';
import { createTenantLimiter } from './tenant-limits.js';
import { TenantSecretStore } from '../shared/webhooks/tenant-secrets.js';
import { webhookOutboxFor } from '../shared/webhooks/deliveries.js';

/** Resolves when `redis` is ready, fails to connect, or `ms` have passed; never rejects. */
function connected(redis: Redis, ms: number): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      redis.off('ready', done);
      redis.off('error', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    redis.once('ready', done);
    redis.once('error', done);
  });
}

export interface RunningApi {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** Builds the API's real dependencies from config and listens. `close` runs every step once. */
export async function startApi(config: Readonly<Config>, logger: Logger): Promise<RunningApi> {
  // From the export itself, before anything listens: request checks never wait for a worker.
  // Throws ModelCapabilitiesError (naming the file) when the export cannot be read.
  const models = new Map<string, ModelCapabilities & { name: string }>();
  for (const entry of config.models) {
    const model = await readModelCapabilities(entry.dir).catch((err: unknown) => {
      if (err instanceof ModelCapabilitiesError) err.model ??= entry.name;
      throw err;
    });
    models.set(entry.name, { ...model, name: entry.name });
    logger.info(
      { model: entry.name, queue: entry.queue, default: entry.isDefault, triggerWords: entry.triggerWords, defaultSize: model.defaultSize, fixedSize: model.fixedSize ?? null, dtype: model.dtype },
      'model capabilities read from the export',
    );
  }
  const connection = createRedis(config.redisUrl, 'api');
  const eventsConnection = createRedis(config.redisUrl, 'subscriber');
  connection.on('error', (err) => logger.debug({ err: err.message }, 'redis connection error'));
  eventsConnection.on('error', (err) => logger.debug({ err: err.message }, 'redis events connection error'));
  const queue = new BullJobQueue({
    connection,
    eventsConnection,
    prefix: config.queuePrefix,
    jobs: config.jobs,
    maxQueuedPerOwner: config.tenants.maxQueuedJobs,
    // A worker writes its record as it takes a job, and it lives three beats past the last one.
    workerGraceMs: 2 * config.worker.heartbeatMs,
    models: config.models,
  });
  const store = createImageStore(config.storage);
  const workers = new WorkerRegistry(connection, config.queuePrefix);
  const monitor = new BullQueueMonitor({
    connection,
    createEventsConnection: () => createRedis(config.redisUrl, 'subscriber'),
    prefix: config.queuePrefix,
    webhookQueue: WEBHOOK_QUEUE,
    generateQueues: config.models.map((m) => m.queue),
    onError: (err, jobId) => logger.debug({ err, jobId }, 'finished job could not be read for metrics'),
  });
  const queueLoad = new ModelQueueLoads(connection, config.queuePrefix, config.models);
  const metrics = config.metrics.enabled
    ? createMetrics({
        monitor,
        jobEvents: config.metrics.jobEvents ? monitor : undefined,
        webhookEvents: config.metrics.jobEvents ? monitor : undefined,
        workers,
        models: config.models,
        loads: queueLoad,
      })
    : undefined;
  const outbox = webhookOutboxFor(connection, config);
  // Finished jobs and their images go when JOB_KEEP_AGE_S / JOB_KEEP_COUNT say, idle or not.
  const retention = new RetentionSweeper({
    connection,
    prefix: config.queuePrefix,
    store,
    keepAgeS: config.jobs.keepAgeS,
    keepCount: config.jobs.keepCount,
    intervalMs: config.jobs.retentionIntervalS * 1000,
    logger,
    queues: config.models.map((m) => m.queue),
  });
  retention.start();
  const app = createApp({
    config,
    queue,
    store,
    logger,
    presignImages: config.storage.driver === 's3' && config.storage.presignUrls,
    models,
    publishedModels: { get: (name) => readModel(connection, config.queuePrefix, name).catch(() => null) },
    modelStates: {
      state: (name) => failFastOnRedis(readModelState(connection, config.queuePrefix, name), 1500),
      unavailable: (name) => failFastOnRedis(readUnavailableModel(connection, config.queuePrefix, name), 1500),
    },
    idempotency: new RedisIdempotencyStore(connection, config.queuePrefix),
    metrics,
    monitor,
    workers,
    queueLoad,
    webhooks: outbox,
    tenants: {
      secrets: new TenantSecretStore(connection, config.queuePrefix),
      limiter: createTenantLimiter(connection, config.queuePrefix, config.tenants, logger),
    },
  });
  // Listen once Redis answers (or after its connect timeout, to answer 503s while it is away), so
  // the first requests after boot do not fail on a connection still being opened.
  await connected(connection, 2500);
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(config.port, config.host, () => resolve(s));
    s.once('error', reject);
  });
  answerClientErrors(server, logger);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const url = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${port}`;

  // Queued jobs past their ttl_s end `expired` within about a second, whoever is watching.
  const expiry = setInterval(() => {
    queue.expireDue().catch((err: unknown) => logger.debug({ err }, 'expiry sweep failed'));
  }, 1000);
  expiry.unref();

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      clearInterval(expiry);
      const steps = [
        () => new Promise<void>((resolve) => server.close(() => resolve())),
        () => retention.stop(),
        () => queue.close(),
        () => metrics?.close(),
        () => monitor.close(),
        () => queueLoad.close(),
        () => outbox.close(),
        () => store.close?.(),
        () => closeRedis(connection),
        () => closeRedis(eventsConnection),
      ];
      await runShutdownSteps(steps, 3000, (err) => logger.error({ err }, 'api shutdown step failed'));
      server.closeAllConnections();
    })());
  return { server, url, close };
}
