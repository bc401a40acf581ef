import type { RequestHandler } from 'express';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ModelQueueLoads } from '../shared/queue-load.js';
import type { BullQueueMonitor, FinishedJob, QueueMonitor } from '../shared/queue-monitor.js';
import type { WorkerDirectory } from '../shared/worker-registry.js';

/**
 * Prometheus metrics of the API process. Queue counts are read when Prometheus scrapes; job
 * outcomes and durations come from the queue's event stream (`QueueMonitor.onJobFinished`), so one
 * API sees the jobs of every worker. One registry per `createMetrics` call: tests build as many
 * apps as they like without name clashes.
 */

const SECONDS = 1000;
const COUNTS_REUSE_MS = 500;
const WORKER_STATES = ['starting', 'ready', 'busy', 'draining'] as const;

export interface MetricsSources {
  /** Queue counts at scrape time (by queue, when it can tell them apart). */
  monitor?: (Pick<QueueMonitor, 'counts'> & Partial<Pick<BullQueueMonitor, 'countsByQueue'>>) | undefined;
  /** Job outcomes and durations; leave out on all API replicas but one, or each counts every job. */
  jobEvents?: Pick<QueueMonitor, 'onJobFinished'> | undefined;
  /** Webhook delivery outcomes from the notifier's queue. */
  webhookEvents?: Pick<QueueMonitor, 'onWebhookFinished'> | undefined;
  /** Workers by lifecycle state, from their heartbeats. */
  workers?: Pick<WorkerDirectory, 'list'> | undefined;
  /** Process metrics (CPU, memory, event loop, GC). */
  defaultMetrics?: boolean;
  /** The served models and their queues: series start at zero for each, and queue counts are told apart by model. */
  models?: readonly { name: string; queue: string }[];
  /** Each model's full load (waiting + prioritized + due retries + running) at scrape time. */
  loads?: Pick<ModelQueueLoads, 'readAll'> | undefined;
}

export interface ApiMetrics {
  readonly registry: Registry;
  /** Express middleware counting requests by route pattern and status. */
  readonly httpMiddleware: RequestHandler;
  /** Records one finished job; `QueueMonitor` events call it. */
  observeJob(job: FinishedJob): void;
  /** Records one webhook delivery attempt's outcome (`delivered`, `failed`, `gave_up`, …). */
  observeWebhookDelivery(outcome: string): void;
  /** Text exposition for `GET /metrics`. */
  render(): Promise<{ contentType: string; body: string }>;
  /** Stops listening to the queue's events. */
  close(): void;
}

