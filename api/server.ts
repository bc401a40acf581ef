import type { Server } from 'node:http';
import type { Config } from '../shared/config.js';
import { BullJobQueue } from '../shared/job-queue.js';
import { RedisIdempotencyStore } from '../shared/idempotency.js';
import type { Logger } from '../shared/logger.js';
import { readModel, readModelState } from '../shared/model-registry.js';
import { failFastOnRedis } from '../shared/errors.js';
import { BullQueueMonitor } from '../shared/queue-monitor.js';
import { WEBHOOK_QUEUE } from '../shared/queues.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { runShutdownSteps } from '../shared/shutdown.js';
import { createImageStore } from '../shared/storage/index.js';
import { WorkerRegistry } from '../shared/worker-registry.js';
import { BullQueueLoad } from '../shared/queue-load.js';
import { RetentionSweeper } from '../shared/retention.js';
import { createApp } from './app.js';
import { createMetrics } from './metrics.js';

export interface RunningApi {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** Builds the API's real dependencies from config and listens. `close` runs every step once. */
export async function startApi(config: Readonly<Config>, logger: Logger): Promise<RunningApi> {
  const connection = createRedis(config.redisUrl, 'api');
  const eventsConnection = createRedis(config.redisUrl, 'subscriber');
  connection.on('error', (err) => logger.debug({ err: err.message }, 'redis connection error'));
  eventsConnection.on('error', (err) => logger.debug({ err: err.message }, 'redis events connection error'));
  const queue = new BullJobQueue({
    connection,
    eventsConnection,
    prefix: config.queuePrefix,
    jobs: config.jobs,
    // A worker writes its record as it takes a job, and it lives three beats past the last one.
    workerGraceMs: 2 * config.worker.heartbeatMs,
  });
  const store = createImageStore(config.storage);
  const workers = new WorkerRegistry(connection, config.queuePrefix);
  const monitor = new BullQueueMonitor({
    connection,
    createEventsConnection: () => createRedis(config.redisUrl, 'subscriber'),
    prefix: config.queuePrefix,
    webhookQueue: WEBHOOK_QUEUE,
    onError: (err, jobId) => logger.debug({ err, jobId }, 'finished job could not be read for metrics'),
  });
  const metrics = config.metrics.enabled
    ? createMetrics({
        monitor,
        jobEvents: config.metrics.jobEvents ? monitor : undefined,
        webhookEvents: config.metrics.jobEvents ? monitor : undefined,
        workers,
      })
    : undefined;
  const queueLoad = new BullQueueLoad(connection, config.queuePrefix);
  // Finished jobs and their images go when JOB_KEEP_AGE_S / JOB_KEEP_COUNT say, idle or not.
  const retention = new RetentionSweeper({
    connection,
    prefix: config.queuePrefix,
    store,
    keepAgeS: config.jobs.keepAgeS,
    keepCount: config.jobs.keepCount,
    intervalMs: config.jobs.retentionIntervalS * 1000,
    logger,
  });
  retention.start();
  const app = createApp({
    config,
    queue,
    store,
    logger,
    presignImages: config.storage.driver === 's3' && config.storage.presignUrls,
    models: {
      get: (name) => readModel(connection, config.queuePrefix, name).catch(() => null),
      state: (name) => failFastOnRedis(readModelState(connection, config.queuePrefix, name), 1500),
    },
    idempotency: new RedisIdempotencyStore(connection, config.queuePrefix),
    metrics,
    monitor,
    workers,
    queueLoad,
  });
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(config.port, config.host, () => resolve(s));
    s.once('error', reject);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  const url = `http://${config.host === '0.0.0.0' ? '127.0.0.1' : config.host}:${port}`;

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      const steps = [
        () => new Promise<void>((resolve) => server.close(() => resolve())),
        () => retention.stop(),
        () => queue.close(),
        () => metrics?.close(),
        () => monitor.close(),
        () => queueLoad.close(),
        () => store.close?.(),
        () => closeRedis(connection),
        () => closeRedis(eventsConnection),
      ];
      await runShutdownSteps(steps, 3000, (err) => logger.error({ err }, 'api shutdown step failed'));
      server.closeAllConnections();
    })());
  return { server, url, close };
}
