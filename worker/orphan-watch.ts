import os from 'node:os';
import type { Redis } from 'ioredis';
import type { Config } from '../shared/config.js';
import type { Logger } from '../shared/logger.js';
import { pidAlive } from '../shared/process-alive.js';
import { WorkerRegistry } from '../shared/worker-registry.js';

/**
 * A worker started by an autoscaler (WORKER_PARENT_PID) belongs to it. When that autoscaler dies
 * another one on this machine adopts the worker (its status then lists the worker in a slot); a
 * worker that neither its parent nor a current autoscaler on this machine claims for the grace
 * period (3 leader lock lifetimes, at least 10 s) finishes its job and exits, so an `npm start`
 * killed outright leaves no worker behind. Resolves to a function that stops watching.
 */
export function watchForAdoption(deps: {
  config: Pick<Readonly<Config>, 'worker' | 'autoscaler' | 'queuePrefix'>;
  connection: Redis;
  workerId: string;
  logger: Logger;
  onOrphaned: () => void;
  intervalMs?: number;
}): () => void {
  const parent = deps.config.worker.parentPid;
  if (parent === undefined) return () => undefined;
  const graceMs = Math.max(10_000, 3 * deps.config.autoscaler.leaderTtlMs);
  const registry = new WorkerRegistry(deps.connection, deps.config.queuePrefix);
  const host = os.hostname();
  let orphanSince: number | null = null;
  let checking = false;

  const claimed = async (): Promise<boolean> => {
    if (pidAlive(parent)) return true;
    const status = await registry.autoscaler().catch(() => null);
    return status !== null && status.host === host && Date.now() - status.at < graceMs && status.slots.some((s) => s.workerId === deps.workerId);
  };

  const timer = setInterval(() => {
    if (checking) return;
    checking = true;
    void claimed()
      .then((ok) => {
        const now = Date.now();
        if (ok) {
          if (orphanSince !== null) deps.logger.info('adopted by an autoscaler');
          orphanSince = null;
          return;
        }
        if (orphanSince === null) {
          orphanSince = now;
          deps.logger.warn({ parentPid: parent, graceMs }, 'the autoscaler that started this worker is gone; waiting for another to adopt it');
        } else if (now - orphanSince >= graceMs) {
          clearInterval(timer);
          deps.logger.warn({ parentPid: parent }, `no autoscaler adopted this worker within ${Math.round(graceMs / 1000)} s: finishing the current job and exiting`);
          deps.onOrphaned();
        }
      })
      .finally(() => (checking = false));
  }, deps.intervalMs ?? 1000);
  timer.unref();
  return () => clearInterval(timer);
}
