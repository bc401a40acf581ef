import { loadConfigOrExit } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { handleShutdownSignals } from '../shared/signals.js';
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

  // One Ctrl-C may arrive several times at once (terminal and npm): only a later one forces.
  handleShutdownSignals(logger, {
    graceful: () =>
      void running.close().then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      ),
    force: () => {
      logger.warn('killing the workers: their jobs go back to the queue');
      void running.kill(3000).finally(() => process.exit(130));
    },
  });
}

void main();
