import { Job, Queue, UnrecoverableError } from 'bullmq';
import type { Redis } from 'ioredis';
import type { JobPayload } from './job-schema.js';
import type { JobResult } from './job-queue.js';
import { GENERATE_QUEUE } from './queues.js';

/**
 * Puts the job of a worker known to be dead back in the queue now. Left alone, BullMQ returns it
 * only once its lock lapses (up to WORKER_LOCK_DURATION_MS) and a live worker's stalled check
 * runs; whoever sees the worker exit (its autoscaler) knows sooner. It acts only while the dead
 * worker's lock token still holds the job, so a job that finished, or that another worker
 * already runs, is left alone. Like BullMQ's stalled check it counts the interruption, and a
 * job that has killed its worker more than `maxStalledCount` times fails (`worker_lost`) instead
 * of taking down worker after worker.
 */

export type RecoveryOutcome = 'requeued' | 'failed' | 'not-held' | 'gone';

/** BullMQ's stalled-job limit as JobConsumer sets it. */
export const MAX_STALLED_COUNT = 2;

export class JobRecovery {
  private readonly queues = new Map<string, Queue<JobPayload, JobResult>>();

  constructor(
    private readonly connection: Redis,
    private readonly prefix: string,
    private readonly maxStalledCount = MAX_STALLED_COUNT,
  ) {}

  private queueNamed(name: string): Queue<JobPayload, JobResult> {
    let queue = this.queues.get(name);
    if (!queue) {
      queue = new Queue<JobPayload, JobResult>(name, { connection: this.connection, prefix: this.prefix });
      queue.on('error', () => undefined);
      this.queues.set(name, queue);
    }
    return queue;
  }

  /**
   * The active jobs of `queueName` whose lock one of `owners` holds (a token `<owner>:<n>`, as a
   * worker's record names its BullMQ loops), with that token.
   */
  async heldBy(owners: readonly string[], queueName: string = GENERATE_QUEUE): Promise<Array<{ id: string; token: string }>> {
    if (owners.length === 0) return [];
    const queue = this.queueNamed(queueName);
    const active = await this.connection.lrange(queue.toKey('active'), 0, -1);
    if (active.length === 0) return [];
    const locks = await this.connection.mget(active.map((id) => `${queue.toKey(id)}:lock`));
    const held: Array<{ id: string; token: string }> = [];
    active.forEach((id, i) => {
      const token = locks[i];
      if (token && owners.some((owner) => token.startsWith(`${owner}:`))) held.push({ id, token });
    });
    return held;
  }

  /** `queue`: the queue of the dead worker's model (default: the default model's). */
  async requeue(jobId: string, token: string, why: string, queueName: string = GENERATE_QUEUE): Promise<RecoveryOutcome> {
    const queue = this.queueNamed(queueName);
    const job = await Job.fromId<JobPayload, JobResult>(queue, jobId);
    if (!job) return 'gone';
    const lock = await this.connection.get(`${queue.toKey(jobId)}:lock`);
    if (lock !== token) return 'not-held';
    const stalled = await this.connection.hincrby(queue.toKey(jobId), 'stc', 1);
    try {
      if (stalled > this.maxStalledCount) {
        await job.moveToFailed(new UnrecoverableError(`worker_lost: ${why}, ${stalled} times while running this job`), token);
        return 'failed';
      }
      // To the front of the wait list: the interrupted job is the next one taken.
      await job.moveToWait(token);
      return 'requeued';
    } catch (err) {
      // Lost the race (the lock changed hands or lapsed between the check and the move): nothing moved.
      await this.connection.hincrby(queue.toKey(jobId), 'stc', -1).catch(() => undefined);
      if (/lock/i.test((err as Error).message)) return 'not-held';
      throw err;
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
  }
}
