import { AsyncLocalStorage } from 'node:async_hooks';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger };

/**
 * Fields that belong on every log line written while one piece of work runs (the API's request
 * id, a worker's job id), without threading a child logger through every call.
 */
const logContext = new AsyncLocalStorage<Record<string, unknown>>();

/** Runs `fn` with `fields` added to every line any logger from `createLogger` writes inside it. */
export function withLogContext<T>(fields: Record<string, unknown>, fn: () => T): T {
  return logContext.run({ ...logContext.getStore(), ...fields }, fn);
}

export function currentLogContext(): Readonly<Record<string, unknown>> | undefined {
  return logContext.getStore();
}

const chindings = pino.symbols.chindingsSym;

/** JSON logs; every process names itself so lines from api, worker and autoscaler can be told apart. */
export function createLogger(
  processName: string,
  level: string,
  bindings: Record<string, unknown> = {},
  destination?: DestinationStream,
): Logger {
  const options: LoggerOptions = {
    level,
    base: { process: processName, pid: process.pid, ...bindings },
    mixin(_fields, _level, logger) {
      const context = logContext.getStore();
      if (!context) return {};
      // A child logger that already binds a field keeps its own value (no duplicate JSON keys).
      const bound = (logger as unknown as Record<symbol, string | undefined>)[chindings] ?? '';
      const extra: Record<string, unknown> = {};
      for (const [key, value] of Object.entries(context)) {
        if (!bound.includes(`"${key}":`)) extra[key] = value;
      }
      return extra;
    },
  };
  return destination ? pino(options, destination) : pino(options);
}
