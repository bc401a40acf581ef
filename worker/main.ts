import os from 'node:os';
import { ConfigError, loadConfig } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { publishModel } from '../shared/model-registry.js';
import { createRedis } from '../shared/redis.js';
import { createImageStore } from '../shared/storage/index.js';
import { JobConsumer } from './consumer.js';
import { loadPipeline } from './pipeline/index.js';
import { createProcessor } from './processor.js';

/** Worker process: load the model once, then take jobs until told to stop. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
  const workerId = config.worker.id ?? `${os.hostname()}-${process.pid}`;
  const logger = createLogger('worker', config.logLevel, { workerId });
  logger.info({ state: 'starting', modelDir: config.model.dir, provider: config.worker.provider }, 'worker starting');

  let pipeline;
  try {
    pipeline = await loadPipeline(config.model.dir, {
      provider: config.worker.provider,
      deviceId: config.worker.deviceId,
      cpuThreads: config.worker.cpuThreads,
      allowCpuFallback: config.worker.allowCpuFallback,
      logger,
    });
  } catch (err) {
    logger.fatal({ err }, `model could not be loaded: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(3);
  }

  const store = createImageStore(config.storage);
  const connection = createRedis(config.redisUrl, 'worker');
  await publishModel(connection, config.queuePrefix, {
    ...pipeline.capabilities,
    name: config.model.name,
    publishedAt: Date.now(),
  });

  const consumer = new JobConsumer({
    connection,
    prefix: config.queuePrefix,
    processor: createProcessor({ pipeline, store, logger, workerId }),
    logger,
    onStateChange: (state) => logger.info({ state }, `worker ${state}`),
  });
  await consumer.start();

  // First SIGTERM/SIGINT drains (the running job finishes); a second one exits at once.
  let signals = 0;
  const shutdown = (signal: string) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting without waiting for the running job');
      process.exit(130);
    }
    logger.info({ signal }, 'draining: finishing the current job, taking no new ones');
    void (async () => {
      const steps = [() => consumer.close(), () => pipeline.release(), () => store.close?.(), () => connection.quit()];
      for (const step of steps) {
        try {
          await step();
        } catch (err) {
          logger.error({ err }, 'shutdown step failed');
        }
      }
      process.exit(0);
    })();
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

void main();
