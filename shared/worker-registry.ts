import type { Redis } from 'ioredis';

/**
 * Who is working: each worker heartbeats a record into Redis (its slot, state, current job); the
 * API lists them and the autoscaler counts and adopts them. A record lives `ttlMs` past its last
 * heartbeat, so a worker killed with -9 drops out on its own.
 *
 * Key layout (all under the deployment's QUEUE_PREFIX):
 *   <prefix>:workers               sorted set: worker id → last heartbeat (ms), the index
 *   <prefix>:worker:<id>           JSON WorkerRecord, expires ttlMs after the last heartbeat
 *   <prefix>:autoscaler:leader     the leader autoscaler's id (SET NX PX, renewed while it leads)
 *   <prefix>:autoscaler:status     JSON AutoscalerStatus, written by the leader each control tick
 */

/** A worker's lifecycle as others see it; `stopped` workers remove their record. */
export type RegisteredWorkerState = 'starting' | 'ready' | 'busy' | 'draining';

export interface WorkerRecord {
  id: string;
  /** The slot the worker holds: `gpu<N>` or `cpu<N>` under the autoscaler; what it was given otherwise. */
  slot: string;
  state: RegisteredWorkerState;
  currentJob: string | null;
  startedAt: number;
  lastSeenAt: number;
  jobsDone: number;
  jobsFailed: number;
  host: string;
  pid: number;
  model: string;
  /** Why a ready worker takes no jobs for now (storage failing); null or absent: it takes them. */
  paused?: string | null;
  /**
   * The lock token of `currentJob`: whoever sees this worker die (its autoscaler) can put the
   * job back in the queue at once, and only while the dead worker still holds it.
   */
  currentJobToken?: string | null;
  /**
   * Every job the worker holds with its lock token, the generating one first: a worker encodes and
   * uploads up to WORKER_FINISHING_JOBS jobs while the next generates, and names each until the
   * queue has its outcome. Absent in older records.
   */
  heldJobs?: Array<{ id: string; token: string | null }>;
  /**
   * The ids its BullMQ loops put in front of every lock token they take a job with
   * (`<owner>:<n>`), written before it takes any: a job taken in the moment before `heldJobs`
   * names it is still found as this worker's when it dies. Absent in older records.
   */
  lockOwners?: string[];
}

export type SlotState = 'free' | 'occupied' | 'backoff' | 'crash-loop' | 'failed';

export interface SlotReport {
  id: string;
  kind: 'gpu' | 'cpu';
  state: SlotState;
  workerId: string | null;
  /** Why a slot is unusable (crash loop, model load failure), with the worker's last error. */
  reason: string | null;
  /** Until when a backing-off or crash-looping slot is held back (ms epoch). */
  until: number | null;
}

export interface AutoscalerStatus {
  leader: string;
  host: string;
  at: number;
  /** What the load asks for, clamped to the bounds. */
  desired: number;
  /** The workers the autoscaler is running toward now. */
  target: number;
  load: number;
  bounds: { min: number; max: number };
  lastDecision: { action: string; reason: string; at: number } | null;
  slots: SlotReport[];
  /** Each model's part (with a catalogue): its load, what it asks for, its workers and bounds. */
  models?: AutoscalerModelStatus[];
}

export interface AutoscalerModelStatus {
  name: string;
  load: number;
  desired: number;
  target: number;
  /** Live workers (draining ones excluded). */
  workers: number;
  bounds: { min: number; max: number };
  /** When its oldest waiting job was created (ms epoch); null when none waits. */
  oldestWaitingAt: number | null;
  lastDecision: { action: string; reason: string; at: number } | null;
}

export const workersIndexKey = (prefix: string) => `${prefix}:workers`;
export const workerKey = (prefix: string, id: string) => `${prefix}:worker:${id}`;
export const leaderKey = (prefix: string) => `${prefix}:autoscaler:leader`;
export const autoscalerStatusKey = (prefix: string) => `${prefix}:autoscaler:status`;

/** Read side, as the API needs it. */
export interface WorkerDirectory {
  list(): Promise<WorkerRecord[]>;
  autoscaler(): Promise<AutoscalerStatus | null>;
}

export class WorkerRegistry implements WorkerDirectory {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  async put(record: WorkerRecord, ttlMs: number): Promise<void> {
    await this.redis
      .multi()
      .set(workerKey(this.prefix, record.id), JSON.stringify(record), 'PX', ttlMs)
      .zadd(workersIndexKey(this.prefix), record.lastSeenAt, record.id)
      .exec();
  }

  async remove(id: string): Promise<void> {
    await this.redis.multi().del(workerKey(this.prefix, id)).zrem(workersIndexKey(this.prefix), id).exec();
  }

  /** One worker's record while it lives (or until its autoscaler removes it). */
  async get(id: string): Promise<WorkerRecord | null> {
    const raw = await this.redis.get(workerKey(this.prefix, id));
    return raw ? parseRecord(raw) : null;
  }

  /** Live records, oldest first; index entries whose record expired are pruned on the way. */
  async list(): Promise<WorkerRecord[]> {
    const ids = await this.redis.zrange(workersIndexKey(this.prefix), 0, -1);
    if (ids.length === 0) return [];
    const raws = await this.redis.mget(ids.map((id) => workerKey(this.prefix, id)));
    const records: WorkerRecord[] = [];
    const expired: string[] = [];
    raws.forEach((raw, i) => {
      const record = raw ? parseRecord(raw) : null;
      if (record) records.push(record);
      else expired.push(ids[i] as string);
    });
    if (expired.length > 0) await this.redis.zrem(workersIndexKey(this.prefix), ...expired);
    return records.sort((a, b) => a.startedAt - b.startedAt || a.id.localeCompare(b.id));
  }

  async autoscaler(): Promise<AutoscalerStatus | null> {
    const raw = await this.redis.get(autoscalerStatusKey(this.prefix));
    if (!raw) return null;
    try {
      return JSON.parse(raw) as AutoscalerStatus;
    } catch {
      return null;
    }
  }

  async putAutoscalerStatus(status: AutoscalerStatus, ttlMs: number): Promise<void> {
    await this.redis.set(autoscalerStatusKey(this.prefix), JSON.stringify(status), 'PX', ttlMs);
  }
}

function parseRecord(raw: string): WorkerRecord | null {
  try {
    const value = JSON.parse(raw) as WorkerRecord;
    return typeof value.id === 'string' && typeof value.slot === 'string' ? value : null;
  } catch {
    return null;
  }
}
