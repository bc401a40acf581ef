import { Router } from 'express';
import { failFastOnRedis } from '../../shared/errors.js';
import type { ModelQueueLoads, QueueLoad, QueueLoadSource } from '../../shared/queue-load.js';
import type { AutoscalerStatus, WorkerDirectory, WorkerRecord } from '../../shared/worker-registry.js';
import type { Config } from '../../shared/config.js';
import type { JobQueue } from '../../shared/job-queue.js';
import { visibleTo } from '../auth.js';
import { HttpError, sendError } from '../http-errors.js';

export interface WorkersRouteDeps {
  config: Readonly<Config>;
  /** Reads a running job's owner: with API keys, a worker shows only the caller's own job id. */
  queue?: Pick<JobQueue, 'get'> | undefined;
  workers?: WorkerDirectory | undefined;
  queueLoad?: (Pick<QueueLoadSource, 'read'> & Partial<Pick<ModelQueueLoads, 'readModel' | 'readAll'>>) | undefined;
}

const DEADLINE_MS = 1500;

/**
 * What runs and what waits: `GET /v1/workers` lists the registered workers (slot, state, current
 * job, uptime, jobs done) with the autoscaler's view; `GET /v1/queue` gives the queue's full load,
 * the number KEDA's metrics-api scaler reads (`valueLocation: load`).
 */
export function workersRouter(deps: WorkersRouteDeps): Router {
  const router = Router();

  router.get('/v1/workers', async (_req, res, next) => {
    if (!deps.workers) return void sendError(res, notConfigured('worker registry'));
    try {
      const now = Date.now();
      const directory = deps.workers;
      const [workers, autoscaler] = await withRedis(Promise.all([directory.list(), directory.autoscaler()]));
      // Another key's job id is not this caller's to see (its state, busy, still is).
      const shown = await withRedis(
        Promise.all(
          workers.map(async (w) => {
            if (w.currentJob === null || deps.config.auth.apiKeyHashes.length === 0) return w;
            const job = deps.queue ? await deps.queue.get(w.currentJob) : null;
            return job && visibleTo(deps.config, res, job) ? w : { ...w, currentJob: null };
          }),
        ),
      );
      res.json({ count: workers.length, workers: shown.map((w) => workerView(w, now)), autoscaler: autoscaler ? autoscalerView(autoscaler) : null });
    } catch (err) {
      next(err);
    }
  });

  // ?model=<name>: that model's load alone (each model's KEDA ScaledObject reads its own).
  router.get('/v1/queue', async (req, res, next) => {
    if (!deps.queueLoad) return void sendError(res, notConfigured('queue load'));
    try {
      const model = req.query['model'];
      if (model !== undefined) {
        const known = typeof model === 'string' && deps.config.models.some((m) => m.name === model);
        if (!known || !deps.queueLoad.readModel) {
          throw new HttpError(400, 'invalid_request', `model must name a served model: ${deps.config.models.map((m) => m.name).join(', ')}`, 'model');
        }
        const load = await withRedis(deps.queueLoad.readModel(model as string));
        return void res.json({ model, ...queueView(load as QueueLoad) });
      }
      const load = await withRedis(deps.queueLoad.read());
      const byModel = deps.queueLoad.readAll ? await withRedis(deps.queueLoad.readAll()) : null;
      res.json({ model: null, ...queueView(load), ...(byModel ? { models: Object.fromEntries([...byModel].map(([name, l]) => [name, queueView(l)])) } : {}) });
    } catch (err) {
      next(err);
    }
  });

  return router;
}

export function workerView(w: WorkerRecord, now: number) {
  return {
    id: w.id,
    slot: w.slot,
    state: w.state,
    current_job: w.currentJob,
    uptime_s: Math.max(0, Math.round((now - w.startedAt) / 100) / 10),
    jobs_done: w.jobsDone,
    jobs_failed: w.jobsFailed,
    started_at: new Date(w.startedAt).toISOString(),
    last_seen_at: new Date(w.lastSeenAt).toISOString(),
    host: w.host,
    pid: w.pid,
    model: w.model,
    paused: w.paused ?? null,
  };
}

function autoscalerView(s: AutoscalerStatus) {
  return {
    leader: s.leader,
    host: s.host,
    updated_at: new Date(s.at).toISOString(),
    desired: s.desired,
    target: s.target,
    load: s.load,
    min_workers: s.bounds.min,
    max_workers: s.bounds.max,
    last_decision: s.lastDecision ? { action: s.lastDecision.action, reason: s.lastDecision.reason, at: new Date(s.lastDecision.at).toISOString() } : null,
    models: (s.models ?? []).map((m) => ({
      name: m.name,
      load: m.load,
      desired: m.desired,
      target: m.target,
      workers: m.workers,
      min_workers: m.bounds.min,
      max_workers: m.bounds.max,
      oldest_waiting_since: m.oldestWaitingAt === null ? null : new Date(m.oldestWaitingAt).toISOString(),
      last_decision: m.lastDecision ? { action: m.lastDecision.action, reason: m.lastDecision.reason, at: new Date(m.lastDecision.at).toISOString() } : null,
    })),
    slots: s.slots.map((slot) => ({
      id: slot.id,
      kind: slot.kind,
      state: slot.state,
      worker: slot.workerId,
      reason: slot.reason,
      until: slot.until === null ? null : new Date(slot.until).toISOString(),
    })),
  };
}

export function queueView(load: QueueLoad) {
  return {
    load: load.load,
    waiting: load.waiting,
    prioritized: load.prioritized,
    delayed_due: load.delayedDue,
    active: load.active,
    delayed: load.delayed,
    paused: load.paused,
    at: new Date(load.at).toISOString(),
  };
}

function notConfigured(what: string): HttpError {
  return new HttpError(501, 'not_configured', `This API was started without a ${what}.`);
}

/** A dead Redis answers 503 at once, like the job routes. */
function withRedis<T>(promise: Promise<T>): Promise<T> {
  return failFastOnRedis(promise, DEADLINE_MS);
}
