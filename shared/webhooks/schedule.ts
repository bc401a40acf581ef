/**
 * Durations as operators write them (`0`, `250ms`, `5s`, `5m`, `2h`; a bare number is seconds),
 * for the webhook retry schedule.
 */
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match) throw new Error(`not a duration: ${JSON.stringify(text)} (expected e.g. 0, 500ms, 5s, 5m, 2h)`);
  return Math.round(Number(match[1]) * (UNIT_MS[match[2] ?? 's'] as number));
}

/** `0,5s,5m` → [0, 5000, 300000]: the delay before each attempt, the first one included. */
export function parseSchedule(text: string): number[] {
  const delays = text.split(',').map(parseDuration);
  if (delays.length === 0) throw new Error('the schedule needs at least one attempt');
  return delays;
}

/** ±20 % so that receivers coming back up are not hit by every retry at the same instant. */
export function withJitter(delayMs: number, random = Math.random): number {
  return Math.round(delayMs * (0.8 + 0.4 * random()));
}
