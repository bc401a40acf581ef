import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { Redis } from 'ioredis';
import type { Config } from '../shared/config.js';
import { withDeadline } from '../shared/errors.js';
import type { Logger } from '../shared/logger.js';
import { JobRecovery } from '../shared/job-recovery.js';
import { noteModelRetry, readModelStatus } from '../shared/model-registry.js';
import { BullQueueLoad, sumQueueLoads, type QueueLoad, type QueueLoadSource } from '../shared/queue-load.js';
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
  recovery?: Pick<JobRecovery, 'requeue'> & Partial<Pick<JobRecovery, 'heldBy'>>;
  /**
   * True while the model's last load failed: one worker is kept (re)trying it, load or not, so a
   * model that comes back is found without a restart or a job (the API refuses jobs meanwhile).
   */
  modelUnavailable?: () => Promise<boolean>;
  /**
   * Several models on the same slots: each decided by the policy on its own load within its own
   * bounds. Absent: one model from `policy`, `load` and `modelUnavailable`, whose workers start
   * without a model name (the default model).
   */
  models?: ModelPlan[];
  /**
   * More models with work than slots: a model without any worker takes the slot of another
   * model's worker once its oldest job has waited this long and that worker has served at least
   * this long (the worker finishes its job first). Default 5 s.
   */
  swapAfterMs?: number;
  /** The queue of a model's jobs (for putting a dead worker's job back); default `generate`. */
  queueOf?: (model: string | null) => string;
}

/** One model as the control loop scales it. */
export interface ModelPlan {
  name: string;
  policy: PolicyConfig;
  load: Pick<QueueLoadSource, 'read'>;
  modelUnavailable?: () => Promise<boolean>;
}

/** One model's part of a pass. */
export interface ModelTick {
  load: QueueLoad;
  decision: ScaleDecision;
  workers: { live: number; draining: number; starting: number; busy: number };
}

/** One control-loop pass as the leader saw it: the inputs and what it decided. */
export interface TickReport {
  at: number;
  /** Every model's load together. */
  load: QueueLoad;
  /** The decision (with several models: their targets and desires added up). */
  decision: ScaleDecision;
  workers: { live: number; draining: number; starting: number; busy: number };
  slots: { total: number; usable: number; free: number };
  /** Each model's own load, decision and workers, by name. */
  models: Record<string, ModelTick>;
  /** A worker asked to drain so that its slot goes to another model, this pass. */
  handover: { from: string; to: string; workerId: string } | null;
}

/** What the loop remembers of a model between passes. */
interface PlanState {
  plan: ModelPlan;
  /** False: the single unnamed model (every worker is its own). */
  named: boolean;
  target: number | null;
  pending: PendingScale | null;
  lastReason: string | null;
  lastChange: { action: string; reason: string; at: number } | null;
}

const DEFAULT_SWAP_AFTER_MS = 5000;

type TickListener = (report: TickReport) => void;

/**
 * The control loop: while it leads, every `intervalMs` it reads the queue's full load and the
 * registry, asks the policy for a target and moves the driver toward it: starts workers in free
 * slots, stops surplus ones idle first. Never more worker processes than the maximum, draining
 * ones included, and never two on one slot (the driver refuses).
 */
export class Autoscaler {
  private readonly plans: PlanState[];
  private everLed = false;
  private started = false;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private readonly listeners = new Set<TickListener>();
  /** Dead workers' jobs being put back (see afterExit). */
  private readonly recovering = new Set<Promise<void>>();

