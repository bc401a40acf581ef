import { Router } from 'express';
import type { AppDeps } from '../deps.js';
import { modelView } from '../models.js';

/**
 * `GET /v1/models`: the served models, each with its state (available, loading, idle,
 * unavailable with the load error and the next try), its workers and what its export can do.
 */
export function modelsRouter(deps: AppDeps): Router {
  const router = Router();
  router.get('/v1/models', async (_req, res) => {
    const name = deps.config.model.name;
    const [published, state] = await Promise.all([deps.models.get(name), deps.models.state ? deps.models.state(name) : null]);
    res.json({ models: [modelView(name, true, published, state)] });
  });
  return router;
}
