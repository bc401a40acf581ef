import { loadConfigOrExit } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { startNotifier } from './notifier.js';

/** Notifier process: deliver webhooks until told to stop. */
async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger('notifier', config.logLevel);
  const notifier = await startNotifier(config, logger);
  // A delivery in flight finishes (at most WEBHOOK_TIMEOUT_MS); a second signal exits at once.
  let signals = 0;
  const stop = () => {
    signals += 1;
    if (signals > 1) process.exit(130);
    void notifier.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

void main();
