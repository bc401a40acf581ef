import { z } from 'zod';
import { SCHEDULER_NAMES } from '../shared/job-schema.js';
import { WEBHOOK_EVENTS } from '../shared/webhooks/events.js';

/**
 * The API's answers as zod schemas, for the OpenAPI document. `jobView` builds the real answer;
 * test/openapi.test.ts checks real answers against these, so a field added there and not here
 * fails a test instead of going undocumented.
 */

const timestamp = z.iso.datetime().nullable();

export const JobStatusSchema = z.enum(['queued', 'running', 'succeeded', 'failed', 'canceled']);

export const JobViewSchema = z
  .object({
    id: z.string().meta({ description: 'Job id (a UUID).' }),
    status: JobStatusSchema,
    model: z.string(),
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
    outputs: z
      .object({
        seed: z.int(),
        images: z.array(
          z.object({
            url: z.url().meta({ description: 'GET it for the PNG.' }),
            width: z.int(),
            height: z.int(),
            seed: z.int().meta({ description: 'Image i of a job uses seed + i.' }),
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
          }),
        ),
      })
      .nullable()
      .meta({ description: 'The webhook the job was submitted with, and how its deliveries went; null without one.' }),
    links: z.object({ self: z.url() }),
  })
  .meta({ description: 'A generation job as GET /v1/jobs/{id} answers it.' });

export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().meta({ description: 'Stable, machine-readable: invalid_request, job_not_found, queue_unavailable, …' }),
      message: z.string().meta({ description: 'A sentence for people, naming the field.' }),
      field: z.string().optional(),
      details: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
    }),
  });

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
          dtype: z.string(),
        })
        .nullable()
        .meta({ description: "What its export takes, as a worker found on loading it; null before any worker did." }),
    }),
  ),
});

export const QueueLoadSchema = z.object({
  load: z.int().meta({ description: 'waiting + prioritized + due delayed + active: what the autoscaler and KEDA scale on.' }),
  waiting: z.int(),
  prioritized: z.int(),
  delayed_due: z.int(),
  active: z.int(),
  delayed: z.int(),
  paused: z.int(),
  at: iso,
});
