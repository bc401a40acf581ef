import os from 'node:os';
import { loadConfigOrExit } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { publishModel, publishModelStatus } from '../shared/model-registry.js';
import { withDeadline } from '../shared/errors.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { runShutdownSteps } from '../shared/shutdown.js';
import { handleShutdownSignals } from '../shared/signals.js';
import { createImageStore } from '../shared/storage/index.js';
import { createFilterSet, registerFilterModules } from './filters/registry.js';
import { Heartbeat } from './heartbeat.js';
import { createWorkerJobHooks } from './job-hooks.js';
import { loadPipeline } from './pipeline/index.js';
import { createJobRunner } from './job-runner.js';
import { reportModelUnavailable } from './model-unavailable.js';
import { watchForAdoption } from './orphan-watch.js';

/** Worker process: load the model once, then take jobs until told to stop. */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const workerId = config.worker.id ?? `${os.hostname()}-${process.pid}`;
  // The model this worker holds (WORKER_MODEL, else the default) is on every line.
  const logger = createLogger('worker', config.logLevel, { workerId, model: config.model.name });
  logger.info({ state: 'starting', modelDir: config.model.dir, queue: config.model.queue, provider: config.worker.provider }, 'worker starting');

  // Registered from the start, so `starting` (model loading) shows in GET /v1/workers.
  const connection = createRedis(config.redisUrl, 'worker');
  const heartbeat = new Heartbeat({
    redis: connection,
    prefix: config.queuePrefix,
    workerId,
    slot: config.worker.slot ?? (config.worker.provider === 'cpu' ? 'cpu' : `gpu${config.worker.deviceId}`),
    model: config.model.name,
    intervalMs: config.worker.heartbeatMs,
    logger,
  });
  heartbeat.start();

  // A stop before the worker takes jobs has nothing to drain: deregister and go, so the registry
  // does not show a starting worker until its heartbeat expires.
  const stopWhileLoading = () => void heartbeat.stop().finally(() => process.exit(0));
  process.once('SIGTERM', stopWhileLoading);
  process.once('SIGINT', stopWhileLoading);

  let pipeline;
  try {
    pipeline = await loadPipeline(config.model.dir, {
      provider: config.worker.provider,
      deviceId: config.worker.deviceId,
      cpuThreads: config.worker.cpuThreads,
      cpuSpinning: config.worker.cpuSpin,
      allowCpuFallback: config.worker.allowCpuFallback,
      webgpuLayout: config.worker.webgpuLayout,
      logger,
    });
  } catch (err) {
    const message = `model could not be loaded: ${err instanceof Error ? err.message : String(err)}`;
    logger.fatal({ err }, message);
    // The autoscaler reports exit code 3 with this line and tries the slot again after a backoff.
    process.stderr.write(`${message}\n`);
    await withDeadline(reportModelUnavailable({ connection, config, workerId, reason: message, logger }), 10_000, () => new Error('timed out')).catch(
      (reportErr: unknown) => logger.error({ err: reportErr }, 'could not report the model as unavailable'),
    );
    await heartbeat.stop();
    process.exit(3);
  }

  // The model's filters (nsfw when the export has a safety checker) and the operator's own.
  const filters = createFilterSet(pipeline, { grayscaleMaxChroma: config.filters.grayscaleMaxChroma });
  try {
    await registerFilterModules(filters, config.filters.modules, { modelDir: config.model.dir, logger });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    logger.fatal({ err }, message);
    process.stderr.write(`${message}\n`);
    await heartbeat.stop();
    process.exit(78);
  }
  logger.info(filters.describe(), 'image filters ready');

  const store = createImageStore(config.storage);
  await publishModel(connection, config.queuePrefix, {
    ...pipeline.capabilities,
    name: config.model.name,
    filters: filters.describe(),
    publishedAt: Date.now(),
  });
  await publishModelStatus(connection, config.queuePrefix, config.model.name, { state: 'available', error: null });

  // Cancel requests, run-time cap, webhook `started` events.
  const hooks = createWorkerJobHooks(config, connection, logger);
  // A storage outage pauses the worker (queued jobs keep their attempts) until storage answers.
  const { consumer, stopGate } = createJobRunner({
    config,
    connection,
    pipeline,
    store,
    filters: { filters, filterMaxTries: config.filters.maxTries },
    logger,
    workerId,
    hooks: hooks.processor,
    wrap: (processor) => heartbeat.track(processor),
    onStateChange: (state) => {
      logger.info({ state }, `worker ${state}`);
      heartbeat.setState(state);
    },
    onPaused: (reason) => heartbeat.setPaused(reason),
  });
  await hooks.listen(consumer);

  // First SIGTERM/SIGINT drains (the running job finishes); a deliberate second one exits at once.
  process.off('SIGTERM', stopWhileLoading);
  process.off('SIGINT', stopWhileLoading);
  const drain = async () => {
    // The drain has no deadline: the running job may take minutes (a second signal forces).
    await consumer.close().catch((err: unknown) => logger.error({ err }, 'shutdown step failed'));
    await runShutdownSteps(
      [() => stopOrphanWatch(), () => stopGate(), () => hooks.close(), () => heartbeat.stop(), () => filters.close(), () => pipeline.release(), () => store.close?.(), () => closeRedis(connection)],
      5000,
      (err) => logger.error({ err }, 'shutdown step failed'),
    );
    process.exit(0);
  };
  const shutdown = handleShutdownSignals(logger, {
    graceful: () => void drain(),
    force: () => {
      logger.warn('exiting without waiting for the running job (it goes back to the queue)');
      process.exit(130);
    },
  });
  // Started by an autoscaler that died and that no other autoscaler adopted: finish and go.
  const stopOrphanWatch = watchForAdoption({ config, connection, workerId, logger, onOrphaned: () => shutdown.request('orphaned') });
  // Whoever sees this worker die finds its jobs by their lock tokens, even one taken a moment
  // before the heartbeat named it.
  await heartbeat.setLockOwners(consumer.lockOwners);
  await consumer.start();
}

void main();
