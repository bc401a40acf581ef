import { Router } from 'express';
import { z } from 'zod';
import { failFastOnRedis } from '../../shared/errors.js';
import { describeIssues } from '../../shared/job-schema.js';
import { forbiddenKeyPath } from '../../shared/request-values.js';
import { MAX_OVERLAP_S, type TenantSecret } from '../../shared/webhooks/tenant-secrets.js';
import { ownerOf } from '../auth.js';
import type { AppDeps } from '../deps.js';
import { HttpError, invalidRequest } from '../http-errors.js';

/**
 * An API key's own webhook signing secrets: `GET /v1/webhook-secrets` lists the live ones (making
 * the first on first use), `POST /v1/webhook-secrets/rotate` adds a new one and lets the others
 * run `overlap_s` longer (default a day), so receivers can switch without missing an event. Only
 * the key that owns them ever sees them. Without API_KEYS there are no tenants: WEBHOOK_SECRETS
 * (the operator's) signs everything, and these routes answer 409.
 */
const DEFAULT_OVERLAP_S = 24 * 3600;

const RotateSchema = z.strictObject(
  {
    overlap_s: z
      .number({ error: 'overlap_s must be a number of seconds' })
      .int({ error: 'overlap_s must be a whole number of seconds' })
      .min(0, { error: 'overlap_s must be at least 0' })
      .max(MAX_OVERLAP_S, { error: `overlap_s must be at most ${MAX_OVERLAP_S}` })
      .optional(),
  },
  { error: (i) => (i.code === 'unrecognized_keys' ? `unknown field: ${i.keys.join(', ')}` : 'the body must be a JSON object') },
);

const view = (secrets: TenantSecret[]) => ({
  secrets: secrets.map((s) => ({
    id: s.id,
    secret: s.secret,
    created_at: new Date(s.createdAt).toISOString(),
    expires_at: s.expiresAt === null ? null : new Date(s.expiresAt).toISOString(),
  })),
});

export function webhookSecretsRouter(deps: AppDeps): Router {
  const router = Router();
  const ownerOrRefuse = (owner: string | undefined): string => {
    if (owner === undefined || !deps.tenants) {
      throw new HttpError(409, 'api_keys_required', 'Per-key webhook secrets need API_KEYS; this service signs webhooks with its WEBHOOK_SECRETS.');
    }
    return owner;
  };

  router.get('/v1/webhook-secrets', async (_req, res) => {
    const owner = ownerOrRefuse(ownerOf(res));
    const secrets = await failFastOnRedis(deps.tenants!.secrets.ensure(owner), 1500);
    res.setHeader('Cache-Control', 'no-store');
    res.json(view(secrets));
  });

  router.post('/v1/webhook-secrets/rotate', async (req, res) => {
    const owner = ownerOrRefuse(ownerOf(res));
    const body: unknown = req.body ?? {};
    const forbidden = forbiddenKeyPath(body);
    if (forbidden !== null) throw invalidRequest([{ field: forbidden, message: `field ${forbidden} is not allowed` }]);
    const parsed = RotateSchema.safeParse(body);
    if (!parsed.success) throw invalidRequest(describeIssues(parsed.error));
    const secrets = await failFastOnRedis(deps.tenants!.secrets.rotate(owner, parsed.data.overlap_s ?? DEFAULT_OVERLAP_S), 1500);
    deps.logger.info({ owner, secrets: secrets.length }, 'webhook secret rotated');
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json(view(secrets));
  });
  return router;
}