  constructor(private readonly deps: AutoscalerDeps) {
    const fresh = (plan: ModelPlan, named: boolean): PlanState => ({ plan, named, target: null, pending: null, lastReason: null, lastChange: null });
    this.plans =
      deps.models && deps.models.length > 0
        ? deps.models.map((plan) => fresh(plan, true))
        : [fresh({ name: '', policy: deps.policy, load: deps.load, ...(deps.modelUnavailable ? { modelUnavailable: deps.modelUnavailable } : {}) }, false)];
    deps.lock.onChange((leader) => {
      if (leader) {
        deps.logger.info({ autoscalerId: deps.lock.id }, 'leading: this autoscaler now scales the workers');
        // Act now rather than a whole interval later: a standby taking over may find jobs waiting.
        if (this.started && !this.closing) setImmediate(() => void this.tick());
      } else if (!this.closing) {
        deps.logger.warn({ autoscalerId: deps.lock.id }, 'no longer the leader: standing by');
      }
      // A new term starts from what is running, not from an old decision.
      for (const state of this.plans) {
        state.target = null;
        state.pending = null;
      }
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
      // The job it generated and the ones it was still uploading (heldJobs), or the one older records name.
      const named = record?.heldJobs ?? (record?.currentJob ? [{ id: record.currentJob, token: record.currentJobToken ?? null }] : []);
      const queue = this.deps.queueOf?.(record?.model ?? worker.model ?? null);
      // And every job its lock tokens hold, with the token the lock has: one taken in the moment
      // between BullMQ's take and the heartbeat's write is not named yet.
      const locked = record?.lockOwners && recovery?.heldBy ? await recovery.heldBy(record.lockOwners, ...(queue !== undefined ? [queue] : [])) : [];
      const held = [...locked, ...named.filter((n) => !locked.some((l) => l.id === n.id))];
      for (const { id: jobId, token } of held) {
        if (!recovery || !token) continue;
        const outcome = await recovery.requeue(jobId, token, `its worker ${worker.id} died`, ...(queue !== undefined ? [queue] : []));
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

  /** The live and draining workers of a model (the single unnamed model owns them all). */
  private workersOf(state: PlanState, all: readonly DriverWorker[]): DriverWorker[] {
    if (!state.named) return [...all];
    return all.filter((w) => (w.model ?? this.defaultName()) === state.plan.name);
  }

  private defaultName(): string {
    return this.plans[0]?.plan.name ?? '';
  }

  private async pass(): Promise<void> {
    const { driver, registry, lock, logger } = this.deps;
    if (this.closing || !lock.holds()) return;
    // Independent reads: one round trip's wait per tick, not one per model.
    const [records, loads, downs] = await Promise.all([
      registry.list(),
      Promise.all(this.plans.map((state) => state.plan.load.read())),
      Promise.all(this.plans.map((state) => state.plan.modelUnavailable?.().catch(() => false) ?? false)),
    ]);
    driver.sync(records);
    if (this.closing || !lock.holds()) return;

    const now = Date.now();
    const all = driver.workers();
    const usable = driver.usableSlotCount();
    const firstPass = !this.everLed;
    this.everLed = true;
    const ticks: Record<string, ModelTick> = {};
    const decisions: ScaleDecision[] = [];
    this.plans.forEach((state, i) => {
      const { policy, name } = state.plan;
      const load = loads[i] as QueueLoad;
      // A model whose last load failed keeps one worker (re)trying it, load or not.
      const bounds: PolicyConfig = downs[i] ? { ...policy, minWorkers: Math.max(policy.minWorkers, 1) } : policy;
      const mine = this.workersOf(state, all);
      const live = mine.filter((w) => w.phase !== 'draining');
      if (state.target === null) {
        // First pass of a term: adopt what runs; a fresh start begins at initial_replicas.
        state.target = live.length > 0 || !firstPass ? live.length : initialTarget(policy, usable);
      }
      const decision = decide({ now, load: load.load, workers: state.target, usableSlots: usable, pending: state.pending }, bounds);
      state.pending = decision.pending;
      state.target = decision.target;
      decisions.push(decision);
      const workers = {
        live: live.length,
        draining: mine.length - live.length,
        starting: live.filter((w) => w.phase === 'starting').length,
        busy: live.filter((w) => w.phase === 'busy').length,
      };
      ticks[name] = { load, decision, workers };
      this.lastOldest.set(state, load.oldestWaitingAt ?? Number.POSITIVE_INFINITY);
      const inputs = {
        ...(state.named ? { model: name } : {}),
        load: load.load,
        queue: { waiting: load.waiting, prioritized: load.prioritized, delayedDue: load.delayedDue, active: load.active },
        workers,
        slots: { total: driver.slots.length, usable, free: driver.freeSlots().length },
        desired: decision.desired,
        target: decision.target,
        reason: decision.reason,
        pendingSinceMs: decision.pending ? now - decision.pending.since : null,
      };
      const which = state.named && this.plans.length > 1 ? ` ${name}` : '';
      if (decision.action !== 'hold') {
        state.lastChange = { action: decision.action, reason: decision.reason, at: now };
        logger.info(inputs, `scale${which} ${decision.action} to ${decision.target} (${decision.reason})`);
      } else if (decision.reason !== state.lastReason) {
        logger.info(inputs, `hold${which} at ${decision.target} (${decision.reason})`);
      } else {
        logger.debug(inputs, `hold${which} at ${decision.target} (${decision.reason})`);
      }
      state.lastReason = decision.reason;
    });

    const handover = await this.reconcile(ticks, now);

    const single = this.plans.length === 1 ? (decisions[0] as ScaleDecision) : null;
    const decision: ScaleDecision = single ?? {
      desired: decisions.reduce((n, d) => n + d.desired, 0),
      target: decisions.reduce((n, d) => n + d.target, 0),
      action: decisions.some((d) => d.action === 'up') ? 'up' : decisions.some((d) => d.action === 'down') ? 'down' : 'hold',
      reason: (decisions.find((d) => d.action !== 'hold') ?? decisions[0] as ScaleDecision).reason,
      pending: null,
    };
    const total = sumQueueLoads(loads as QueueLoad[], now);
    const live = all.filter((w) => w.phase !== 'draining');
    const report: TickReport = {
      at: now,
      load: this.plans.length === 1 ? (loads[0] as QueueLoad) : total,
      decision,
      workers: {
        live: live.length,
        draining: all.length - live.length,
        starting: live.filter((w) => w.phase === 'starting').length,
        busy: live.filter((w) => w.phase === 'busy').length,
      },
      slots: { total: driver.slots.length, usable, free: driver.freeSlots().length },
      models: ticks,
      handover,
    };
    const lastChange = this.plans.map((p) => p.lastChange).filter((c) => c !== null).sort((a, b) => b.at - a.at)[0] ?? null;
    await registry
      .putAutoscalerStatus(
        {
          leader: lock.id,
          host: os.hostname(),
          at: now,
          desired: decision.desired,
          target: decision.target,
          load: report.load.load,
          bounds: {
            min: this.plans.reduce((n, p) => n + p.plan.policy.minWorkers, 0),
            max: Math.min(driver.slots.length, this.plans.reduce((n, p) => n + p.plan.policy.maxWorkers, 0)),
          },
          lastDecision: lastChange,
          slots: driver.slotReports(),
          ...(this.plans.some((p) => p.named)
            ? {
                models: this.plans.map((p) => {
                  const tick = ticks[p.plan.name] as ModelTick;
                  return {
                    name: p.plan.name,
                    load: tick.load.load,
                    desired: tick.decision.desired,
                    target: tick.decision.target,
                    workers: tick.workers.live,
                    bounds: { min: p.plan.policy.minWorkers, max: p.plan.policy.maxWorkers },
                    oldestWaitingAt: tick.load.oldestWaitingAt ?? null,
                    lastDecision: p.lastChange,
                  };
                }),
              }
            : {}),
        },
        Math.max(3 * this.deps.intervalMs, 5000),
      )
      .catch((err: unknown) => logger.warn({ err }, 'could not write the autoscaler status'));
    for (const listener of this.listeners) listener(report);
  }

  /**
   * Moves each model's workers toward its target on the shared slots: surplus workers stop (idle
   * first); free slots go to the models short of workers, the one whose oldest job has waited
   * longest first; and when a model has work but no worker and no slot is free, one worker of
   * another model drains (finishes its job) so that its slot changes hands (`handover`).
   */
  private async reconcile(ticks: Record<string, ModelTick>, now: number): Promise<TickReport['handover']> {
    const { driver, lock, logger } = this.deps;
    const all = driver.workers();
    const known = new Set(this.plans.map((p) => p.plan.name));
    // Workers of a model no longer in the catalogue: drain them.
    if (this.plans.some((p) => p.named)) {
      for (const worker of all) {
        if (worker.phase !== 'draining' && !known.has(worker.model ?? this.defaultName())) void driver.stop(worker.id, `model ${worker.model} is not served`);
      }
    }
    const wanting: Array<{ state: PlanState; missing: number; oldest: number }> = [];
    for (const state of this.plans) {
      const target = state.target ?? 0;
      const mine = this.workersOf(state, all);
      const live = mine.filter((w) => w.phase !== 'draining');
      if (live.length > target) {
        for (const worker of pickToStop(live, live.length - target)) void driver.stop(worker.id, `scale down to ${target}`);
      } else if (live.length < target) {
        // Draining workers still hold their slot and count toward the maximum.
        const missing = Math.min(target - live.length, state.plan.policy.maxWorkers - mine.length);
        const oldest = ticks[state.plan.name]?.load.oldestWaitingAt ?? Number.POSITIVE_INFINITY;
        if (missing > 0) wanting.push({ state, missing, oldest });
      }
    }
    if (wanting.length === 0) return null;
    // The oldest waiting job first; ties (and models with nothing waiting) in catalogue order.
    wanting.sort((a, b) => a.oldest - b.oldest || this.plans.indexOf(a.state) - this.plans.indexOf(b.state));
    const free = driver.freeSlots();
    if (free.length > 0) {
      if (!(await lock.verify())) return null;
      for (const slot of free) {
        const next = wanting.find((w) => w.missing > 0);
        if (!next) break;
        driver.start(slot, next.state.named ? next.state.plan.name : undefined);
        next.missing -= 1;
      }
      const short = wanting.reduce((n, w) => n + w.missing, 0);
      if (short > 0) logger.debug({ missing: short }, 'waiting for a free slot');
      return null;
    }
    return this.handOver(wanting, all, now);
  }

  /** No free slot: a starving model (work, no worker) may take one from another model. */
  private async handOver(
    wanting: Array<{ state: PlanState; missing: number; oldest: number }>,
    all: readonly DriverWorker[],
    now: number,
  ): Promise<TickReport['handover']> {
    const { driver, lock, logger } = this.deps;
    if (this.plans.length < 2) return null;
    // A slot is already on its way to someone: wait for it rather than drain another.
    if (all.some((w) => w.phase === 'draining')) return null;
    const swapAfterMs = this.deps.swapAfterMs ?? DEFAULT_SWAP_AFTER_MS;
    const starving = wanting.find((w) => w.missing > 0 && Number.isFinite(w.oldest) && this.workersOf(w.state, all).length === 0 && now - w.oldest >= swapAfterMs);
    if (!starving) return null;
    // Candidates: workers of other models that have served a while, whose model keeps its
    // minimum and has no job waiting longer than the starving model's oldest.
    const candidates = all.filter((w) => {
      if (w.phase === 'draining' || now - w.startedAt < swapAfterMs) return false;
      const owner = this.plans.find((p) => p !== starving.state && this.workersOf(p, [w]).length === 1);
      if (!owner) return false;
      const ownerLive = this.workersOf(owner, all).filter((x) => x.phase !== 'draining').length;
      if (ownerLive - 1 < owner.plan.policy.minWorkers) return false;
      const ownerOldest = this.tickOldest(owner);
      return ownerOldest > starving.oldest;
    });
    if (candidates.length === 0) return null;
    // The model with the youngest (or no) waiting work gives first; idle before busy, youngest worker first.
    const rank = (w: DriverWorker) => (w.phase === 'ready' ? 0 : w.phase === 'starting' ? 1 : 2);
    candidates.sort((a, b) => this.ownerOldest(b) - this.ownerOldest(a) || rank(a) - rank(b) || b.startedAt - a.startedAt);
    const victim = candidates[0] as DriverWorker;
    if (!(await lock.verify())) return null;
    const to = starving.state.plan.name;
    const from = victim.model ?? this.defaultName();
    logger.info(
      { workerId: victim.id, slot: victim.slot, from, to, waitedMs: now - starving.oldest, currentJob: victim.currentJob },
      `slot ${victim.slot} changes hands: the ${from} worker finishes its job, then ${to} gets the slot`,
    );
    void driver.stop(victim.id, `hand-over to model ${to}`);
    return { from, to, workerId: victim.id };
  }

  /** Each model's oldest waiting job (creation time) as this pass read it; +∞ when none waits. */
  private readonly lastOldest = new Map<PlanState, number>();

  private tickOldest(state: PlanState): number {
    return this.lastOldest.get(state) ?? Number.POSITIVE_INFINITY;
  }

  private ownerOldest(worker: DriverWorker): number {
    const owner = this.plans.find((p) => this.workersOf(p, [worker]).length === 1);
    return owner ? this.tickOldest(owner) : Number.POSITIVE_INFINITY;
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
  const lock = new LeaderLock(redis, leaderKey(config.queuePrefix), id, a.leaderTtlMs, log);
  const recovery = new JobRecovery(redis, config.queuePrefix);
  // One plan per catalogue model: its own bounds (Ray's per-deployment autoscaling_config), its
  // own queue's load, its own load failures; the delays and the target per worker are shared.
  const loads: BullQueueLoad[] = [];
  const models: ModelPlan[] = config.models.map((model) => {
    const bounds = model.autoscaling;
    const maxWorkers = Math.min(bounds.maxWorkers ?? slots.length, slots.length);
    const load = new BullQueueLoad(redis, config.queuePrefix, model.queue);
    loads.push(load);
    return {
      name: model.name,
      policy: { ...policy, minWorkers: Math.min(bounds.minWorkers, maxWorkers), maxWorkers, initialWorkers: Math.min(bounds.initialWorkers, maxWorkers) },
      load,
      modelUnavailable: async () => (await readModelStatus(redis, config.queuePrefix, model.name))?.state === 'unavailable',
    };
  });
  const queues = new Map(config.models.map((m) => [m.name, m.queue]));
  const queueOf = (model: string | null) => (model === null ? config.model.queue : (queues.get(model) ?? config.model.queue));
  const load = loads[0] as BullQueueLoad;
  const modelUnavailable = models[0]?.modelUnavailable;
  const minSum = config.models.reduce((n, m) => n + m.autoscaling.minWorkers, 0);
  if (minSum > slots.length) {
    log.warn({ minWorkers: minSum, slots: slots.length }, "the models' min_workers add up to more than this machine's slots: some minimums cannot be met");
  }
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
    if (event.type === 'model-unavailable') void noteModelRetry(redis, config.queuePrefix, event.model ?? config.model.name, event.until).catch(() => undefined);
  });
  const autoscaler = new Autoscaler({
    driver,
    registry,
    load,
    lock,
    policy,
    intervalMs: a.intervalMs,
    logger: log,
    recovery,
    ...(modelUnavailable ? { modelUnavailable } : {}),
    models,
    swapAfterMs: a.swapAfterS * 1000,
    queueOf,
  });
  log.info(
    {
      slots: slots.map((s) => (s.provider ? `${s.id} (${s.provider})` : s.id)),
      policy,
      models: models.map((m) => ({ name: m.name, min: m.policy.minWorkers, initial: m.policy.initialWorkers, max: m.policy.maxWorkers })),
      intervalMs: a.intervalMs,
      leaderTtlMs: a.leaderTtlMs,
    },
    'autoscaler starting',
  );
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
        await Promise.allSettled(loads.map((l) => l.close()));
        await recovery.close().catch(() => undefined);
        await closeRedis(redis);
      })()),
  };
}
