import { z } from 'zod';
import { SCHEDULER_NAMES } from '../shared/job-schema.js';
import { OUTPUT_FORMATS } from '../shared/output-format.js';
import { WEBHOOK_EVENTS } from '../shared/webhooks/events.js';

/**
 * The API's answers as zod schemas, for the OpenAPI document. `jobView` builds the real answer;
 * test/openapi.test.ts checks real answers against these, so a field added there and not here
 * fails a test instead of going undocumented.
 */

const timestamp = z.iso.datetime().nullable();

/** Absolute with PUBLIC_URL or behind a trusted proxy (TRUST_PROXY), else relative to the API. */
const link = z
  .string()
  .regex(/^(https?:\/\/[^/\s]+)?\/\S*$/)
  .meta({ description: "Absolute when PUBLIC_URL is set or a trusted proxy forwarded its host (TRUST_PROXY); otherwise relative to the API's base (`/v1/jobs/…`)." });

const FilterVerdictSchema = z
  .object({
    passed: z.boolean().meta({ description: 'false: the filter screened the image out.' }),
    score: z.number().optional().meta({ description: 'The measure the filter decided on (grayscale: the 99th-percentile chroma, 0…255).' }),
    threshold: z.number().optional().meta({ description: 'The limit the score was held against.' }),
    detail: z.string().optional(),
  })
  .meta({ description: "One filter's verdict on the image's last try." });

export const JobStatusSchema = z
  .enum(['queued', 'running', 'succeeded', 'failed', 'canceled', 'expired'])
  .meta({ description: 'queued → running → succeeded | failed | canceled; `expired`: still queued when its ttl_s ran out, never ran.' });

export const JobViewSchema = z
  .object({
    id: z.string().meta({ description: 'Job id (a UUID).' }),
    status: JobStatusSchema,
    model: z.string().meta({ description: 'The model the job runs on.' }),
    routed_by: z
      .string()
      .nullable()
      .meta({ description: 'Why it runs on that model: `explicit` (the request named it), `trigger word "<word>"` (the prompt holds the word), or `default`.' }),
    input: z
      .object({
        prompt: z.string(),
        negative_prompt: z.string(),
        width: z.int(),
        height: z.int(),
        num_inference_steps: z.int(),
        guidance_scale: z.number(),
        seed: z.int().meta({ description: 'The seed used: given, or drawn by the service.' }),
        num_images: z.int(),
        scheduler: z.union([z.enum(SCHEDULER_NAMES), z.string()]).nullable().meta({ description: "null: the model's own scheduler." }),
        timeout_s: z.int().nullable().meta({ description: "The client's deadline for the run; null: the service's JOB_MAX_RUN_S." }),
        ttl_s: z.int().nullable().meta({ description: 'How long the job may wait in the queue; null: as long as it takes.' }),
        filters: z.array(z.string()).nullable().meta({ description: "The filters asked for; null: the model's defaults (see each image's `filters`)." }),
        prompt_variations: z.boolean(),
        output_format: z.enum(OUTPUT_FORMATS),
        output_quality: z.int().nullable().meta({ description: 'webp and jpeg quality; null for png.' }),
      })
      .meta({ description: 'The request with every default filled in.' }),
    progress: z
      .object({ step: z.int(), total: z.int() })
      .nullable()
      .meta({ description: 'Denoising steps done, while running and after.' }),
    queue_position: z.int().nullable().meta({ description: '0 = next to run; null unless queued.' }),
    attempts: z.object({ made: z.int(), max: z.int() }),
    created_at: timestamp,
    started_at: timestamp,
    finished_at: timestamp,
    expires_at: timestamp.meta({ description: 'With ttl_s: when the job ends `expired` if it has not started by then.' }),
    outputs: z
      .object({
        seed: z.int(),
        images: z.array(
          z.object({
            url: link.meta({ description: 'GET it for the image: `<n>.png`, `<n>.webp` or `<n>.jpg` after the output format.' }),
            width: z.int(),
            height: z.int(),
            seed: z.int().meta({ description: 'The seed this image was made with: seed + i, or a fresh one when filters made it again.' }),
            prompt: z.string().meta({ description: 'The prompt this image was made from (its variant with prompt_variations).' }),
            nsfw_content_detected: z
              .boolean()
              .nullable()
              .meta({ description: "The safety checker's verdict on the image's last try; null when the nsfw filter did not run." }),
            filters: z.record(z.string(), FilterVerdictSchema).meta({ description: 'The verdict of every filter that ran, by name.' }),
            tries: z.int().meta({ description: 'Tries it took; above 1 when filters screened out earlier ones (FILTER_MAX_TRIES at most).' }),
            blocked: z.boolean().meta({ description: 'Every try was screened out: the image is black, and `filters` says why.' }),
          }),
        ),
      })
      .nullable(),
    error: z
      .object({ code: z.string().meta({ description: 'Stable, machine-readable.' }), message: z.string() })
      .nullable(),
    webhook: z
      .object({
        url: z.url(),
        events: z.array(z.enum(WEBHOOK_EVENTS)),
        deliveries: z.array(
          z.object({
            event: z.enum(WEBHOOK_EVENTS),
            webhook_id: z.string().meta({ description: 'The `webhook-id` header: the same on every retry, for deduplication.' }),
            state: z.string().meta({ description: 'pending, retrying, delivered, exhausted, gone (the receiver answered 410) or refused (address not allowed).' }),
            attempts: z.int(),
            last_status_code: z.int().nullable(),
            last_error: z.string().nullable(),
            last_attempt_at: timestamp,
            next_attempt_at: timestamp,
            delivered_at: timestamp,
            redeliveries: z.int().meta({ description: 'Times it was sent again by POST /v1/jobs/{id}/webhooks/redeliver.' }),
            history: z
              .array(
                z.object({
                  at: z.iso.datetime(),
                  status_code: z.int().nullable(),
                  error: z.string().nullable(),
                  state: z.string().meta({ description: 'What the attempt left the delivery: delivered, retrying, exhausted, gone or refused.' }),
                }),
              )
              .meta({ description: 'Every attempt, oldest first (at most the last 100).' }),
          }),
        ),
      })
      .nullable()
      .meta({ description: 'The webhook the job was submitted with, and how its deliveries went; null without one.' }),
    links: z.object({ self: link }),
  })
  .meta({ description: 'A generation job as GET /v1/jobs/{id} answers it.' });

