import { Router } from 'express';
import { failFastOnRedis } from '../../shared/errors.js';
import type { AppDeps } from '../deps.js';
import { modelView } from '../models.js';

/**
 * `GET /v1/models`: the served models, each with its trigger words, its state (available, loading,
 * idle, unavailable with the load error and the next try), its workers by state, its load and what
 * its export can do.
 */
export function modelsRouter(deps: AppDeps): Router {
  const router = Router();
  router.get('/v1/models', async (_req, res) => {
    // Capabilities come from the exports (read at boot); states from the workers' reports; the
    // load from each model's own queue. A part Redis cannot give now is null, not a failed answer.
    const loads = deps.queueLoad?.readAll ? await failFastOnRedis(deps.queueLoad.readAll(), 1500).catch(() => null) : null;
    const models = await Promise.all(
      deps.config.models.map(async (entry) => {
        const state = deps.modelStates ? await deps.modelStates.state(entry.name).catch(() => null) : null;
        return modelView(entry, deps.models.get(entry.name) ?? null, state, loads?.get(entry.name) ?? null, deps.config.limits.defaultSteps);
      }),
    );
    res.json({ models });
  });
  return router;
}
