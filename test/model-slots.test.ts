import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Autoscaler, type ModelPlan, type TickReport } from '../autoscaler/autoscaler.js';
import type { LeaderLock } from '../autoscaler/leader-lock.js';
import type { PolicyConfig } from '../autoscaler/scale-policy.js';
import { cpuSlot, type Slot } from '../autoscaler/slots.js';
import type { DriverEvent, DriverWorker, WorkerDriver } from '../autoscaler/worker-driver.js';
import type { QueueLoad } from '../shared/queue-load.js';
import type { SlotReport, WorkerRegistry } from '../shared/worker-registry.js';

/**
 * The control loop with several models on shared slots, against a driver that runs nothing: each
 * model is decided by the policy within its own bounds, free slots go to the model whose oldest
 * job has waited longest, and a model with work but no worker takes a slot by draining another
 * model's worker (which finishes its job first). Real processes: test/models-e2e.test.ts.
 */

class FakeDriver implements WorkerDriver {
  readonly slots: Slot[];
  readonly live = new Map<string, DriverWorker>();
  readonly stops: Array<{ id: string; reason: string }> = [];
  private exits = new Map<string, () => void>();
  private n = 0;
  constructor(count: number) {
    this.slots = Array.from({ length: count }, (_, i) => cpuSlot(i));
  }
  workers(): DriverWorker[] {
    return [...this.live.values()].map((w) => ({ ...w }));
  }
  freeSlots(): Slot[] {
    const taken = new Set([...this.live.values()].map((w) => w.slot));
    return this.slots.filter((s) => !taken.has(s.id));
  }
  usableSlotCount(): number {
    return this.slots.length;
  }
  slotReports(): SlotReport[] {
    return this.slots.map((s) => ({ id: s.id, kind: 'cpu', state: this.freeSlots().includes(s) ? 'free' : 'occupied', workerId: null, reason: null, until: null }));
  }
  start(slot: Slot, model?: string): DriverWorker {
    if (!this.freeSlots().some((s) => s.id === slot.id)) throw new Error(`slot ${slot.id} is not free`);
    const worker: DriverWorker = { id: `w${++this.n}`, slot: slot.id, pid: null, phase: 'starting', currentJob: null, startedAt: Date.now(), adopted: false, model: model ?? null };
    this.live.set(worker.id, worker);
    return { ...worker };
  }
  stop(id: string, reason: string): Promise<void> {
    const worker = this.live.get(id);
    if (!worker) return Promise.resolve();
    if (worker.phase !== 'draining') this.stops.push({ id, reason });
    worker.phase = 'draining';
    return new Promise((resolve) => this.exits.set(id, resolve));
  }
  /** The worker exits (its job done, or killed). */
  exit(id: string): void {
    this.live.delete(id);
    this.exits.get(id)?.();
  }
  set(id: string, patch: Partial<DriverWorker>): void {
    Object.assign(this.live.get(id) as DriverWorker, patch);
  }
  sync(): void {}
  onEvent(_listener: (event: DriverEvent) => void): () => void {
    return () => undefined;
  }
  async close(): Promise<void> {}
  of(model: string): DriverWorker[] {
    return this.workers().filter((w) => w.model === model);
  }
}

const policy = (overrides: Partial<PolicyConfig> = {}): PolicyConfig => ({
  minWorkers: 0,
  maxWorkers: 4,
  initialWorkers: 0,
  targetJobsPerWorker: 1,
  upscaleDelayS: 0,
  downscaleDelayS: 0,
  downscaleToZeroDelayS: 3600,
  ...overrides,
});

function load(jobs: number, oldestWaitingAt: number | null = jobs > 0 ? Date.now() : null, active = 0): QueueLoad {
  return { load: jobs, waiting: jobs - active, prioritized: 0, active, delayedDue: 0, delayed: 0, paused: 0, oldestWaitingAt, at: Date.now() };
}