export const JobListSchema = z
  .object({
    jobs: z.array(JobViewSchema),
    next_cursor: z.string().nullable().meta({ description: 'Pass as `cursor` for the next page; null: no more jobs.' }),
  })
  .meta({ description: "A page of the caller's jobs, newest first." });

export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().meta({ description: 'Stable, machine-readable: invalid_request, job_not_found, queue_unavailable, …' }),
      message: z.string().meta({ description: 'A sentence for people, naming the field.' }),
      field: z.string().optional(),
      details: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
    }),
  });

export const SyncFailureSchema = z
  .object({
    error: z.object({ code: z.string().meta({ description: "The job's error code: invalid_request, timeout, expired, canceled, storage_error, internal_error, …" }), message: z.string() }),
    job: JobViewSchema,
  })
  .meta({ description: 'A synchronous job that ended without its image: why, and the job.' });

const Check = z.object({ ok: z.boolean(), error: z.string().optional() });

const ModelStateEnum = z.enum(['available', 'loading', 'idle', 'unavailable', 'unknown']).meta({
  description: 'available: a worker serves it · loading: one is starting · idle: none runs (one starts when a job comes) · unavailable: its last load failed (jobs are refused with 503 model_unavailable).',
});

export const ReadinessSchema = z
  .object({
    status: z.enum(['ready', 'unavailable']),
    checks: z.object({
      redis: Check,
      storage: Check,
      models: z
        .record(z.string(), z.object({ ok: z.boolean(), state: ModelStateEnum, error: z.string().nullable() }))
        .meta({ description: 'Each served model by name; not ok while it cannot be loaded.' }),
    }),
  });

export const LivenessSchema = z.object({ status: z.literal('ok') });

const iso = z.iso.datetime();

