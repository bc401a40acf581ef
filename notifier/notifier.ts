import { Worker } from 'bullmq';
import type { Config } from '../shared/config.js';
import { BullJobQueue } from '../shared/job-queue.js';
import { jobView, linkBase } from '../shared/job-view.js';
import type { Logger } from '../shared/logger.js';
import { WEBHOOK_QUEUE } from '../shared/queues.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { runShutdownSteps } from '../shared/shutdown.js';
import { AddressPolicy } from '../shared/webhooks/address-policy.js';
import { deliveryRecordTtlS, webhookOutboxFor, type DeliveryJobData } from '../shared/webhooks/deliveries.js';
import { TenantSecretStore } from '../shared/webhooks/tenant-secrets.js';
import { createDeliveryProcessor, deliveryBackoff } from './delivery-processor.js';
import { WebhookHttpClient } from './http-delivery.js';
import { Reconciler } from './reconciler.js';

/**
 * The notifier: delivers webhook messages from their own queue (so a slow or dead receiver holds
 * a notifier slot, never a GPU worker), and turns finished jobs into messages — from the live
 * job events and from a periodic sweep that catches what the live path missed.
 */
export interface RunningNotifier {
  /** Runs one sweep now (tests; operators get one every WEBHOOK_RECONCILE_INTERVAL_S). */
  sweep(): Promise<number>;
  close(): Promise<void>;
}

export async function startNotifier(config: Readonly<Config>, logger: Logger): Promise<RunningNotifier> {
  const { webhooks, jobs: jobSettings, queuePrefix: prefix } = config;
  if (webhooks.secrets.length === 0) logger.info('no WEBHOOK_SECRETS configured: only jobs made with an API key (signed with its own secrets) can ask for webhooks');

  const connection = createRedis(config.redisUrl, 'worker');
  const eventsConnection = createRedis(config.redisUrl, 'subscriber');
  connection.on('error', (err) => logger.debug({ err: err.message }, 'redis connection error'));
  eventsConnection.on('error', (err) => logger.debug({ err: err.message }, 'redis events connection error'));

  // Every model's queue: a job of any model may carry a webhook.
  const jobs = new BullJobQueue({ connection, eventsConnection, prefix, jobs: jobSettings, models: config.models });
  const outbox = webhookOutboxFor(connection, config);
  const tenantSecrets = new TenantSecretStore(connection, prefix);
  const http = new WebhookHttpClient(new AddressPolicy(webhooks.allow), webhooks.timeoutMs);
  const processor = createDeliveryProcessor({
    jobs,
    render: (record) => jobView(record, linkBase(config)),
    redis: connection,
    prefix,
    secretsFor: async (data) => (data.owner === undefined ? webhooks.secrets : (await tenantSecrets.live(data.owner)).map((s) => s.secret)),
    scheduleMs: webhooks.retryScheduleMs,
    recordTtlS: deliveryRecordTtlS(jobSettings.keepAgeS, webhooks.retryScheduleMs),
    post: (url, body, headers) => http.post(url, body, headers),
    logger,
  });
  const worker = new Worker<DeliveryJobData>(WEBHOOK_QUEUE, processor, {
    connection,
    prefix,
    concurrency: webhooks.concurrency,
    // An attempt takes at most the timeout; the lock outlives it comfortably.
    lockDuration: Math.max(30_000, webhooks.timeoutMs * 2),
    settings: { backoffStrategy: deliveryBackoff(webhooks.retryScheduleMs) },
    autorun: false,
  });
  worker.on('error', (err) => logger.error({ err }, 'webhook queue error'));

  const reconciler = new Reconciler({ jobs, outbox, redis: connection, prefix, logger });
  const stopListening = jobs.onFinished((jobId) => {
    reconciler.emitFinished(jobId).catch((err: unknown) => logger.warn({ err, jobId }, 'could not enqueue a webhook message; the sweep will'));
  });
  await jobs.ready();
  void worker.run().catch((err: unknown) => logger.error({ err }, 'webhook worker stopped'));
  await worker.waitUntilReady();

  const sweep = () =>
    reconciler.sweep().catch((err: unknown) => {
      logger.warn({ err }, 'webhook sweep failed');
      return 0;
    });
  await sweep();
  const timer = setInterval(() => void sweep(), webhooks.reconcileIntervalS * 1000);
  timer.unref();
  logger.info({ concurrency: webhooks.concurrency, attempts: webhooks.retryScheduleMs.length }, 'notifier ready');

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      clearInterval(timer);
      stopListening();
      const steps = [
        () => worker.close(),
        () => jobs.close(),
        () => outbox.close(),
        () => http.close(),
        () => closeRedis(connection),
        () => closeRedis(eventsConnection),
      ];
      await runShutdownSteps(steps, 5000, (err) => logger.error({ err }, 'notifier shutdown step failed'));
    })());
  return { sweep, close };
}