function setup(slots: number, models: Array<{ name: string; policy?: Partial<PolicyConfig> }>, swapAfterMs = 0) {
  const driver = new FakeDriver(slots);
  const loads = new Map<string, QueueLoad>(models.map((m) => [m.name, load(0)]));
  const plans: ModelPlan[] = models.map((m) => ({ name: m.name, policy: policy(m.policy), load: { read: async () => loads.get(m.name) as QueueLoad } }));
  const lock = { id: 'test', holds: () => true, verify: async () => true, onChange: () => undefined, start: () => undefined, release: async () => undefined } as unknown as LeaderLock;
  const registry = { list: async () => [], get: async () => null, remove: async () => undefined, putAutoscalerStatus: async () => undefined } as unknown as WorkerRegistry;
  const autoscaler = new Autoscaler({
    driver,
    registry,
    lock,
    load: plans[0]!.load,
    policy: plans[0]!.policy,
    intervalMs: 1000,
    logger: pino({ level: 'silent' }),
    models: plans,
    swapAfterMs,
  });
  const reports: TickReport[] = [];
  autoscaler.onTick((r) => reports.push(r));
  return { driver, loads, autoscaler, reports, tick: () => autoscaler.tick() };
}

describe('several models on shared slots', () => {
  it('scales each model on its own load within its own bounds', async () => {
    const { driver, loads, tick, reports } = setup(4, [
      { name: 'base', policy: { maxWorkers: 1 } },
      { name: 'dog', policy: { maxWorkers: 2 } },
    ]);
    await tick();
    expect(driver.workers()).toHaveLength(0);
    loads.set('base', load(5));
    loads.set('dog', load(5));
    await tick();
    expect(driver.of('base')).toHaveLength(1);
    expect(driver.of('dog')).toHaveLength(2);
    // Each model's decision is its own, and the fourth slot stays free (no model may use it).
    expect(reports.at(-1)?.models['base']?.decision).toMatchObject({ desired: 1, target: 1, reason: 'cold-start' });
    expect(reports.at(-1)?.models['dog']?.decision).toMatchObject({ desired: 2, target: 2, reason: 'cold-start' });
    expect(driver.freeSlots()).toHaveLength(1);
    // One model's load going away scales only that model down.
    loads.set('dog', load(0));
    for (const w of driver.of('dog')) driver.set(w.id, { phase: 'ready' });
    await tick();
    expect(driver.stops.map((s) => s.reason)).toEqual(['scale down to 1']);
    expect(driver.of('base').every((w) => w.phase !== 'draining')).toBe(true);
  });

  it('keeps a model at its min_workers with no load, and never starts more than its max', async () => {
    const { driver, loads, tick } = setup(3, [
      { name: 'base', policy: { minWorkers: 1, initialWorkers: 1, maxWorkers: 1 } },
      { name: 'dog', policy: { maxWorkers: 3 } },
    ]);
    await tick();
    expect(driver.of('base')).toHaveLength(1);
    expect(driver.of('dog')).toHaveLength(0);
    loads.set('base', load(10));
    loads.set('dog', load(10));
    await tick();
    expect(driver.of('base')).toHaveLength(1);
    expect(driver.of('dog')).toHaveLength(2);
  });

  it('gives a free slot to the model whose oldest job has waited longest, not to the first in the catalogue', async () => {
    const { driver, loads, tick } = setup(1, [{ name: 'base' }, { name: 'dog' }], 60_000);
    const now = Date.now();
    loads.set('base', load(3, now - 1000));
    loads.set('dog', load(3, now - 5000));
    await tick();
    expect(driver.workers().map((w) => w.model)).toEqual(['dog']);
  });

  it('hands a busy slot over: the other model\'s worker drains (finishes its job) and only then the waiting model starts there', async () => {
    const { driver, loads, tick, reports } = setup(1, [{ name: 'base' }, { name: 'dog' }], 0);
    loads.set('base', load(2, Date.now() - 100, 1));
    await tick();
    const [first] = driver.of('base');
    driver.set(first!.id, { phase: 'busy', currentJob: 'job-b1', startedAt: Date.now() - 10_000 });
    // dog's jobs come in; base still has a younger queued job of its own.
    loads.set('base', load(2, Date.now(), 1));
    loads.set('dog', load(2, Date.now() - 2000));
    await tick();
    expect(reports.at(-1)?.handover).toEqual({ from: 'base', to: 'dog', workerId: first!.id });
    expect(driver.stops).toEqual([{ id: first!.id, reason: 'hand-over to model dog' }]);
    // Draining: it keeps its slot (and its job) until it exits; nothing else starts or drains meanwhile.
    await tick();
    await tick();
    expect(driver.workers()).toEqual([expect.objectContaining({ id: first!.id, phase: 'draining', model: 'base', currentJob: 'job-b1' })]);
    expect(driver.stops).toHaveLength(1);
    driver.exit(first!.id);
    await tick();
    expect(driver.workers().map((w) => [w.model, w.slot])).toEqual([['dog', 'cpu0']]);
  });

  it('does not take the slot while the waiting model has waited less than the swap delay, or from a worker that has served less', async () => {
    const { driver, loads, tick } = setup(1, [{ name: 'base' }, { name: 'dog' }], 5000);
    loads.set('base', load(1, Date.now(), 1));
    await tick();
    const [worker] = driver.of('base');
    driver.set(worker!.id, { phase: 'busy' });
    loads.set('dog', load(1, Date.now() - 1000));
    await tick();
    expect(driver.stops).toEqual([]);
    // Waited long enough, but the worker started just now: it serves its tenure first.
    loads.set('dog', load(1, Date.now() - 9000));
    await tick();
    expect(driver.stops).toEqual([]);
    driver.set(worker!.id, { startedAt: Date.now() - 6000 });
    await tick();
    expect(driver.stops.map((s) => s.reason)).toEqual(['hand-over to model dog']);
  });

  it('does not hand over when the serving model has older waiting work, or when that would take it below its minimum', async () => {
    const { driver, loads, tick } = setup(1, [{ name: 'base' }, { name: 'dog' }], 0);
    loads.set('base', load(3, Date.now() - 9000, 1));
    await tick();
    const [worker] = driver.of('base');
    driver.set(worker!.id, { phase: 'busy', startedAt: Date.now() - 60_000 });
    loads.set('dog', load(1, Date.now() - 1000));
    await tick();
    expect(driver.stops).toEqual([]);

    const kept = setup(1, [{ name: 'base', policy: { minWorkers: 1, initialWorkers: 1 } }, { name: 'dog' }], 0);
    await kept.tick();
    const [held] = kept.driver.of('base');
    kept.driver.set(held!.id, { phase: 'ready', startedAt: Date.now() - 60_000 });
    kept.loads.set('dog', load(1, Date.now() - 60_000));
    await kept.tick();
    expect(kept.driver.stops).toEqual([]);
  });

  it('with one slot and both models loaded with work, alternates so that neither waits forever', async () => {
    const { driver, loads, tick } = setup(1, [{ name: 'base' }, { name: 'dog' }], 0);
    // Each model has jobs queued since t0 (base's a little older); a worker "runs" one job per step.
    const t0 = Date.now() - 100_000;
    const queued: Record<string, number[]> = { base: [t0, t0 + 2, t0 + 4, t0 + 6], dog: [t0 + 1, t0 + 3, t0 + 5, t0 + 7] };
    const ran: string[] = [];
    const publish = () => {
      for (const [name, jobs] of Object.entries(queued)) {
        const active = driver.of(name).filter((w) => w.currentJob !== null).length;
        loads.set(name, load(jobs.length + active, jobs[0] ?? null, active));
      }
    };
    const busy = () => driver.workers().some((w) => w.currentJob !== null);
    for (let step = 0; step < 60 && (queued['base']!.length > 0 || queued['dog']!.length > 0 || busy()); step++) {
      publish();
      await tick();
      for (const w of driver.workers()) {
        const model = w.model as string;
        if (w.currentJob !== null) {
          // Its job ends (a draining worker's too: it finishes before it exits).
          ran.push(model);
          driver.set(w.id, { currentJob: null, phase: w.phase === 'draining' ? 'draining' : 'ready', startedAt: w.startedAt - 1000 });
        } else if (w.phase === 'draining') {
          driver.exit(w.id);
        } else {
          const next = queued[model]!.shift();
          if (next !== undefined) driver.set(w.id, { phase: 'busy', currentJob: `${model}-${next}`, startedAt: w.startedAt - 1000 });
        }
      }
    }
    expect(ran.filter((m) => m === 'base')).toHaveLength(4);
    expect(ran.filter((m) => m === 'dog')).toHaveLength(4);
    // The slot changed hands: dog ran before base had finished everything.
    const lastBase = ran.lastIndexOf('base');
    expect(ran.indexOf('dog')).toBeLessThan(lastBase);
  });
});
