import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Redis } from 'ioredis';
import type { Config } from '../shared/config.js';
import { withDeadline } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { JobRecovery } from '../shared/job-recovery.js';
import { noteModelRetry, readModelStatus } from '../shared/model-registry.js';
import { BullQueueLoad, type QueueLoad, type QueueLoadSource } from '../shared/queue-load.js';
import { closeRedis, createRedis } from '../shared/redis.js';
import { leaderKey, WorkerRegistry } from '../shared/worker-registry.js';
import { LeaderLock } from './leader-lock.js';
import { LocalDriver } from './local-driver.js';
import { decide, initialTarget, type PendingScale, type PolicyConfig, type ScaleDecision } from './scale-policy.js';
import { resolveSlots, type GpuInventory, type Slot } from './slots.js';
import type { DriverWorker, WorkerDriver } from './worker-driver.js';

export interface AutoscalerDeps {
  driver: WorkerDriver;
  registry: WorkerRegistry;
  load: Pick<QueueLoadSource, 'read'>;
  lock: LeaderLock;
  policy: PolicyConfig;
  intervalMs: number;
  logger: Logger;
  /** Puts a dead worker's job back in the queue at once; without it the job waits for its lock to lapse. */
  recovery?: Pick<JobRecovery, 'requeue'>;
  /**
   * True while the model's last load failed: one worker is kept (re)trying it, load or not, so a
   * model that comes back is found without a restart or a job (the API refuses jobs meanwhile).
   */
  modelUnavailable?: () => Promise<boolean>;
}

/** One control-loop pass as the leader saw it: the inputs and what it decided. */
export interface TickReport {
  at: number;
  load: QueueLoad;
  decision: ScaleDecision;
  workers: { live: number; draining: number; starting: number; busy: number };
  slots: { total: number; usable: number; free: number };
}

type TickListener = (report: TickReport) => void;

/**
 * The control loop: while it leads, every `intervalMs` it reads the queue's full load and the
 * registry, asks the policy for a target and moves the driver toward it: starts workers in free
 * slots, stops surplus ones idle first. Never more worker processes than the maximum, draining
 * ones included, and never two on one slot (the driver refuses).
 */
export class Autoscaler {
  private target: number | null = null;
  private pending: PendingScale | null = null;
  private everLed = false;
  private started = false;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private lastReason: string | null = null;
  private lastChange: { action: string; reason: string; at: number } | null = null;
  private readonly listeners = new Set<TickListener>();
  /** Dead workers' jobs being put back (see afterExit). */
  private readonly recovering = new Set<Promise<void>>();

  constructor(private readonly deps: AutoscalerDeps) {
    deps.lock.onChange((leader) => {
      if (leader) {
        deps.logger.info({ autoscalerId: deps.lock.id }, 'leading: this autoscaler now scales the workers');
        // Act now rather than a whole interval later: a standby taking over may find jobs waiting.
        if (this.started && !this.closing) setImmediate(() => void this.tick());
      } else if (!this.closing) {
        deps.logger.warn({ autoscalerId: deps.lock.id }, 'no longer the leader: standing by');
      }
      // A new term starts from what is running, not from an old decision.
      this.target = null;
      this.pending = null;
    });
    deps.driver.onEvent((event) => {
      if (event.type !== 'exited') return;
      const recovery = this.afterExit(event.worker).finally(() => this.recovering.delete(recovery));
      this.recovering.add(recovery);
    });
  }

