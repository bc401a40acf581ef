import type { Config } from './config.js';
import type { JobRecord } from './job-queue.js';
import { extensionOf } from './output-format.js';

/**
 * The job as clients see it (`GET /v1/jobs/:id`, the SSE stream's data, a webhook's `data`);
 * snake_case like the request. Who made it (`owner`) is not shown. `baseUrl` '' gives links
 * relative to the API (`/v1/jobs/<id>`).
 */
export function jobView(record: JobRecord, baseUrl: string) {
  const p = record.payload;
  const self = `${baseUrl}/v1/jobs/${record.id}`;
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
  return {
    id: record.id,
    status: record.status,
    model: p.model,
    routed_by: p.routedBy ?? null,
    input: {
      prompt: p.prompt,
      negative_prompt: p.negativePrompt,
      width: p.width,
      height: p.height,
      num_inference_steps: p.numInferenceSteps,
      guidance_scale: p.guidanceScale,
      seed: p.seed,
      num_images: p.numImages,
      scheduler: p.scheduler ?? null,
      timeout_s: p.timeoutS ?? null,
      ttl_s: p.ttlS ?? null,
      filters: p.filters ?? null,
      prompt_variations: p.promptVariations ?? false,
      output_format: p.outputFormat ?? 'png',
      output_quality: p.outputQuality ?? null,
    },
    progress: record.progress,
    queue_position: record.queuePosition,
    attempts: { made: record.attemptsMade, max: record.maxAttempts },
    created_at: iso(record.createdAt),
    started_at: iso(record.startedAt),
    finished_at: iso(record.finishedAt),
    expires_at: iso(p.expiresAt ?? null),
    outputs: record.result
      ? {
          seed: record.result.seed,
          images: record.result.images.map((image, index) => ({
            url: `${self}/images/${imageFileName(index, image.key)}`,
            width: image.width,
            height: image.height,
            seed: image.seed,
            prompt: image.prompt ?? p.prompts?.[index] ?? p.prompt,
            // diffusers' name: the safety checker's verdict; null when it did not run.
            nsfw_content_detected: image.filters?.['nsfw'] ? !image.filters['nsfw'].passed : null,
            filters: image.filters ?? {},
            tries: image.tries ?? 1,
            blocked: image.blocked ?? false,
          })),
        }
      : null,
    error: record.error,
    webhook: p.webhook
      ? {
          url: p.webhook.url,
          events: p.webhook.events,
          deliveries: record.deliveries.map((d) => ({
            event: d.event,
            webhook_id: d.webhookId,
            state: d.state,
            attempts: d.attempts,
            last_status_code: d.lastStatusCode,
            last_error: d.lastError,
            last_attempt_at: iso(d.lastAttemptAt),
            next_attempt_at: iso(d.nextAttemptAt),
            delivered_at: iso(d.deliveredAt),
            redeliveries: d.redeliveries ?? 0,
            history: (d.history ?? []).map((a) => ({ at: iso(a.at), status_code: a.statusCode, error: a.error, state: a.state })),
          })),
        }
      : null,
    links: { self },
  };
}

export type JobView = ReturnType<typeof jobView>;

/**
 * Base URL for links in a view rendered outside a request (webhook bodies): PUBLIC_URL, else ''
 * (links relative to the API). Nothing a client sent (its Host header) ever gets stored or reused.
 */
export function linkBase(config: Pick<Config, 'publicUrl'>): string {
  return config.publicUrl ?? '';
}

/** An image's file name under `/v1/jobs/:id/images/`: its index and its stored format's extension. */
export const imageFileName = (index: number, key: string) => `${index}.${extensionOf(key) || 'png'}`;
