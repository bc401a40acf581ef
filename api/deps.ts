import type { Config } from '../shared/config.js';
import type { JobQueue } from '../shared/job-queue.js';
import type { Logger } from '../shared/logger.js';
import type { PublishedModel } from '../shared/model-registry.js';
import type { ImageStore } from '../shared/storage/index.js';

/** Everything the HTTP layer needs, passed in so tests can hand it real or fake parts. */
export interface AppDeps {
  config: Readonly<Config>;
  queue: JobQueue;
  store: ImageStore;
  /** What workers published about the served model; null before any worker loaded it. */
  models: { get(name: string): Promise<PublishedModel | null> };
  logger: Logger;
  /** Redirect image requests to presigned URLs instead of streaming them. */
  presignImages?: boolean;
  drawSeed?: () => number;
}
