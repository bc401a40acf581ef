/** The events a job's webhook may ask for; the body's `type` is `job.<event>`. */
export const WEBHOOK_EVENTS = ['started', 'completed', 'failed', 'canceled', 'expired'] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

/** Without an explicit list a webhook hears how the job ended. */
export const DEFAULT_WEBHOOK_EVENTS: readonly WebhookEvent[] = ['completed', 'failed', 'canceled', 'expired'];

/** The event a finished job's status stands for. */
export function finishedEvent(status: string): WebhookEvent | null {
  if (status === 'succeeded') return 'completed';
  if (status === 'failed') return 'failed';
  if (status === 'canceled') return 'canceled';
  if (status === 'expired') return 'expired';
  return null;
}
