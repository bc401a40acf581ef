import type { Config } from '../shared/config.js';
import type { JobQueue } from '../shared/job-queue.js';
import type { Logger } from '../shared/logger.js';
import type { ModelCapabilities } from '../shared/model-capabilities.js';
import type { ModelState, PublishedModel } from '../shared/model-registry.js';
import type { QueueMonitor } from '../shared/queue-monitor.js';
import type { IdempotencyStore } from '../shared/idempotency.js';
import type { ImageStore } from '../shared/storage/index.js';
import type { ModelQueueLoads, QueueLoadSource } from '../shared/queue-load.js';
import type { WorkerDirectory } from '../shared/worker-registry.js';
import type { WebhookOutbox } from '../shared/webhooks/deliveries.js';
import type { TenantSecretStore } from '../shared/webhooks/tenant-secrets.js';
import type { ApiMetrics } from './metrics.js';
import type { TenantLimiter } from './tenant-limits.js';

/** Everything the HTTP layer needs, passed in so tests can hand it real or fake parts. */
export interface AppDeps {
  config: Readonly<Config>;
  queue: JobQueue;
  store: ImageStore;
  /** What each served model can do, read from its export at boot (`readModelCapabilities`), by served name. */
  models: { get(name: string): ModelCapabilities | undefined };
  /** What the model's workers published (their filters, an operator's own included); null before any has. */
  publishedModels?: { get(name: string): Promise<PublishedModel | null> };
  /** Whether each model can be served now (GET /v1/models, /readyz, and 503 for an unavailable one). */
  modelStates?: {
    state(name: string): Promise<ModelState>;
    /** The state only when the model is unavailable, else null: a cheaper read for each submission (default: `state`). */
    unavailable?(name: string): Promise<ModelState | null>;
  };
  logger: Logger;
  /** Redirect image requests to presigned URLs instead of streaming them. */
  presignImages?: boolean;
  /** A random first seed for a job of `numImages` images (tests fix it). */
  drawSeed?: (numImages: number) => number;
  /** Idempotency-Key claims (Redis); absent, they are kept in this process's memory. */
  idempotency?: IdempotencyStore;
  /** Prometheus metrics: GET /metrics and per-request counts; absent, neither. */
  metrics?: ApiMetrics;
  /** The queues as operators see them: the admin dashboard (with ADMIN_USER/ADMIN_PASSWORD). */
  monitor?: QueueMonitor;
  /** The worker registry and autoscaler status: GET /v1/workers. */
  workers?: WorkerDirectory;
  /** The queue's full load (waiting + prioritized + due delayed + active): GET /v1/queue, KEDA's metric. */
  queueLoad?: Pick<QueueLoadSource, 'read'> & Partial<Pick<ModelQueueLoads, 'readModel' | 'readAll'>>;
  /** Sends a webhook event whose delivery gave up again (POST /v1/jobs/:id/webhooks/redeliver); absent, that answers 501. */
  webhooks?: Pick<WebhookOutbox, 'redeliver'>;
  /** Per-API-key state in Redis: webhook signing secrets and rate limits; absent, neither. */
  tenants?: { secrets: TenantSecretStore; limiter: TenantLimiter };
}
