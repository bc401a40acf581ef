/**
 * The worker's one GPU, as a reservation that the job loop takes before it takes a job from the
 * queue and gives back once that job's generation has ended. A worker holds at most two jobs: one
 * generating, and the one before it still being encoded and uploaded; it never takes a job that
 * would wait for its own GPU while another worker could run it.
 *
 * The holder is named by the job's lock token (BullMQ's), so a release is idempotent and a late
 * release by a job that already gave the GPU up cannot free it under another job.
 */
export class GpuGate {
  private holder: string | null = null;
  private readonly waiters = new Set<() => void>();

  /** The token of the job holding the GPU, or null. */
  get heldBy(): string | null {
    return this.holder;
  }

  /** Takes the GPU for `token` if it is free (or already `token`'s). */
  tryTake(token: string): boolean {
    if (this.holder !== null && this.holder !== token) return false;
    this.holder = token;
    return true;
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
      await new Promise<void>((resolve) => {
        const waiter = () => {
          this.waiters.delete(waiter);
          resolve();
        };
        this.waiters.add(waiter);
      });
    }
  }

  /** Gives the GPU back if `token` holds it; the next waiter takes it. */
  release(token: string): void {
    if (this.holder !== token) return;
    this.holder = null;
    this.wake();
  }

  /** Makes every waiter look again (at the GPU and at its `stop`). */
  wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }
}
