import { describeCause } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import type { ImageStore } from '../shared/storage/index.js';
import { retryDelayMs } from './job-storage.js';

export interface StorageGateOptions {
  store: Pick<ImageStore, 'check'>;
  logger: Logger;
  /** The longest wait between two probes while storage fails. */
  maxDelayMs: number;
  /** Storage started failing (`problem`: what it said) or answers again (null). */
  onChange: (problem: string | null) => void;
}

/**
 * Whether this worker may take jobs as far as storage is concerned. The first failure closes
 * the gate (the worker stops taking jobs, so queued jobs keep their attempts instead of running
 * to a failed upload); a probe (`store.check()`, a write for local storage) then runs with
 * backoff, and the first success, of a probe or of a running job's retried upload, opens it.
 */
export class StorageGate {
  private problem: string | null = null;
  private probing: Promise<void> | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;

  constructor(private readonly options: StorageGateOptions) {}

  get isOpen(): boolean {
    return this.problem === null;
  }

  /** Every storage outcome goes here: an error closes the gate, null (it answered) opens it. */
  readonly report = (error: Error | null): void => {
    if (this.stopped) return;
    if (error) {
      const problem = describeCause(error);
      if (this.problem !== null) return;
      this.problem = problem;
      this.options.logger.error({ err: error }, `storage is failing (${problem}): taking no new jobs until it answers`);
      this.options.onChange(problem);
      this.probing ??= this.probe().finally(() => (this.probing = undefined));
    } else if (this.problem !== null) {
      this.problem = null;
      this.options.logger.info('storage answers again: taking jobs');
      this.options.onChange(null);
      this.wake?.();
    }
  };

  private async probe(): Promise<void> {
    for (let attempt = 1; this.problem !== null && !this.stopped; attempt++) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, retryDelayMs(attempt, this.options.maxDelayMs));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
      if (this.problem === null || this.stopped) return;
      try {
        await this.options.store.check();
        this.report(null);
      } catch (err) {
        this.options.logger.debug({ err, attempt }, 'storage probe failed');
      }
    }
  }

  /** Stops probing (shutdown). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.probing;
  }
}
