import { Router, type Request } from 'express';
import type { JobRecord } from '../../shared/job-queue.js';
import { HttpError } from '../http-errors.js';
import { jobView } from '../job-view.js';
import type { AppDeps } from '../deps.js';
import { baseUrlOf, parseGenerationRequest } from '../request-parsing.js';
import { streamImage } from './images.js';

export function jobsRouter(deps: AppDeps): Router {
  const router = Router();

  const load = async (req: Request): Promise<JobRecord> => {
    const id = String(req.params.id);
    const record = /^[A-Za-z0-9-]{1,64}$/.test(id) ? await deps.queue.get(id) : null;
    if (!record) throw new HttpError(404, 'job_not_found', `No job with id ${id}.`, 'id');
    return record;
  };

  router.post('/v1/jobs', async (req, res) => {
    const payload = await parseGenerationRequest(deps, req.body, 'body');
    const record = await deps.queue.enqueue(payload);
    deps.logger.info({ jobId: record.id, model: payload.model }, 'job queued');
    const view = jobView(record, baseUrlOf(deps, req));
    res.status(202).location(view.links.self).json(view);
  });

  router.get('/v1/jobs/:id', async (req, res) => {
    res.json(jobView(await load(req), baseUrlOf(deps, req)));
  });

  router.get('/v1/jobs/:id/images/:file', async (req, res) => {
    const record = await load(req);
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
