import { Router, type Request, type Response } from 'express';
import { isFinished, type JobRecord } from '../../shared/job-queue.js';
import { ownerOf, visibleTo } from '../auth.js';
import { HttpError } from '../http-errors.js';
import { idempotencyKeyOf, submitIdempotently } from '../idempotency.js';
import { streamJobEvents } from '../job-events.js';
import { jobView } from '../../shared/job-view.js';
import type { AppDeps } from '../deps.js';
import { baseUrlOf, parseGenerationRequest } from '../request-parsing.js';
import { streamImage } from './images.js';
import { abortOnClose, preferredWaitS } from '../waiting.js';
import { limitBy } from '../tenant-limits.js';
import { failFastOnRedis } from '../../shared/errors.js';

/** How long a cancel of a running job waits to answer with the job stopped (else 202, stopping). */
const CANCEL_WAIT_MS = 5000;

export function jobsRouter(deps: AppDeps): Router {
  const router = Router();

  /** The job, if it exists and this request's API key may see it; another key's job is a 404 too. */
  const load = async (req: Request, res: Response): Promise<JobRecord> => {
    const id = String(req.params.id);
    const record = /^[A-Za-z0-9-]{1,64}$/.test(id) ? await deps.queue.get(id) : null;
    if (!record || !visibleTo(deps.config, res, record)) throw new HttpError(404, 'job_not_found', `No job with id ${id}.`, 'id');
    return record;
  };

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
    const log = deps.logger.child({ jobId: record.id, model: payload.model });
    if (!replayed) log.info({ webhook: payload.webhook !== undefined }, 'job queued');

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

  router.get('/v1/jobs/:id/images/:file', async (req, res) => {
    const record = await load(req, res);
    const match = /^(\d{1,3})\.png$/.exec(String(req.params.file));
    const image = match ? record.result?.images[Number(match[1])] : undefined;
    if (!image) {
      const why = record.status === 'succeeded' ? 'has no such image' : `is ${record.status}`;
      throw new HttpError(404, 'image_not_found', `Job ${record.id} ${why}.`, 'file');
    }
    await streamImage(deps, image.key, res);
  });

  return router;
}
