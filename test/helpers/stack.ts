import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { pino } from 'pino';
import { startApi, type RunningApi } from '../../api/server.js';
import { loadConfig, type Config } from '../../shared/config.js';
import { publishModel } from '../../shared/model-registry.js';
import { GENERATE_QUEUE, WEBHOOK_QUEUE } from '../../shared/queues.js';
import { createRedis } from '../../shared/redis.js';
import { createImageStore, type ImageStore } from '../../shared/storage/index.js';
import { startNotifier, type RunningNotifier } from '../../notifier/notifier.js';
import { JobConsumer } from '../../worker/consumer.js';
import { createFilterSet, type FilterSet } from '../../worker/filters/registry.js';
import { Heartbeat } from '../../worker/heartbeat.js';
import { createWorkerJobHooks, type WorkerJobHooks } from '../../worker/job-hooks.js';
import { loadPipeline } from '../../worker/pipeline/index.js';
import type { Pipeline } from '../../worker/pipeline/types.js';
import { createProcessor } from '../../worker/processor.js';

export const silentLogger = pino({ level: 'silent' });

export interface TestStack {
  config: Readonly<Config>;
  api: RunningApi;
  store: ImageStore;
  /** A BullMQ handle on the test's own queue, for inspecting counts. */
  queue: Queue;
  /** The webhook notifier, unless started with `notifier: false`. */
  notifier: RunningNotifier | undefined;
  /** The in-process worker's registry record, unless started with `worker: false`. */
  heartbeat: Heartbeat | undefined;
  close(): Promise<void>;
}

/**
 * The API on a random port plus one in-process worker, on a queue prefix of their own so test
 * files never see each other's jobs on the shared Redis.
 */
export async function startStack(
  env: Record<string, string>,
  options: {
    worker?: boolean;
    pipeline?: Pipeline;
    notifier?: boolean;
    filters?: (pipeline: Pipeline, config: Readonly<Config>) => FilterSet;
    /** The catalogue model the in-process worker holds (default: the default model), on that model's queue. */
    workerModel?: string;
  } = {},
): Promise<TestStack> {
  const config = loadConfig({
    PORT: '0',
    QUEUE_PREFIX: `test-${randomUUID().slice(0, 8)}`,
    LOG_LEVEL: 'silent',
    JOB_BACKOFF_MS: '50',
    ...env,
  });
  const api = await startApi(config, silentLogger);
  const store = createImageStore(config.storage);
  const queueConnection = createRedis(config.redisUrl, 'worker');
  const queue = new Queue(GENERATE_QUEUE, { connection: queueConnection, prefix: config.queuePrefix });
  let consumer: JobConsumer | undefined;
  let heartbeat: Heartbeat | undefined;
  let hooks: WorkerJobHooks | undefined;
  let workerConnection: ReturnType<typeof createRedis> | undefined;
  let ownPipeline: Pipeline | undefined;
  if (options.worker !== false) {
    const held = options.workerModel === undefined ? config.model : config.models.find((m) => m.name === options.workerModel);
    if (!held) throw new Error(`no model ${options.workerModel} in the catalogue`);
    const pipeline = options.pipeline ?? (ownPipeline = await loadPipeline(held.dir, { cpuThreads: 1 }));
    workerConnection = createRedis(config.redisUrl, 'worker');
    // As worker/main.ts: the model's filters (or the test's own), published with the model.
    const filters = options.filters?.(pipeline, config) ?? createFilterSet(pipeline, { grayscaleMaxChroma: config.filters.grayscaleMaxChroma });
    await publishModel(workerConnection, config.queuePrefix, {
      ...pipeline.capabilities,
      name: held.name,
      filters: filters.describe(),
      publishedAt: Date.now(),
    });
    hooks = createWorkerJobHooks(config, workerConnection, silentLogger);
    // Registered like a real worker: the API shows a job as running only while a live worker names it.
    const beat = new Heartbeat({
      redis: workerConnection,
      prefix: config.queuePrefix,
      workerId: 'test-worker',
      slot: 'cpu0',
      model: held.name,
      intervalMs: config.worker.heartbeatMs,
      logger: silentLogger,
    });
    heartbeat = beat;
    beat.start();
    consumer = new JobConsumer({
      connection: workerConnection,
      prefix: config.queuePrefix,
      queue: held.queue,
      processor: beat.track(
        createProcessor({
          pipeline,
          store,
          logger: silentLogger,
          workerId: 'test-worker',
          filters,
          filterMaxTries: config.filters.maxTries,
          ...hooks.processor,
        }),
      ),
      logger: silentLogger,
      onStateChange: (state) => beat.setState(state),
    });
    await hooks.listen(consumer);
    await consumer.start();
  }
  const notifier = options.notifier === false ? undefined : await startNotifier(config, silentLogger);
  return {
    config,
    api,
    store,
    queue,
    notifier,
    heartbeat,
    close: async () => {
      await consumer?.close();
      await heartbeat?.stop();
      await hooks?.close();
      await notifier?.close();
      await api.close();
      await queue.obliterate({ force: true }).catch(() => undefined);
      const webhooks = new Queue(WEBHOOK_QUEUE, { connection: queueConnection, prefix: config.queuePrefix });
      await webhooks.obliterate({ force: true }).catch(() => undefined);
      await webhooks.close();
      // Cancel markers, delivery records, idempotency claims, the sweep cursor: the prefix's own keys.
      for await (const keys of queueConnection.scanStream({ match: `${config.queuePrefix}:*`, count: 500 })) {
        if ((keys as string[]).length > 0) await queueConnection.del(...(keys as string[]));
      }
      await queue.close();
      await queueConnection.quit();
      await workerConnection?.quit();
      await ownPipeline?.release();
      await store.close?.();
    },
  };
}

/** Polls a job until it is finished (or the test times out). */
export async function pollJob(baseUrl: string, id: string, intervalMs = 50): Promise<Record<string, any>> {
  for (;;) {
    const res = await fetch(`${baseUrl}/v1/jobs/${id}`);
    const body = (await res.json()) as Record<string, any>;
    if (['succeeded', 'failed', 'canceled'].includes(body.status)) return body;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
