import { Router } from 'express';
import { withDeadline } from '../../shared/errors.js';
import type { AppDeps } from '../deps.js';

/** Liveness says the process answers; readiness says Redis and storage answer (storage takes a write) and the model can be served. */
export function healthRouter(deps: AppDeps): Router {
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (_req, res) => {
    const probe = async (fn: () => Promise<void>) => {
      try {
        await withDeadline(fn(), 1500, () => new Error('timed out'));
        return { ok: true as const };
      } catch (err) {
        return { ok: false as const, error: err instanceof Error ? err.message : String(err) };
      }
    };
    // The served model, by name: a model whose load failed makes the service unable to serve.
    const modelCheck = async (name: string) => {
      const states = deps.modelStates;
      if (!states) return { ok: true, state: 'unknown', error: null };
      try {
        const state = await withDeadline(states.state(name), 1500, () => new Error('timed out'));
        return { ok: state.state !== 'unavailable', state: state.state, error: state.error };
      } catch (err) {
        return { ok: false, state: 'unknown', error: err instanceof Error ? err.message : String(err) };
      }
    };
    const name = deps.config.model.name;
    const [redis, storage, model] = await Promise.all([probe(() => deps.queue.ping()), probe(() => deps.store.check()), modelCheck(name)]);
    const ready = redis.ok && storage.ok && model.ok;
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', checks: { redis, storage, models: { [name]: model } } });
  });
  return router;
}