export function createMetrics(sources: MetricsSources = {}): ApiMetrics {
  const registry = new Registry();
  const registers = [registry];
  if (sources.defaultMetrics !== false) collectDefaultMetrics({ register: registry });

  const { monitor, workers } = sources;
  const modelNames = (sources.models ?? []).map((m) => m.name);
  const modelOfQueue = new Map((sources.models ?? []).map((m) => [m.queue, m.name]));

  // One read of the counts serves both gauges of a scrape, whichever collects first. By model
  // when the monitor tells the queues apart: [model (null: all together), counts].
  type Counts = Array<[string | null, Record<string, number>]>;
  let counting: { at: number; result: Promise<Counts | null> } | undefined;
  const countsNow = () => {
    if (!monitor) return Promise.resolve(null);
    if (!counting || Date.now() - counting.at > COUNTS_REUSE_MS) {
      // A scrape during a Redis outage still answers: the outage shows as sdjobs_queue_up 0.
      const read = async (): Promise<Counts> =>
        monitor.countsByQueue && modelOfQueue.size > 0
          ? [...(await monitor.countsByQueue())].map(([queue, counts]) => [modelOfQueue.get(queue) ?? queue, counts])
          : [[null, await monitor.counts()]];
      counting = { at: Date.now(), result: read().catch(() => null) };
    }
    return counting.result;
  };

  if (monitor) {
    new Gauge({
      name: 'sdjobs_queue_up',
      help: 'Whether the last scrape could read the queue counts from Redis (1) or not (0).',
      registers,
      async collect() {
        this.set((await countsNow()) ? 1 : 0);
      },
    });
    new Gauge({
      name: 'sdjobs_jobs',
      help: "Jobs in each model's queue by BullMQ state, read at scrape time (completed and failed are bounded by JOB_KEEP_*).",
      labelNames: ['state', 'model'],
      registers,
      async collect() {
        this.reset();
        for (const [model, counts] of (await countsNow()) ?? []) {
          for (const [state, count] of Object.entries(counts)) this.set(model === null ? { state } : { state, model }, count);
        }
      },
    });
  }
  if (sources.loads) {
    const loads = sources.loads;
    new Gauge({
      name: 'sdjobs_queue_load',
      help: "Each model's full load at scrape time: waiting + prioritized + due retries + running jobs (what the autoscaler and KEDA scale on).",
      labelNames: ['model'],
      registers,
      async collect() {
        this.reset();
        try {
          for (const [model, load] of await loads.readAll()) this.set({ model }, load.load);
        } catch {
          // Left empty: sdjobs_queue_up shows the outage.
        }
      },
    });
  }

  const finished = new Counter({
    name: 'sdjobs_jobs_finished_total',
    help: 'Jobs that reached a final state, by outcome (succeeded, failed, canceled, expired) and model.',
    labelNames: ['outcome', 'model'],
    registers,
  });
  for (const model of modelNames) for (const outcome of ['succeeded', 'failed', 'canceled', 'expired']) finished.inc({ outcome, model }, 0);

  const queueWait = new Histogram({
    name: 'sdjobs_job_queue_wait_seconds',
    help: 'Time from submission to the start of the job (its last attempt, when retried), by model.',
    labelNames: ['model'],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800],
    registers,
  });
  const runTime = new Histogram({
    name: 'sdjobs_job_run_seconds',
    help: 'Time a worker spent on the job (its last attempt), by outcome and model.',
    labelNames: ['outcome', 'model'],
    buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300],
    registers,
  });
  const stepTime = new Histogram({
    name: 'sdjobs_job_step_seconds',
    help: 'UNet time per denoising step of a succeeded job (all its images together), by model.',
    labelNames: ['model'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const images = new Counter({
    name: 'sdjobs_images_generated_total',
    help: 'Images generated and stored, by model; rate(sdjobs_images_generated_total[5m]) gives images per second.',
    labelNames: ['model'],
    registers,
  });

  if (workers) {
    new Gauge({
      name: 'sdjobs_workers',
      help: 'Workers by lifecycle state (starting, ready, busy, draining) and the model they hold, from their heartbeats.',
      labelNames: ['state', 'model'],
      registers,
      async collect() {
        this.reset();
        try {
          const list = await workers.list();
          for (const model of new Set([...modelNames, ...list.map((w) => w.model)])) for (const state of WORKER_STATES) this.set({ state, model }, 0);
          for (const worker of list) this.inc({ state: worker.state, model: worker.model });
        } catch {
          // Left at zero: the registry lives in the same Redis, whose outage sdjobs_queue_up shows.
        }
      },
    });
  }

  const webhookDeliveries = new Counter({
    name: 'sdjobs_webhook_deliveries_total',
    help: 'Webhook deliveries that ended, by outcome: delivered, or why the notifier gave up (exhausted, gone, refused).',
    labelNames: ['outcome'],
    registers,
  });
  webhookDeliveries.inc({ outcome: 'delivered' }, 0);

  const httpRequests = new Counter({
    name: 'sdjobs_http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status code.',
    labelNames: ['method', 'route', 'status'],
    registers,
  });
  const httpDuration = new Histogram({
    name: 'sdjobs_http_request_duration_seconds',
    help: 'Time to answer HTTP requests (the synchronous routes include the job), by method and route pattern.',
    labelNames: ['method', 'route'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers,
  });

  const httpMiddleware: RequestHandler = (req, res, next) => {
    const started = process.hrtime.bigint();
    // 'close' comes for every response, also one the client hung up on.
    res.once('close', () => {
      const route = routeLabel(req, res);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      httpRequests.inc({ method: req.method, route, status: String(res.statusCode) });
      httpDuration.observe({ method: req.method, route }, seconds);
    });
    next();
  };

  const observeJob = (job: FinishedJob) => {
    // A job that could not be read back has no model: `unknown`.
    const model = job.model ?? 'unknown';
    finished.inc({ outcome: job.outcome, model });
    if (job.startedAt !== null && job.createdAt !== null) queueWait.observe({ model }, Math.max(0, job.startedAt - job.createdAt) / SECONDS);
    if (job.startedAt !== null && job.finishedAt !== null) {
      runTime.observe({ outcome: job.outcome, model }, Math.max(0, job.finishedAt - job.startedAt) / SECONDS);
    }
    if (job.outcome === 'succeeded') {
      images.inc({ model }, job.images);
      const unetMs = job.timingsMs?.unet;
      if (typeof unetMs === 'number' && job.steps) stepTime.observe({ model }, unetMs / job.steps / SECONDS);
    }
  };

  const observeWebhookDelivery = (outcome: string) => webhookDeliveries.inc({ outcome });
  const unsubscribers = [sources.jobEvents?.onJobFinished(observeJob), sources.webhookEvents?.onWebhookFinished(observeWebhookDelivery)];

  return {
    registry,
    httpMiddleware,
    observeJob,
    observeWebhookDelivery,
    async render() {
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
    close() {
      for (const unsubscribe of unsubscribers) unsubscribe?.();
    },
  };
}

/**
 * The route pattern (`/v1/jobs/:id`), never the raw path: ids in labels would make a new time
 * series per job. Requests no route matched share one label.
 */
function routeLabel(req: Parameters<RequestHandler>[0], res: Parameters<RequestHandler>[1]): string {
  const pattern = req.route?.path;
  if (typeof pattern === 'string') return `${req.baseUrl}${pattern}`;
  if (res.statusCode === 404) return '(unmatched)';
  const named = res.locals.metricsRoute;
  return typeof named === 'string' ? named : '(other)';
}

/** Marks the requests a middleware serves (static files, a mounted dashboard) with one route label. */
export function routeName(name: string): RequestHandler {
  return (_req, res, next) => {
    res.locals.metricsRoute = name;
    next();
  };
}
