import { Router } from 'express';
import { withDeadline } from '../../shared/errors.js';
import type { AppDeps } from '../deps.js';

/** Liveness says the process answers; readiness says Redis and storage answer too. */
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
    const [redis, storage] = await Promise.all([probe(() => deps.queue.ping()), probe(() => deps.store.check())]);
    const ready = redis.ok && storage.ok;
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', checks: { redis, storage } });
  });
  return router;
}
