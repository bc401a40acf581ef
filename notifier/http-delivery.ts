import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { AddressPolicy } from '../shared/webhooks/address-policy.js';

/**
 * One delivery attempt: POST the signed body, follow no redirect, give up after the timeout.
 * The SSRF guard sits in the socket's DNS lookup, so the address checked is the address
 * connected to — a name that resolves (or rebinds) to an internal address never gets a socket.
 */

export type AttemptResult =
  | { ok: true; statusCode: number }
  | {
      ok: false;
      /** null when no HTTP answer came (refused, timed out, connection error). */
      statusCode: number | null;
      error: string;
      /** The receiver's Retry-After (429/503), in ms. */
      retryAfterMs: number | null;
      /**
       * Why to stop now instead of retrying: gone (410) · refused (an address webhooks may not
       * reach) · exhausted (nothing left to deliver, e.g. the job is no longer stored).
       */
      permanent: 'gone' | 'refused' | 'exhausted' | null;
    };

const REFUSED = 'ERR_WEBHOOK_ADDRESS_REFUSED';
const MAX_RETRY_AFTER_MS = 24 * 3_600_000;

class AddressRefusedError extends Error {
  readonly code = REFUSED;
}

/** dns.lookup that drops addresses the policy refuses, and fails when none is left. */
export function guardedLookup(policy: AddressPolicy): net.LookupFunction {
  return ((hostname: string, options: dns.LookupOptions, callback: (...args: unknown[]) => void) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err);
      const allowed = policy.hostAllowed(hostname) ? addresses : addresses.filter((a) => policy.check(a.address) === null);
      const first = allowed[0];
      if (!first) {
        const shown = addresses[0];
        const why = shown ? `${shown.address} (${policy.check(shown.address)} address)` : 'no address';
        return callback(new AddressRefusedError(`${hostname} resolves to ${why}, which webhooks may not reach`));
      }
      if (options.all) callback(null, allowed);
      else callback(null, first.address, first.family);
    });
  }) as net.LookupFunction;
}

/** Retry-After as seconds or an HTTP date, in ms from now; null when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | null {
  if (!value) return null;
  const trimmed = value.trim();
  const ms = /^\d+$/.test(trimmed) ? Number(trimmed) * 1000 : Date.parse(trimmed) - now;
  if (!Number.isFinite(ms)) return null;
  return Math.min(Math.max(0, ms), MAX_RETRY_AFTER_MS);
}

export class WebhookHttpClient {
  private readonly lookup: net.LookupFunction;
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;

  constructor(
    private readonly policy: AddressPolicy,
    private readonly timeoutMs: number,
  ) {
    this.lookup = guardedLookup(policy);
    // Sockets are pooled per host:port; each was checked when it connected.
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
    this.httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 64 });
  }

  post(url: string, body: string, headers: Record<string, string>): Promise<AttemptResult> {
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      return Promise.resolve({ ok: false, statusCode: null, error: 'not a URL', retryAfterMs: null, permanent: 'refused' });
    }
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      return Promise.resolve({ ok: false, statusCode: null, error: 'not an http(s) URL', retryAfterMs: null, permanent: 'refused' });
    }
    // A literal address gets no DNS lookup, so it is checked here.
    const host = target.hostname.replace(/^\[|\]$/g, '');
    if (net.isIP(host) !== 0 && !this.policy.hostAllowed(host)) {
      const reason = this.policy.check(host);
      if (reason !== null) {
        return Promise.resolve({ ok: false, statusCode: null, error: `${host} is a ${reason} address, which webhooks may not reach`, retryAfterMs: null, permanent: 'refused' });
      }
    }
    const secure = target.protocol === 'https:';
    return new Promise<AttemptResult>((resolve) => {
      let settled = false;
      const settle = (result: AttemptResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(result);
      };
      const options: http.RequestOptions = {
        method: 'POST',
        agent: secure ? this.httpsAgent : this.httpAgent,
        lookup: this.lookup,
        headers: {
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(body)),
          'user-agent': 'sd-jobs-webhooks/1',
          ...headers,
        },
      };
      const request = (secure ? https : http).request(target, options, (response) => {
        const statusCode = response.statusCode ?? 0;
        // The status decides; the answer's body is drained (to reuse the socket) and ignored.
        response.resume();
        response.on('error', () => undefined);
        const drain = setTimeout(() => response.destroy(), this.timeoutMs);
        response.on('close', () => clearTimeout(drain));
        if (statusCode >= 200 && statusCode < 300) return settle({ ok: true, statusCode });
        const retryAfterMs = statusCode === 429 || statusCode === 503 ? parseRetryAfter(response.headers['retry-after']) : null;
        const redirect =
          statusCode >= 300 && statusCode < 400 ? ` (redirects are not followed${response.headers.location ? `: ${response.headers.location}` : ''})` : '';
        settle({
          ok: false,
          statusCode,
          error: `the receiver answered ${statusCode}${redirect}`,
          retryAfterMs,
          permanent: statusCode === 410 ? 'gone' : null,
        });
      });
      const timer = setTimeout(() => request.destroy(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      request.on('error', (err: NodeJS.ErrnoException) => {
        const refused = err.code === REFUSED;
        settle({ ok: false, statusCode: null, error: err.message || String(err.code), retryAfterMs: null, permanent: refused ? 'refused' : null });
      });
      request.end(body);
    });
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}
