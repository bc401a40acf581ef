import { timingSafeEqual, createHash } from 'node:crypto';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { Router, type RequestHandler } from 'express';
import type { QueueMonitor } from '../shared/queue-monitor.js';
import { routeName } from './metrics.js';

/**
 * Bull Board, the BullMQ dashboard (queues, jobs, retries, payloads), behind HTTP basic auth.
 * It is only mounted when ADMIN_USER and ADMIN_PASSWORD are set; otherwise the path is a 404.
 */

export const DASHBOARD_PATH = '/admin/queues';
const DASHBOARD_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

export interface AdminCredentials {
  user: string;
  password: string;
}

export function dashboardRouter(monitor: QueueMonitor, admin: AdminCredentials): Router {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: monitor.queues.map((queue) => new BullMQAdapter(queue)),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'sd-jobs queues' } },
  });
  const router = Router();
  // Bull Board's page links a web font host: the policy keeps the browser on this origin (no
  // request leaves for a third party; the UI falls back to system fonts).
  const sameOrigin: RequestHandler = (_req, res, next) => {
    res.setHeader('Content-Security-Policy', DASHBOARD_CSP);
    next();
  };
  router.use(DASHBOARD_PATH, routeName(DASHBOARD_PATH), basicAuth(admin, 'sd-jobs admin'), sameOrigin, serverAdapter.getRouter() as RequestHandler);
  return router;
}

/** Constant-time comparison of both fields (hashed first so lengths do not leak either). */
export function basicAuth(expected: AdminCredentials, realm: string): RequestHandler {
  const digest = (value: string) => createHash('sha256').update(value).digest();
  const wantUser = digest(expected.user);
  const wantPassword = digest(expected.password);
  return (req, res, next) => {
    const header = req.get('authorization') ?? '';
    const match = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header);
    if (match) {
      const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon >= 0) {
        const userOk = timingSafeEqual(digest(decoded.slice(0, colon)), wantUser);
        const passwordOk = timingSafeEqual(digest(decoded.slice(colon + 1)), wantPassword);
        if (userOk && passwordOk) {
          next();
          return;
        }
      }
    }
    res
      .status(401)
      .setHeader('WWW-Authenticate', `Basic realm="${realm}", charset="UTF-8"`)
      .json({ error: { code: 'unauthorized', message: 'This page needs the admin user name and password.' } });
  };
}
