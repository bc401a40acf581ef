import type { Redis } from 'ioredis';
import type { Logger } from '../shared/logger.js';

// Renew or release only a lock we still hold: compare-and-set, atomically.
const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

/**
 * One leader among autoscalers: a Redis key set with NX and a TTL, renewed every third of the TTL
 * by its holder. A holder that dies stops renewing, the key expires, and a standby (trying at the
 * same rhythm) takes it within about 1⅓ TTL. `holds()` is checked locally before every action and
 * turns false before the key can have expired, so an old leader stalled past its TTL never acts
 * alongside the new one.
 */
export class LeaderLock {
  private leader = false;
  private validUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private refreshing: Promise<boolean> | undefined;
  private readonly listeners = new Set<(leader: boolean) => void>();

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    readonly id: string,
    private readonly ttlMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (this.timer) return;
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), Math.max(50, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  /** Leader, and sure of it: the last renewal is recent enough that the key cannot have expired. */
  holds(): boolean {
    if (this.leader && Date.now() >= this.validUntil) this.setLeader(false);
    return this.leader;
  }

  /** Asks Redis, for the rare actions worth a round trip (starting a worker). */
  async verify(): Promise<boolean> {
    return this.holds() && (await this.redis.get(this.key)) === this.id;
  }

  onChange(listener: (leader: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Renews the lock if held, tries to take it otherwise. */
  refresh(): Promise<boolean> {
    this.refreshing ??= this.attempt().finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }

  private async attempt(): Promise<boolean> {
    const started = Date.now();
    try {
      // Renew first even when we think we lost it: the key may still be ours after a slow round trip.
      let held = Number(await this.redis.eval(RENEW, 1, this.key, this.id, this.ttlMs)) === 1;
      if (!held) held = (await this.redis.set(this.key, this.id, 'PX', this.ttlMs, 'NX')) === 'OK';
      if (held) {
        // Counted from before the request: the key lives at least this long.
        this.validUntil = started + Math.floor(this.ttlMs * 0.8);
      }
      this.setLeader(held);
      return held;
    } catch (err) {
      this.logger.warn({ err }, 'leader lock: Redis did not answer');
      this.holds();
      return this.leader;
    }
  }

  /** Stops renewing and gives the lock up at once, so a standby need not wait for the TTL. */
  async release(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.refreshing?.catch(() => undefined);
    this.setLeader(false);
    await this.redis.eval(RELEASE, 1, this.key, this.id);
  }

  private setLeader(leader: boolean): void {
    if (leader === this.leader) return;
    this.leader = leader;
    if (!leader) this.validUntil = 0;
    for (const listener of this.listeners) listener(leader);
  }
}
