import { Router, type Request, type Response } from 'express';
import { HttpError } from '../http-errors.js';
import { jobView } from '../../shared/job-view.js';
import { ownerOf } from '../auth.js';
import type { AppDeps } from '../deps.js';
import { baseUrlOf, parseGenerationRequest } from '../request-parsing.js';
import { failedJobHeaders, failedJobStatus } from '../job-outcome.js';
import { streamImage } from './images.js';
import { abortOnClose } from '../waiting.js';
import { limitBy } from '../tenant-limits.js';

/**
 * The synchronous wrapper: enqueue, wait on the shared event subscription, answer the PNG.
 * On timeout the job keeps running and the client gets 202 with where to poll it.
 */
export function generateRouter(deps: AppDeps): Router {
  const router = Router();

  const handle = async (req: Request, res: Response) => {
    const gone = abortOnClose(res);
    const base = baseUrlOf(deps, req);
    const payload = await parseGenerationRequest(deps, req.query, 'query', { owner: ownerOf(res) });
    if (payload.numImages !== 1) {
      throw new HttpError(400, 'invalid_request', 'num_images must be 1 here; use POST /v1/jobs for several images', 'num_images');
    }
    const queued = await deps.queue.enqueue(payload);
    const log = deps.logger.child({ jobId: queued.id, model: payload.model });
    log.info('sync job queued');
    const finished = await deps.queue.waitForFinish(queued.id, deps.config.syncTimeoutS * 1000, gone);
    if (gone.aborted) {
      // Nobody is left to receive the image (and the client never learned the job's id).
      if (deps.config.syncCancelOnDisconnect) {
        const outcome = await deps.queue.cancel(queued.id, 'the job was canceled: its synchronous client disconnected');
        log.info({ outcome: outcome.outcome }, 'sync client disconnected: job canceled');
      }
      return;
    }
    if (!finished) {
      const current = (await deps.queue.get(queued.id)) ?? queued;
      const view = jobView(current, base);
      res.status(202).location(view.links.self).setHeader('Retry-After', '2').json(view);
      return;
    }
    const view = jobView(finished, base);
    const image = finished.result?.images[0];
    if (finished.status !== 'succeeded' || !image) {
      // Whose fault it was, as a status: 422 bad input, 504 deadline, 409 canceled, 503 outage, 500 ours.
      const status = failedJobStatus(finished);
      log.info({ status, code: finished.error?.code ?? finished.status }, 'sync job ended without an image');
      for (const [name, value] of Object.entries(failedJobHeaders(status))) res.setHeader(name, value);
      res.status(status).location(view.links.self).json({
        error: finished.error ?? { code: 'internal_error', message: 'the job did not produce an image' },
        job: view,
      });
      return;
    }
    await streamImage(deps, image.key, res, {
      'X-Job-Id': finished.id,
      'X-Seed': String(image.seed),
      ...(image.filters?.['nsfw'] ? { 'X-Nsfw-Content-Detected': String(!image.filters['nsfw'].passed) } : {}),
      'X-Image-Blocked': String(image.blocked ?? false),
      // The job this image is the answer of: a client can look up its model, routed_by, seed, timings.
      'Content-Location': view.links.self,
      'X-Model': finished.payload.model,
    });
  };

  const submissions = limitBy('submission', deps.tenants?.limiter);
  router.get('/v1/generate', submissions, handle);
  // The tutorial's route: GET /dreambooth?prompt=…&img_size=512
  router.get('/dreambooth', submissions, handle);
  return router;
}