export const WorkersSchema = z.object({
  count: z.int(),
  workers: z.array(
    z.object({
      id: z.string(),
      slot: z.string().meta({ description: '`gpu<N>` or `cpu<N>` under the autoscaler.' }),
      state: z.enum(['starting', 'ready', 'busy', 'draining']),
      current_job: z.string().nullable(),
      uptime_s: z.number(),
      jobs_done: z.int(),
      jobs_failed: z.int(),
      started_at: iso,
      last_seen_at: iso,
      host: z.string(),
      pid: z.int(),
      model: z.string(),
      paused: z.string().nullable().meta({ description: 'Why this worker takes no jobs for now (storage failing: it probes until storage answers); null: it takes them.' }),
    }),
  ),
  autoscaler: z
    .object({
      leader: z.string(),
      host: z.string(),
      updated_at: iso,
      desired: z.int(),
      target: z.int(),
      load: z.int(),
      min_workers: z.int(),
      max_workers: z.int(),
      last_decision: z.object({ action: z.string(), reason: z.string(), at: iso }).nullable(),
      models: z
        .array(
          z.object({
            name: z.string(),
            load: z.int(),
            desired: z.int(),
            target: z.int(),
            workers: z.int(),
            min_workers: z.int(),
            max_workers: z.int(),
            oldest_waiting_since: iso.nullable().meta({ description: 'When its oldest waiting job was created: with fewer slots than models with work, the oldest gets the next slot.' }),
            last_decision: z.object({ action: z.string(), reason: z.string(), at: iso }).nullable(),
          }),
        )
        .meta({ description: "Each model's own scaling: its load, what the policy asks for within its bounds, its live workers." }),
      slots: z.array(
        z.object({
          id: z.string(),
          kind: z.enum(['gpu', 'cpu']),
          state: z.string().meta({ description: 'free, occupied, backoff, crash-loop or failed.' }),
          worker: z.string().nullable(),
          reason: z.string().nullable(),
          until: iso.nullable(),
        }),
      ),
    })
    .nullable()
    .meta({ description: "The leading autoscaler's last report; null when none runs." }),
});

export const ModelsSchema = z.object({
  models: z.array(
    z.object({
      name: z.string(),
      default: z.boolean(),
      trigger_words: z.array(z.string()).meta({ description: 'Whole words (case-insensitive) that route a prompt to this model when the request says `model: auto` or nothing.' }),
      queue: z.string().meta({ description: 'The BullMQ queue of its jobs.' }),
      autoscaling: z.object({ min_workers: z.int(), initial_workers: z.int(), max_workers: z.int().nullable() }),
      load: z
        .object({ queued: z.int(), running: z.int(), total: z.int() })
        .nullable()
        .meta({ description: "Its jobs that need a worker: queued (waiting, prioritized, due retries) and running; null when Redis cannot say." }),
      state: ModelStateEnum,
      error: z.string().nullable().meta({ description: 'Why it could not be loaded, while unavailable.' }),
      unavailable_since: iso.nullable(),
      retry_at: iso.nullable().meta({ description: 'When a worker tries to load it again, while unavailable.' }),
      workers: z.object({ starting: z.int(), ready: z.int(), busy: z.int(), draining: z.int() }).nullable(),
      capabilities: z
        .object({
          size_multiple: z.int(),
          min_size: z.int(),
          max_size: z.int(),
          default_size: z.int(),
          fixed_size: z.object({ width: z.int(), height: z.int() }).nullable(),
          default_scheduler: z.string(),
          schedulers: z.array(z.string()).meta({ description: 'The diffusers scheduler classes a request may ask for (`scheduler`).' }),
          default_steps: z.int(),
          dtype: z.string(),
        })
        .nullable()
        .meta({ description: "What its export takes, as a worker found on loading it; null before any worker did." }),
    }),
  ),
});

const QueueLoadFields = {
  load: z.int().meta({ description: 'waiting + prioritized + due delayed + active: what the autoscaler and KEDA scale on.' }),
  waiting: z.int(),
  prioritized: z.int(),
  delayed_due: z.int(),
  active: z.int(),
  delayed: z.int(),
  paused: z.int(),
  at: iso,
};

export const QueueLoadSchema = z.object({
  model: z.string().nullable().meta({ description: 'The model asked for (`?model=`); null: every model together.' }),
  ...QueueLoadFields,
  models: z.record(z.string(), z.object(QueueLoadFields)).optional().meta({ description: "Each model's own load (without `?model=`)." }),
});

export const WebhookSecretsSchema = z
  .object({
    secrets: z.array(
      z.object({
        id: z.string(),
        secret: z.string().meta({ description: '`whsec_` + base64: give it to your Standard Webhooks verifier.' }),
        created_at: iso,
        expires_at: iso.nullable().meta({ description: 'When it stops signing (after a rotation); null: until the next rotation.' }),
      }),
    ),
  })
  .meta({ description: "This API key's live webhook signing secrets, newest first." });
