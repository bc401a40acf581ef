/**
 * The worker's one GPU, as a reservation that the job loop takes before it takes a job from the
 * queue and gives back once that job's generation has ended. A worker holds one generating job and
 * the jobs before it still being encoded and uploaded; it never takes a job that
 * would wait for its own GPU while another worker could run it, except in the last moments of a
 * generation whose end the holder announced (`endingSoon`): then one job may be taken early, as
 * the `next` holder, so that the queue's round trips happen while the GPU still works. That job
 * waits for the GPU (`acquire`) and starts the moment the generation before it ends.
 *
 * Holders are named by the job's lock token (BullMQ's), so a release is idempotent and a late
 * release by a job that already gave the GPU up cannot free it under another job.
 */
export class GpuGate {
  private holder: string | null = null;
  /** The job taken early, waiting for the holder's generation to end. */
  private next: string | null = null;
  /** The holder announced that its generation is about to end: one job may be taken early. */
  private endingSoon = false;
  /** When the job taken early (`next`, then the holder it became) was given its place. */
  private nextAt: number | undefined;
  private holderTakenEarlyAt: number | undefined;
  private readonly waiters = new Set<() => void>();

  /** The token of the job holding the GPU, or null. */
  get heldBy(): string | null {
    return this.holder;
  }

  /** The token of the job taken early to follow the holder, or null. */
  get nextBy(): string | null {
    return this.next;
  }

  /**
   * Takes the GPU for `token` if it is free (or already `token`'s), or the place after the
   * holder if the holder announced its end and nobody has that place yet.
   */
  tryTake(token: string): boolean {
    if (this.holder === null) {
      this.holder = token;
      this.holderTakenEarlyAt = undefined;
      return true;
    }
    if (this.holder === token || this.next === token) return true;
    if (this.endingSoon && this.next === null) {
      this.next = token;
      this.nextAt = performance.now();
      return true;
    }
    return false;
  }

  /** When `token` was given the place after a holder whose end was announced; undefined: it was not taken early. */
  takenEarlyAt(token: string): number | undefined {
    if (this.next === token) return this.nextAt;
    if (this.holder === token) return this.holderTakenEarlyAt;
    return undefined;
  }

  /**
   * Waits until the GPU is free and takes it for `token`, unless `stop()` turns true first (the
   * worker is closing or pausing): then resolves false without taking it. `stop` is read again
   * on every `wake()`.
   */
  async take(token: string, stop: () => boolean): Promise<boolean> {
    for (;;) {
      if (stop()) return false;
      if (this.tryTake(token)) return true;
      await this.changed();
    }
  }

  /**
   * Waits until `token`, taken early, holds the GPU. Resolves false, giving up the place, when
   * `maxWaitMs` passes first (the generation before it ran past its estimate); rejects with the
   * signal's reason when it aborts. At once for a token that holds the GPU already.
   */
  async acquire(token: string, maxWaitMs: number, signal?: AbortSignal): Promise<boolean> {
    const giveUpAt = performance.now() + maxWaitMs;
    while (this.holder !== token) {
      if (this.next !== token) return false;
      signal?.throwIfAborted();
      const left = giveUpAt - performance.now();
      if (left <= 0) {
        this.withdraw(token);
        return false;
      }
      await this.changed(left, signal);
    }
    return true;
  }

  /** The holder's generation ends within moments: one job may now be taken to follow it. */
  announceEnd(token: string): void {
    if (this.holder !== token || this.endingSoon) return;
    this.endingSoon = true;
    this.wake();
  }

  /**
   * Gives the GPU back if `token` holds it (the job taken early, if any, holds it now), or gives
   * up the place after the holder if `token` has it.
   */
  release(token: string): void {
    if (this.holder === token) {
      this.holder = this.next;
      this.holderTakenEarlyAt = this.next === null ? undefined : this.nextAt;
      this.next = null;
      this.endingSoon = false;
      this.wake();
    } else if (this.next === token) {
      this.next = null;
      this.wake();
    }
  }

  /**
   * The job taken early gives its place up (it waited too long): no other job is taken early
   * during this generation.
   */
  withdraw(token: string): void {
    if (this.next !== token) return;
    this.next = null;
    this.endingSoon = false;
    this.wake();
  }

  /** Makes every waiter look again (at the GPU and at its `stop`). */
  wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  /** Resolves on the next `wake()`, or after `timeoutMs`, or when `signal` aborts; leaves no waiter behind. */
  private changed(timeoutMs?: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        this.waiters.delete(done);
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.waiters.add(done);
      const timer = timeoutMs === undefined ? undefined : setTimeout(done, timeoutMs);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}
