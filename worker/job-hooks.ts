import type { Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Config } from '../shared/config.js';
import { JobControl, listenForCancels } from '../shared/job-control.js';
import { toJobRecord, type JobResult } from '../shared/job-queue.js';
import type { JobPayload } from '../shared/job-schema.js';
import { jobView, linkBase } from '../shared/job-view.js';
import type { Logger } from '../shared/logger.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { runShutdownSteps } from '../shared/shutdown.js';
import { webhookOutboxFor } from '../shared/webhooks/deliveries.js';
import type { ProcessorDeps, RunningJob } from './processor.js';

/**
 * What a worker does around a job besides running it: refuse a job canceled while it was being
 * taken, abort the running one when the API asks (Redis pub/sub), cap its run time, and emit the
 * webhook's `started` event. Finished events are the notifier's: it reads them from the queue, so
 * a worker that dies right after a job finishes loses none.
 */
export interface WorkerJobHooks {
  /** Spread into createProcessor's deps. */
  processor: Pick<ProcessorDeps, 'control' | 'onStarted' | 'maxRunS'>;
  /** Subscribes to cancel requests and aborts the matching job on `consumer`. */
  listen(consumer: { cancel(jobId: string, reason?: string): boolean }): Promise<void>;
  close(): Promise<void>;
}

export function createWorkerJobHooks(config: Readonly<Config>, connection: Redis, logger: Logger): WorkerJobHooks {
  const control = new JobControl(connection, config.queuePrefix, config.jobs.keepAgeS);
  const outbox = webhookOutboxFor(connection, config);
  let subscriber: Redis | undefined;
  let unsubscribe: (() => Promise<void>) | undefined;

  const onStarted = async (job: RunningJob, payload: JobPayload) => {
    if (!payload.webhook?.events.includes('started') || job.id === undefined) return;
    // The job as it is now (running), so a late delivery still says what the event saw.
    const bullJob = job as Partial<Job<JobPayload, JobResult>>;
    const record = bullJob.opts ? toJobRecord(bullJob as Job<JobPayload, JobResult>, 'active', null, []) : null;
    const snapshot = record ? jobView(record, linkBase(config)) : undefined;
    await outbox.emit({ id: job.id, payload }, 'started', record?.startedAt ?? Date.now(), snapshot);
  };

  return {
    processor: { control, onStarted, maxRunS: config.jobs.maxRunS },
    async listen(consumer) {
      subscriber = createRedis(config.redisUrl, 'subscriber');
      subscriber.on('error', (err) => logger.debug({ err: err.message }, 'redis cancel subscription error'));
      unsubscribe = await listenForCancels(subscriber, config.queuePrefix, (jobId) => {
        if (consumer.cancel(jobId, 'canceled by request')) logger.info({ jobId }, 'cancel requested: stopping at the next step');
      });
    },
    async close() {
      await runShutdownSteps(
        [() => unsubscribe?.(), () => (subscriber ? closeRedis(subscriber) : undefined), () => outbox.close()],
        5000,
        (err) => logger.error({ err }, 'job hooks shutdown step failed'),
      );
    },
  };
}
