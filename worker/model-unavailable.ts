import type { Redis } from 'ioredis';
import type { Config } from '../shared/config.js';
import { BullJobQueue } from '../shared/job-queue.js';
import type { Logger } from '../shared/logger.js';
import { publishModelStatus } from '../shared/model-registry.js';
import { WorkerRegistry } from '../shared/worker-registry.js';

export const MODEL_UNAVAILABLE = 'model_unavailable';

/**
 * What a worker does when its model cannot be loaded, before it exits: it records the model as
 * unavailable (the API then refuses new jobs for it with 503 and shows why), and, unless another
 * worker serves the model, fails the jobs already waiting for it with `model_unavailable` so no
 * client waits on a model that is not there. The autoscaler tries the model again with backoff.
 */
export async function reportModelUnavailable(deps: {
  connection: Redis;
  config: Pick<Readonly<Config>, 'queuePrefix' | 'model' | 'jobs'>;
  workerId: string;
  reason: string;
  logger: Logger;
}): Promise<void> {
  const { connection, config, logger } = deps;
  const prefix = config.queuePrefix;
  const model = config.model.name;
  await publishModelStatus(connection, prefix, model, { state: 'unavailable', error: deps.reason });
  const serving = (await new WorkerRegistry(connection, prefix).list()).filter(
    (w) => w.id !== deps.workerId && w.model === model && w.state !== 'starting',
  );
  if (serving.length > 0) {
    logger.warn({ model, serving: serving.map((w) => w.id) }, 'another worker serves this model: its queued jobs stay for it');
    return;
  }
  // This model's queue only: other models' jobs wait for their own workers.
  const queue = new BullJobQueue({ connection, prefix, jobs: config.jobs, models: [config.model] });
  try {
    const failed = await queue.failQueued(MODEL_UNAVAILABLE, `${deps.reason} (the job did not run; submit it again once the model is available)`);
    if (failed.length > 0) logger.warn({ model, jobs: failed.length }, `failed ${failed.length} queued job(s) with ${MODEL_UNAVAILABLE}`);
  } finally {
    await queue.close();
  }
}
