import { createHmac } from 'node:crypto';

/**
 * Standard Webhooks signatures (https://www.standardwebhooks.com): the signed content is
 * `${webhook-id}.${webhook-timestamp}.${body}`, HMAC-SHA256 with the secret's bytes (the base64
 * after `whsec_`), sent as `v1,<base64>`. Several secrets (rotation) give space-separated
 * signatures; a receiver accepts the message when any one matches a secret it knows.
 */

export const SECRET_PREFIX = 'whsec_';

/** The key bytes of a `whsec_…` secret; throws when it is not one. */
export function secretBytes(secret: string): Buffer {
  if (!secret.startsWith(SECRET_PREFIX)) throw new Error(`a webhook secret starts with ${SECRET_PREFIX}`);
  const encoded = secret.slice(SECRET_PREFIX.length);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded) || encoded.length % 4 === 1) throw new Error('a webhook secret is base64 after whsec_');
  return Buffer.from(encoded, 'base64');
}

/** The `webhook-signature` header value: one `v1,<sig>` per secret, space-separated. */
export function signatureHeader(secrets: readonly string[], msgId: string, timestampS: number, body: string): string {
  const content = `${msgId}.${timestampS}.${body}`;
  return secrets.map((secret) => `v1,${createHmac('sha256', secretBytes(secret)).update(content).digest('base64')}`).join(' ');
}

/** The headers of one delivery attempt; the timestamp is the attempt's, so receivers' replay windows hold. */
export interface SignedHeaders {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
}

export function signedHeaders(secrets: readonly string[], msgId: string, body: string, now = Date.now()): SignedHeaders {
  const timestampS = Math.floor(now / 1000);
  return {
    'webhook-id': msgId,
    'webhook-timestamp': String(timestampS),
    'webhook-signature': signatureHeader(secrets, msgId, timestampS, body),
  };
}
