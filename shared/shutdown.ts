import { withDeadline } from './errors.js';

/**
 * Runs every shutdown step in order, even after one fails (STYLE.md point 8), each bounded by
 * `deadlineMs` so a dead Redis cannot hold shutdown hostage; a failed or late step goes to `onError`.
 */
export async function runShutdownSteps(
  steps: readonly (() => unknown)[],
  deadlineMs: number,
  onError: (err: unknown) => void,
): Promise<void> {
  for (const step of steps) {
    try {
      await withDeadline(Promise.resolve(step()), deadlineMs, () => new Error('timed out'));
    } catch (err) {
      onError(err);
    }
  }
}
