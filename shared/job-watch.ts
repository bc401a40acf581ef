/**
 * When to re-read a watched job, given what the queue's event stream says about it. The end of a
 * job (completed, failed, removed) is read at once, so a waiting client answers as soon as the job
 * is over; other changes (progress, a job moving up the line) are read at most once per
 * `throttleMs`; and every watched job is read again after `safetyPollMs` without news, which
 * catches an event the subscription missed (a reconnect, a trimmed stream). One read at a time per
 * job; a change during a read asks for another after it.
 */

/** What the watcher needs of a job's record (the queue's JobRecord). */
export interface WatchedRecord {
  status: string;
}

export interface JobWatcherOptions<R extends WatchedRecord> {
  read(id: string): Promise<R | null>;
  /** Least time between reads for progress and position changes: ≤ 5 updates a second by default. */
  throttleMs?: number;
  /** A watched job with no news is read again after this long. */
  safetyPollMs?: number;
  /** After a failed read (Redis away), the next one comes this much later. */
  retryMs?: number;
}

export const WATCH_THROTTLE_MS = 200;
export const WATCH_SAFETY_POLL_MS = 2000;
export const WATCH_RETRY_MS = 1000;

/** `soon`: within the throttle; `now`: at once. */
type Urgency = 'soon' | 'now';

interface Watch<R> {
  listeners: Set<(record: R | null) => void>;
  timer: NodeJS.Timeout | undefined;
  /** When `timer` fires (epoch ms). */
  dueAt: number;
  reading: boolean;
  /** What a change during the read asked for. */
  again: Urgency | null;
  lastReadAt: number;
  status: string | null;
}

export class JobWatcher<R extends WatchedRecord> {
  private readonly watches = new Map<string, Watch<R>>();
  private readonly throttleMs: number;
  private readonly safetyPollMs: number;
  private readonly retryMs: number;
  private closed = false;

  constructor(private readonly options: JobWatcherOptions<R>) {
    this.throttleMs = options.throttleMs ?? WATCH_THROTTLE_MS;
    this.safetyPollMs = options.safetyPollMs ?? WATCH_SAFETY_POLL_MS;
    this.retryMs = options.retryMs ?? WATCH_RETRY_MS;
  }

  /** Calls `listener` with the job now and after each change, until the returned function is called. */
  watch(id: string, listener: (record: R | null) => void): () => void {
    let watch = this.watches.get(id);
    if (!watch) {
      watch = { listeners: new Set(), timer: undefined, dueAt: 0, reading: false, again: null, lastReadAt: 0, status: null };
      this.watches.set(id, watch);
    }
    watch.listeners.add(listener);
    // The first record comes at once, from the read in flight if there is one: the events are
    // subscribed before any read, so a change after it started asks for another, never a miss.
    if (!watch.reading) this.request(id, 'now');
    const w = watch;
    return () => {
      w.listeners.delete(listener);
      if (w.listeners.size === 0 && this.watches.get(id) === w) {
        clearTimeout(w.timer);
        this.watches.delete(id);
      }
    };
  }

  /** The job changed in a way worth passing on (started, progress, requeued): read within the throttle. */
  changed(id: string): void {
    this.request(id, 'soon');
  }

  /** The job ended or left the queue: read at once. */
  ended(id: string): void {
    this.request(id, 'now');
  }

  /** Every watched job last seen queued: a job ahead of them left the wait list. */
  queuedChanged(): void {
    for (const [id, watch] of this.watches) if (watch.status === 'queued') this.changed(id);
  }

  close(): void {
    this.closed = true;
    for (const watch of this.watches.values()) clearTimeout(watch.timer);
    this.watches.clear();
  }

  private request(id: string, urgency: Urgency): void {
    const watch = this.watches.get(id);
    if (!watch) return;
    if (watch.reading) {
      if (watch.again !== 'now') watch.again = urgency;
      return;
    }
    this.schedule(id, watch, urgency === 'now' ? 0 : Math.max(0, watch.lastReadAt + this.throttleMs - Date.now()));
  }

  /** Reads after `delayMs`, unless a read is already due sooner. */
  private schedule(id: string, watch: Watch<R>, delayMs: number): void {
    const dueAt = Date.now() + delayMs;
    if (watch.timer) {
      if (watch.dueAt <= dueAt) return;
      clearTimeout(watch.timer);
      watch.timer = undefined;
    }
    if (delayMs === 0) {
      void this.read(id, watch);
      return;
    }
    watch.dueAt = dueAt;
    watch.timer = setTimeout(() => {
      watch.timer = undefined;
      void this.read(id, watch);
    }, delayMs);
  }

  private async read(id: string, watch: Watch<R>): Promise<void> {
    watch.reading = true;
    watch.lastReadAt = Date.now();
    let record: R | null = null;
    let failed = false;
    try {
      record = await this.options.read(id);
    } catch {
      failed = true;
    }
    watch.reading = false;
    if (this.watches.get(id) !== watch || this.closed) return;
    const again = watch.again;
    watch.again = null;
    if (failed) {
      // Redis is away: try again shortly rather than telling listeners the job is gone.
      this.schedule(id, watch, this.retryMs);
      return;
    }
    watch.status = record?.status ?? null;
    for (const listener of [...watch.listeners]) listener(record);
    // A listener may have stopped watching (the job it waited for ended).
    if (this.watches.get(id) !== watch) return;
    if (again === 'now') this.schedule(id, watch, 0);
    else if (again === 'soon') this.schedule(id, watch, Math.max(0, watch.lastReadAt + this.throttleMs - Date.now()));
    else this.schedule(id, watch, this.safetyPollMs);
  }
}
