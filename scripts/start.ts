import fs from 'node:fs';
import path from 'node:path';
import { startApi } from '../api/server.js';
import { startAutoscaler } from '../autoscaler/autoscaler.js';
import { startNotifier } from '../notifier/notifier.js';
import { loadConfigOrExit } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { TINY_MODEL_NOTE, writeTinyModel } from './tiny-model/index.js';

/**
 * `npm start`: the whole service on one machine. The API and the autoscaler run here; the
 * autoscaler runs workers as child processes (one per GPU, or AUTOSCALER_CPU_SLOTS on a machine
 * without one), from zero when idle up to one per slot.
 */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger('start', config.logLevel);

  if (!fs.existsSync(path.join(config.model.dir, 'model_index.json'))) {
    if (!config.model.autoTiny) {
      logger.fatal({ modelDir: config.model.dir }, 'MODEL_DIR holds no model_index.json; point it at an ONNX export');
      process.exit(3);
    }
    logger.warn({ modelDir: config.model.dir }, `no model found: writing the tiny random-weight test model. ${TINY_MODEL_NOTE}`);
    await writeTinyModel(config.model.dir);
  }

  const api = await startApi(config, createLogger('api', config.logLevel));
  const autoscaler = await startAutoscaler(config, createLogger('autoscaler', config.logLevel), { cwd: process.cwd() });
  // Webhook deliveries, in-process: they hold sockets, never a GPU.
  const notifier = await startNotifier(config, createLogger('notifier', config.logLevel));
  let stopping = false;

  logger.info(
    { url: api.url },
    `ready: playground ${api.url}/  ·  API docs ${api.url}/docs  ·  POST ${api.url}/v1/jobs  ·  GET ${api.url}/v1/generate?prompt=a+red+fox  ·  GET ${api.url}/dreambooth?prompt=a+red+fox&img_size=64`,
  );

  const stop = () => {
    if (stopping) {
      autoscaler.driver.killAll();
      process.exit(130);
    }
    stopping = true;
    logger.info('stopping: each worker finishes its current job first (signal again to force)');
    // Every part closes even if another fails; a failure is logged and sets the exit code.
    void Promise.allSettled([autoscaler.close(), api.close(), notifier.close()]).then((results) => {
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      for (const { reason } of failed) logger.error({ err: reason }, 'shutdown step failed');
      process.exit(failed.length > 0 ? 1 : 0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

void main();
