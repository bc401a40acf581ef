import { Router, type Request, type Response } from 'express';
import { isFinished, type JobRecord } from '../../shared/job-queue.js';
import { ownerOf, visibleTo } from '../auth.js';
import { HttpError, invalidRequest } from '../http-errors.js';
import { idempotencyKeyOf, submitIdempotently } from '../idempotency.js';
import { streamJobEvents } from '../job-events.js';
import { imageFileName, jobView } from '../../shared/job-view.js';
import type { AppDeps } from '../deps.js';
import { baseUrlOf, parseGenerationRequest } from '../request-parsing.js';
import { streamImage } from './images.js';
import { abortOnClose, preferredWaitS } from '../waiting.js';
import { limitBy } from '../tenant-limits.js';
import { failFastOnRedis } from '../../shared/errors.js';
import { REDELIVERABLE_STATES } from '../../shared/webhooks/deliveries.js';
import { WEBHOOK_EVENTS, type WebhookEvent } from '../../shared/webhooks/events.js';
import { encodeCursor, parseListQuery } from '../job-listing.js';

/** How long a cancel of a running job waits to answer with the job stopped (else 202, stopping). */
const CANCEL_WAIT_MS = 5000;

export function jobsRouter(deps: AppDeps): Router {
  const router = Router();

  /** The job, if it exists and this request's API key may see it; another key's job is a 404 too. */
  const load = async (req: Request, res: Response): Promise<JobRecord> => {
    const id = String(req.params.id);
    const record = /^[A-Za-z0-9-]{1,64}$/.test(id) ? await deps.queue.get(id) : null;
    if (!record || !visibleTo(deps.config, res, record)) {
      throw new HttpError(404, 'job_not_found', `No job with id ${JSON.stringify(id.length > 80 ? `${id.slice(0, 80)}…` : id)}.`, 'id');
    }
    return record;
  };

  // The caller's jobs (its API key's; every job when the service runs open), newest first.
  router.get('/v1/jobs', async (req, res) => {
    const query = parseListQuery(req.query as Record<string, unknown>);
    const page = await deps.queue.list(ownerOf(res), { statuses: query.statuses, after: query.after, limit: query.limit });
    const base = baseUrlOf(deps, req);
    res.json({ jobs: page.jobs.map((record) => jobView(record, base)), next_cursor: page.next ? encodeCursor(page.next) : null });
  });

  router.post('/v1/jobs', limitBy('submission', deps.tenants?.limiter), async (req, res) => {
    const base = baseUrlOf(deps, req);
    const owner = ownerOf(res);
    const idempotencyKey = idempotencyKeyOf(req);
    const payload = await parseGenerationRequest(deps, req.body, 'body', { owner });
    // The key's own signing secret exists before its first webhook can be sent.
    if (payload.webhook && owner !== undefined && deps.tenants) await failFastOnRedis(deps.tenants.secrets.ensure(owner), 1500);
    let record: JobRecord;
    let replayed = false;
    if (idempotencyKey === undefined) {
      record = await deps.queue.enqueue(payload);
    } else {
      ({ record, replayed } = await submitIdempotently(deps, owner ?? 'open', idempotencyKey, req.body, payload));
      if (replayed) res.setHeader('Idempotent-Replayed', 'true');
    }
    // One line, no child logger made per submission.
    if (!replayed) deps.logger.info({ jobId: record.id, model: payload.model, webhook: payload.webhook !== undefined }, 'job queued');

    // Replicate's convention: Prefer: wait=N holds the answer until the job ends (or N seconds pass).
    const waitS = preferredWaitS(req.get('prefer'), deps.config.syncTimeoutS);
    if (waitS !== null) {
      res.setHeader('Preference-Applied', `wait=${waitS}`);
      const finished = isFinished(record.status) ? record : await deps.queue.waitForFinish(record.id, waitS * 1000, abortOnClose(res));
      if (finished) {
        const view = jobView(finished, base);
        res.status(replayed ? 200 : 201).location(view.links.self).json(view);
        return;
      }
      record = (await deps.queue.get(record.id)) ?? record;
    }
    const view = jobView(record, base);
    res.status(202).location(view.links.self).json(view);
  });

  router.get('/v1/jobs/:id', async (req, res) => {
    res.json(jobView(await load(req, res), baseUrlOf(deps, req)));
  });

  router.get('/v1/jobs/:id/events', async (req, res) => {
    streamJobEvents(deps, res, await load(req, res), baseUrlOf(deps, req));
  });

  router.post('/v1/jobs/:id/cancel', async (req, res) => {
    const base = baseUrlOf(deps, req);
    const record = await load(req, res);
    const finishedAlready = (r: JobRecord) =>
      new HttpError(409, 'job_finished', `Job ${r.id} already ${r.status}; there is nothing to cancel.`, 'id');
    if (record.status === 'canceled') {
      res.json(jobView(record, base));
      return;
    }
    if (isFinished(record.status)) throw finishedAlready(record);

    const outcome = await deps.queue.cancel(record.id);
    if (outcome.outcome === 'not_found') throw new HttpError(404, 'job_not_found', `No job with id ${record.id}.`, 'id');
    const log = deps.logger.child({ jobId: record.id, model: record.payload.model });
    log.info({ outcome: outcome.outcome }, 'cancel requested');
    let current = outcome.record;
    if (outcome.outcome === 'signaled') {
      // The worker stops at its next denoising step; answer with the outcome when it is that quick.
      current = (await deps.queue.waitForFinish(record.id, CANCEL_WAIT_MS, abortOnClose(res))) ?? (await deps.queue.get(record.id)) ?? current;
    }
    if (current.status === 'succeeded' || current.status === 'failed') throw finishedAlready(current);
    res.status(current.status === 'canceled' ? 200 : 202).json(jobView(current, base));
  });

  // Sends an event whose delivery settled without reaching the receiver (exhausted, gone, refused) again.
  router.post('/v1/jobs/:id/webhooks/redeliver', async (req, res) => {
    const record = await load(req, res);
    const events = redeliveryEvents(req.body, record);
    if (!deps.webhooks) throw new HttpError(501, 'not_configured', 'This API was started without a webhook outbox.');
    if (!record.payload.webhook) throw new HttpError(409, 'no_webhook', `Job ${record.id} was submitted without a webhook.`, 'id');
    const candidates = record.deliveries.filter((d) => events === null || events.includes(d.event));
    if (candidates.length === 0) {
      throw new HttpError(404, 'delivery_not_found', events === null ? `Job ${record.id} has no webhook delivery yet.` : `Job ${record.id} has no ${events[0]} delivery.`, 'event');
    }
    const redeliverable = candidates.filter((d) => REDELIVERABLE_STATES.includes(d.state));
    if (redeliverable.length === 0) {
      const states = candidates.map((d) => `${d.event}: ${d.state}`).join(', ');
      throw new HttpError(409, 'delivery_not_failed', `Only deliveries that gave up (exhausted, gone, refused) are sent again; this job's are ${states}.`, 'event');
    }
    for (const delivery of redeliverable) {
      await failFastOnRedis(deps.webhooks.redeliver(record, delivery.event), 1500);
      deps.logger.info({ jobId: record.id, event: delivery.event, was: delivery.state }, 'webhook redelivery requested');
    }
    const current = (await deps.queue.get(record.id)) ?? record;
    res.status(202).json(jobView(current, baseUrlOf(deps, req)));
  });

  router.get('/v1/jobs/:id/images/:file', async (req, res) => {
    const record = await load(req, res);
    const file = String(req.params.file);
    const match = /^(\d{1,3})\.[a-z]{1,5}$/.exec(file);
    const index = match ? Number(match[1]) : -1;
    const image = record.result?.images[index];
    if (!image) {
      const why = record.status === 'succeeded' ? 'has no such image' : `is ${record.status}`;
      throw new HttpError(404, 'image_not_found', `Job ${record.id} ${why}.`, 'file');
    }
    // The name carries the format the job asked for: 0.webp is there, 0.png is not.
    const stored = imageFileName(index, image.key);
    if (file !== stored) throw new HttpError(404, 'image_not_found', `Job ${record.id} has no ${file}; its image ${index} is ${stored}.`, 'file');
    await streamImage(deps, image.key, res);
  });

  return router;
}

/** The body of a redelivery: nothing (every delivery that gave up) or `{"event": "<event>"}`. */
function redeliveryEvents(body: unknown, record: JobRecord): WebhookEvent[] | null {
  if (body === undefined || body === null) return null;
  if (typeof body !== 'object' || Array.isArray(body)) throw invalidRequest([{ field: 'body', message: 'the body must be a JSON object, or empty' }]);
  const problems = Object.keys(body)
    .filter((key) => key !== 'event')
    .map((key) => ({ field: key, message: `unknown field: ${key} (only event is)` }));
  if (problems.length > 0) throw invalidRequest(problems);
  const event = (body as { event?: unknown }).event;
  if (event === undefined) return null;
  if (typeof event !== 'string' || !(WEBHOOK_EVENTS as readonly string[]).includes(event)) {
    throw invalidRequest([{ field: 'event', message: `event must be one of ${WEBHOOK_EVENTS.join(', ')}` }]);
  }
  if (record.payload.webhook && !record.payload.webhook.events.includes(event as WebhookEvent)) {
    throw invalidRequest([{ field: 'event', message: `this job's webhook does not ask for ${event}` }]);
  }
  return [event as WebhookEvent];
}
