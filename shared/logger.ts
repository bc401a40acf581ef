import { pino, type Logger } from 'pino';

export type { Logger };

/** JSON logs; every process names itself so lines from api, worker and autoscaler can be told apart. */
export function createLogger(processName: string, level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { process: processName, pid: process.pid, ...bindings } });
}