  /** Resolves once the jobs of workers that have exited so far are back in the queue (or left to the stalled check). */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.recovering]);
  }

  /**
   * A worker is gone: its jobs (those its record names that it still holds) go back to the queue
   * now rather than once its lock lapses, and its record is dropped rather than left to expire,
   * so the job no longer shows as running.
   */
  private async afterExit(worker: DriverWorker): Promise<void> {
    const { registry, recovery, logger } = this.deps;
    try {
      const record = await registry.get(worker.id);
      // The job it generated and the one it was still uploading (heldJobs), or the one older records name.
      const held = record?.heldJobs ?? (record?.currentJob ? [{ id: record.currentJob, token: record.currentJobToken ?? null }] : []);
      for (const { id: jobId, token } of held) {
        if (!recovery || !token) continue;
        const outcome = await recovery.requeue(jobId, token, `its worker ${worker.id} died`);
        if (outcome === 'requeued') logger.info({ jobId, workerId: worker.id }, "dead worker's job put back in the queue");
        else if (outcome === 'failed') logger.error({ jobId, workerId: worker.id }, "dead worker's job failed: it was running each time its worker died");
      }
    } catch (err) {
      logger.warn({ err, workerId: worker.id }, "could not put the dead worker's job back; the stalled check will once its lock lapses");
    }
    await registry.remove(worker.id).catch(() => undefined);
  }

  get isLeader(): boolean {
    return this.deps.lock.holds();
  }

  onTick(listener: TickListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start(): void {
    if (this.started || this.closing) return;
    this.started = true;
    this.deps.lock.start();
    const loop = () => {
      if (this.closing) return;
      this.timer = setTimeout(() => void this.tick().finally(loop), this.deps.intervalMs);
    };
    void this.tick().finally(loop);
  }

  /** One pass; concurrent calls share it. */
  tick(): Promise<void> {
    this.ticking ??= this.pass()
      .catch((err: unknown) => this.deps.logger.error({ err }, 'autoscaler tick failed; trying again next tick'))
      .finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async pass(): Promise<void> {
    const { driver, registry, lock, policy, logger } = this.deps;
    if (this.closing || !lock.holds()) return;
    // Independent reads: one round trip's wait per tick, not two.
    const [records, load, modelDown] = await Promise.all([
      registry.list(),
      this.deps.load.read(),
      this.deps.modelUnavailable?.().catch(() => false) ?? false,
    ]);
    driver.sync(records);
    const bounds: PolicyConfig = modelDown ? { ...policy, minWorkers: Math.max(policy.minWorkers, 1) } : policy;
    if (this.closing || !lock.holds()) return;

    const now = Date.now();
    const all = driver.workers();
    const live = all.filter((w) => w.phase !== 'draining');
    const usable = driver.usableSlotCount();
    if (this.target === null) {
      // First pass of a term: adopt what runs; a fresh start begins at initial_replicas.
      this.target = live.length > 0 || this.everLed ? live.length : initialTarget(policy, usable);
      this.everLed = true;
    }
    const decision = decide({ now, load: load.load, workers: this.target, usableSlots: usable, pending: this.pending }, bounds);
    this.pending = decision.pending;
    this.target = decision.target;

    const report: TickReport = {
      at: now,
      load,
      decision,
      workers: {
        live: live.length,
        draining: all.length - live.length,
        starting: live.filter((w) => w.phase === 'starting').length,
        busy: live.filter((w) => w.phase === 'busy').length,
      },
      slots: { total: driver.slots.length, usable, free: driver.freeSlots().length },
    };
    const inputs = {
      load: load.load,
      queue: { waiting: load.waiting, prioritized: load.prioritized, delayedDue: load.delayedDue, active: load.active },
      workers: report.workers,
      slots: report.slots,
      desired: decision.desired,
      target: decision.target,
      reason: decision.reason,
      pendingSinceMs: decision.pending ? now - decision.pending.since : null,
    };
    if (decision.action !== 'hold') {
      this.lastChange = { action: decision.action, reason: decision.reason, at: now };
      logger.info(inputs, `scale ${decision.action} to ${decision.target} (${decision.reason})`);
    } else if (decision.reason !== this.lastReason) {
      logger.info(inputs, `hold at ${decision.target} (${decision.reason})`);
    } else {
      logger.debug(inputs, `hold at ${decision.target} (${decision.reason})`);
    }
    this.lastReason = decision.reason;

    await this.reconcile(decision.target);
    await registry
      .putAutoscalerStatus(
        {
          leader: lock.id,
          host: os.hostname(),
          at: now,
          desired: decision.desired,
          target: decision.target,
          load: load.load,
          bounds: { min: policy.minWorkers, max: policy.maxWorkers },
          lastDecision: this.lastChange,
          slots: driver.slotReports(),
        },
        Math.max(3 * this.deps.intervalMs, 5000),
      )
      .catch((err: unknown) => logger.warn({ err }, 'could not write the autoscaler status'));
    for (const listener of this.listeners) listener(report);
  }

  /** Moves the running workers toward `target`. */
  private async reconcile(target: number): Promise<void> {
    const { driver, lock, policy, logger } = this.deps;
    const all = driver.workers();
    const live = all.filter((w) => w.phase !== 'draining');
    if (live.length < target) {
      // Draining workers still hold their slot and count toward the maximum.
      let room = Math.min(target - live.length, policy.maxWorkers - all.length);
      const free = driver.freeSlots();
      if (room > 0 && free.length > 0 && !(await lock.verify())) return;
      for (const slot of free) {
        if (room <= 0) break;
        driver.start(slot);
        room -= 1;
      }
      if (room > 0) logger.debug({ missing: room, target }, 'waiting for a free slot');
    } else if (live.length > target) {
      for (const worker of pickToStop(live, live.length - target)) void driver.stop(worker.id, `scale down to ${target}`);
    }
  }

  /**
   * Stops the loop. `stopWorkers` (default) drains every worker first; false leaves them running
   * for a standby autoscaler to adopt. The lock is released either way.
   */
  close(options: { stopWorkers?: boolean } = {}): Promise<void> {
    this.closing ??= (async () => {
      clearTimeout(this.timer);
      await withDeadline(this.ticking ?? Promise.resolve(), 5000, () => new Error('tick did not finish')).catch(() => undefined);
      const stopWorkers = options.stopWorkers ?? true;
      // SIGTERM first (their records turn to draining), then hand the lock on, then wait for the drains.
      const drained = this.deps.driver.close({ stopWorkers });
      await this.deps.lock.release().catch((err: unknown) => this.deps.logger.warn({ err }, 'could not release the leader lock'));
      await drained;
    })();
    return this.closing;
  }
}

/** Idle workers first, then ones still loading, busy ones last; the youngest first within each. */
export function pickToStop(workers: readonly DriverWorker[], count: number): DriverWorker[] {
  const rank = (w: DriverWorker) => (w.phase === 'ready' ? 0 : w.phase === 'starting' ? 1 : 2);
  return [...workers].sort((a, b) => rank(a) - rank(b) || b.startedAt - a.startedAt).slice(0, Math.max(0, count));
}

export interface StartAutoscalerOptions {
  /** The repository root, where worker/main.ts lives. */
  cwd: string;
  /** Another worker command (tests use fixtures that crash). */
  command?: readonly string[];
  stdout?: 'inherit' | 'ignore' | number;
  /** The workers' base environment; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** GPU detection (tests): nvidia-smi's indices, or the whole inventory. */
  detectGpus?: () => Promise<number[] | GpuInventory>;
  /** Start the control loop at once (default true). */
  autostart?: boolean;
}

export interface RunningAutoscaler {
  id: string;
  autoscaler: Autoscaler;
  driver: LocalDriver;
  registry: WorkerRegistry;
  slots: Slot[];
  close(options?: { stopWorkers?: boolean }): Promise<void>;
  /**
   * For a forced stop: SIGKILL to every worker, then their jobs go back to the queue at once (the
   * workers are gone, so their locks need not lapse first); bounded by `withinMs`.
   */
  kill(withinMs: number): Promise<void>;
}

/** Builds the autoscaler with the local driver from configuration; `npm start`, autoscaler/main.ts and tests use it. */
export async function startAutoscaler(config: Readonly<Config>, logger: Logger, options: StartAutoscalerOptions): Promise<RunningAutoscaler> {
  const a = config.autoscaler;
  const id = a.id ?? `${os.hostname()}-${process.pid}-${randomBytes(2).toString('hex')}`;
  const log = logger.child({ autoscalerId: id });
  const slots = await resolveSlots(a, options.detectGpus);
  const policy: PolicyConfig = {
    minWorkers: a.minWorkers,
    maxWorkers: Math.min(a.maxWorkers ?? slots.length, slots.length),
    initialWorkers: a.initialWorkers,
    targetJobsPerWorker: a.targetJobsPerWorker,
    upscaleDelayS: a.upscaleDelayS,
    downscaleDelayS: a.downscaleDelayS,
    downscaleToZeroDelayS: a.downscaleToZeroDelayS,
  };
  if (a.maxWorkers !== undefined && a.maxWorkers > slots.length) {
    log.warn({ maxWorkers: a.maxWorkers, slots: slots.length }, 'AUTOSCALER_MAX_WORKERS exceeds the slots of this machine; one worker per slot at most');
  }
  const redis: Redis = createRedis(config.redisUrl, 'worker');
  redis.on('error', (err) => log.debug({ err: err.message }, 'redis connection error'));
  const registry = new WorkerRegistry(redis, config.queuePrefix);
  const load = new BullQueueLoad(redis, config.queuePrefix);
  const lock = new LeaderLock(redis, leaderKey(config.queuePrefix), id, a.leaderTtlMs, log);
  const recovery = new JobRecovery(redis, config.queuePrefix);
  const modelUnavailable = async () => (await readModelStatus(redis, config.queuePrefix, config.model.name))?.state === 'unavailable';
  const driver = new LocalDriver({
    slots,
    cwd: options.cwd,
    command: options.command,
    env: options.env,
    stdout: options.stdout,
    stopGraceMs: a.stopGraceS * 1000,
    readyTimeoutMs: a.readyTimeoutS * 1000,
    restartBackoffMs: a.restartBackoffMs,
    crashLoopRestarts: a.crashLoopRestarts,
    crashLoopWindowMs: a.crashLoopWindowS * 1000,
    modelRetryMaxMs: a.modelRetryMaxS * 1000,
    logger: log,
  });
  // Clients see when the model is tried again (GET /v1/models, Retry-After of a refused job).
  driver.onEvent((event) => {
    if (event.type === 'model-unavailable') void noteModelRetry(redis, config.queuePrefix, config.model.name, event.until).catch(() => undefined);
  });
  const autoscaler = new Autoscaler({ driver, registry, load, lock, policy, intervalMs: a.intervalMs, logger: log, recovery, modelUnavailable });
  log.info({ slots: slots.map((s) => (s.provider ? `${s.id} (${s.provider})` : s.id)), policy, intervalMs: a.intervalMs, leaderTtlMs: a.leaderTtlMs }, 'autoscaler starting');
  if (options.autostart ?? true) autoscaler.start();

  let closing: Promise<void> | undefined;
  return {
    id,
    autoscaler,
    driver,
    registry,
    slots,
    kill: (withinMs) =>
      withDeadline(
        driver.killAll().then(() => autoscaler.settled()),
        withinMs,
        () => new Error('workers did not exit in time'),
      ).catch((err: unknown) => log.warn({ err }, 'force stop: some jobs are left to the stalled check')),
    close: (closeOptions) =>
      (closing ??= (async () => {
        await autoscaler.close(closeOptions);
        await autoscaler.settled();
        await load.close().catch(() => undefined);
        await recovery.close().catch(() => undefined);
        await closeRedis(redis);
      })()),
  };
}
