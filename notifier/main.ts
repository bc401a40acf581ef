import { loadConfigOrExit } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { handleShutdownSignals } from '../shared/signals.js';
import { startNotifier } from './notifier.js';

/** Notifier process: deliver webhooks until told to stop. */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger('notifier', config.logLevel);
  const notifier = await startNotifier(config, logger);
  // A delivery in flight finishes (at most WEBHOOK_TIMEOUT_MS); a deliberate second signal exits at once.
  handleShutdownSignals(logger, {
    graceful: () => void notifier.close().then(() => process.exit(0)),
    force: () => process.exit(130),
  });
}

void main();
