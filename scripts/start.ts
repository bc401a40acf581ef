import { startApi, type RunningApi } from '../api/server.js';
import { startAutoscaler, type RunningAutoscaler } from '../autoscaler/autoscaler.js';
import { startNotifier, type RunningNotifier } from '../notifier/notifier.js';
import { loadConfigOrExit } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { ModelCapabilitiesError } from '../shared/model-capabilities.js';
import { handleShutdownSignals, watchParent } from '../shared/signals.js';
import { writeMissingTinyModels } from './tiny-model/index.js';

/**
 * `npm start`: the whole service on one machine. The API and the autoscaler run here; the
 * autoscaler runs workers as child processes (one per GPU, or AUTOSCALER_CPU_SLOTS on a machine
 * without one), from zero when idle up to one per slot.
 *
 * Stopping: one Ctrl-C, or SIGTERM/SIGINT to npm, to its process group or to this process, drains
 * once however many copies of the signal arrive (npm and the terminal both deliver it): every
 * worker finishes its job (within AUTOSCALER_STOP_GRACE_S), the API answers meanwhile, then all
 * exits. A deliberate second signal kills the workers and puts their jobs back in the queue. If
 * the process that started this one (npm) dies, this one stops the same way rather than stay
 * behind with its workers.
 */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger('start', config.logLevel);

  // Handled from the start: a signal during startup stops what has started so far.
  let api: RunningApi | undefined;
  let autoscaler: RunningAutoscaler | undefined;
  let notifier: RunningNotifier | undefined;
  let starting: Promise<void> = Promise.resolve();
  const stopGracefully = async () => {
    const since = Date.now();
    await starting.catch(() => undefined);
    // Workers first, while the API still answers: clients see their jobs finish.
    const drained = await Promise.allSettled([autoscaler?.close()]);
    const closed = await Promise.allSettled([api?.close(), notifier?.close()]);
    const failed = [...drained, ...closed].filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    for (const { reason } of failed) logger.error({ err: reason }, 'shutdown step failed');
    logger.info({ ms: Date.now() - since }, 'stopped: every worker finished its job and exited');
    process.exit(failed.length > 0 ? 1 : 0);
  };
  const shutdown = handleShutdownSignals(logger, {
    graceful: () => void stopGracefully(),
    force: () => {
      logger.warn('killing the workers: their jobs go back to the queue');
      void (autoscaler?.kill(3000) ?? Promise.resolve()).finally(() => process.exit(130));
    },
  });
  watchParent(() => shutdown.request('parent exited'));

  starting = (async () => {
    // Every catalogue model needs its export; the tiny ones (nothing configured, or MODEL_DIR
    // alone) are written when missing, each with its own weights.
    const missing = await writeMissingTinyModels(config, logger);
    if (missing) {
      logger.fatal({ model: missing.name, modelDir: missing.dir }, `model ${missing.name}: ${missing.dir} holds no model_index.json; point its dir (MODELS_FILE) or MODEL_DIR at an ONNX export`);
      process.exit(3);
    }
    api = await startApi(config, createLogger('api', config.logLevel)).catch((err: unknown) => {
      if (!(err instanceof ModelCapabilitiesError)) throw err;
      // As api/main.ts and a worker whose model does not load: exit 3, not worth a restart loop.
      logger.fatal({ model: err.model, file: err.file }, `the served model${err.model ? ` ${err.model}` : ''} cannot be read: ${err.message}`);
      process.exit(3);
    });
    autoscaler = await startAutoscaler(config, createLogger('autoscaler', config.logLevel), { cwd: process.cwd() });
    // Webhook deliveries, in-process: they hold sockets, never a GPU.
    notifier = await startNotifier(config, createLogger('notifier', config.logLevel));
  })();
  await starting;

  logger.info(
    { url: api?.url },
    `ready: playground ${api?.url}/  ·  API docs ${api?.url}/docs  ·  POST ${api?.url}/v1/jobs  ·  GET ${api?.url}/v1/generate?prompt=a+red+fox  ·  GET ${api?.url}/dreambooth?prompt=a+red+fox&img_size=64`,
  );
}

void main();
