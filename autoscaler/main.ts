import { loadConfigOrExit } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { startAutoscaler } from './autoscaler.js';

/**
 * Autoscaler process: watches the queue and runs workers on this machine's GPU slots between the
 * configured bounds. Run two for a standby that takes over when the leader dies. The first
 * SIGTERM/SIGINT drains the workers (each finishes its job); a second one kills them.
 */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger('autoscaler', config.logLevel);
  const running = await startAutoscaler(config, logger, { cwd: process.cwd() });

  let signals = 0;
  const shutdown = (signal: string) => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: killing the workers (their jobs go back to the queue)');
      running.driver.killAll();
      process.exit(130);
    }
    logger.info({ signal }, 'stopping: each worker finishes its current job first (signal again to force)');
    void running.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

void main();
