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
    // Capabilities come from the export (read at boot); the state from the workers' reports.
    const state = deps.modelStates ? await deps.modelStates.state(name).catch(() => null) : null;
    res.json({ models: [modelView(name, true, deps.models.get(name) ?? null, state)] });
  });
  return router;
}
