import type { Config } from '../shared/config.js';
import type { JobQueue } from '../shared/job-queue.js';
import type { Logger } from '../shared/logger.js';
import type { ModelState, PublishedModel } from '../shared/model-registry.js';
import type { QueueMonitor } from '../shared/queue-monitor.js';
import type { IdempotencyStore } from '../shared/idempotency.js';
import type { ImageStore } from '../shared/storage/index.js';
import type { QueueLoadSource } from '../shared/queue-load.js';
import type { WorkerDirectory } from '../shared/worker-registry.js';
import type { ApiMetrics } from './metrics.js';

/** Everything the HTTP layer needs, passed in so tests can hand it real or fake parts. */
export interface AppDeps {
  config: Readonly<Config>;
  queue: JobQueue;
  store: ImageStore;
  /**
   * What workers published about the served model (null before any worker loaded it), and, when
   * given, whether it can be served now (GET /v1/models, /readyz, and 503 for an unavailable one).
   */
  models: { get(name: string): Promise<PublishedModel | null>; state?(name: string): Promise<ModelState> };
  logger: Logger;
  /** Redirect image requests to presigned URLs instead of streaming them. */
  presignImages?: boolean;
  drawSeed?: () => number;
  /** Idempotency-Key claims (Redis); absent, they are kept in this process's memory. */
  idempotency?: IdempotencyStore;
  /** Prometheus metrics: GET /metrics and per-request counts; absent, neither. */
  metrics?: ApiMetrics;
  /** The queues as operators see them: the admin dashboard (with ADMIN_USER/ADMIN_PASSWORD). */
  monitor?: QueueMonitor;
  /** The worker registry and autoscaler status: GET /v1/workers. */
  workers?: WorkerDirectory;
  /** The queue's full load (waiting + prioritized + due delayed + active): GET /v1/queue, KEDA's metric. */
  queueLoad?: Pick<QueueLoadSource, 'read'>;
}
