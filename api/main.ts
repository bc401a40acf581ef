import { pino } from 'pino';
import { loadConfigOrExit } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { ModelCapabilitiesError } from '../shared/model-capabilities.js';
import { handleShutdownSignals } from '../shared/signals.js';
import { startApi } from './server.js';

async function main(): Promise<void> {
  const config = loadConfigOrExit();
  // Asynchronous writes: under load the lines queued behind a write in flight go out in one, not
  // one blocking write(2) per line (pino flushes what is left when the process exits).
  const logger = createLogger('api', config.logLevel, {}, pino.destination({ dest: 1, sync: false }));
  const api = await startApi(config, logger).catch((err: unknown) => {
    if (!(err instanceof ModelCapabilitiesError)) throw err;
    // The same exit code as a worker whose model does not load: not worth a restart loop.
    logger.fatal({ model: err.model, file: err.file }, `the served model${err.model ? ` ${err.model}` : ''} cannot be read: ${err.message}`);
    process.exit(3);
  });
  logger.info({ url: api.url }, `API listening on ${api.url}`);
  handleShutdownSignals(logger, {
    graceful: () => void api.close().then(() => process.exit(0)),
    force: () => process.exit(130),
  });
}

void main();
