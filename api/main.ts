import { loadConfigOrExit } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { handleShutdownSignals } from '../shared/signals.js';
import { startApi } from './server.js';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  const logger = createLogger('api', config.logLevel);
  const api = await startApi(config, logger);
  logger.info({ url: api.url }, `API listening on ${api.url}`);
  handleShutdownSignals(logger, {
    graceful: () => void api.close().then(() => process.exit(0)),
    force: () => process.exit(130),
  });
}

void main();
