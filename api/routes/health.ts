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
    // Every model is reported; the default one decides readiness (a fine-tune that cannot load
    // refuses its own jobs with 503 but does not take the whole service out of rotation).
    const names = deps.config.models.map((m) => m.name);
    const [redis, storage, ...models] = await Promise.all([probe(() => deps.queue.ping()), probe(() => deps.store.check()), ...names.map(modelCheck)]);
    const checks = Object.fromEntries(names.map((name, i) => [name, models[i] as Awaited<ReturnType<typeof modelCheck>>]));
    const ready = redis.ok && storage.ok && (checks[deps.config.model.name]?.ok ?? true);
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', checks: { redis, storage, models: checks } });
  });
  return router;
}
