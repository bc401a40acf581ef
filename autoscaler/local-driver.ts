import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../shared/logger.js';
import { pidAlive } from '../shared/process-alive.js';
import type { SlotReport, WorkerRecord } from '../shared/worker-registry.js';
import { slotEnv, type Slot } from './slots.js';
import type { DriverEvent, DriverWorker, WorkerDriver } from './worker-driver.js';

export { pidAlive };

/** worker/main.ts exits 78 on bad configuration: the same configuration fails the same way, so it is not retried. */
export const FATAL_EXIT_CODES: Readonly<Record<number, string>> = { 78: 'invalid configuration' };
/**
 * worker/main.ts exits 3 when the model cannot be loaded. Files being copied in, a GPU still held
 * by something else: that can pass, so the slot tries again with a doubling wait.
 */
export const MODEL_FAILURE_EXIT_CODE = 3;

const MAX_BACKOFF_MS = 60_000;
const STDERR_TAIL_BYTES = 2048;

export interface LocalDriverOptions {
  slots: readonly Slot[];
  /** The worker command line; default: `defaultWorkerCommand()`. */
  command?: readonly string[];
  /** The workers' working directory: relative paths in their environment (MODEL_DIR, …) resolve from here. */
  cwd: string;
  /** The workers' environment before the slot's variables are added; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Where workers' stdout (their JSON logs) goes; stderr is kept to report why a worker died. */
  stdout?: 'inherit' | 'ignore' | number;
  stopGraceMs: number;
  readyTimeoutMs: number;
  restartBackoffMs: number;
  crashLoopRestarts: number;
  crashLoopWindowMs: number;
  /** The longest wait before a slot tries its model again (AUTOSCALER_MODEL_RETRY_MAX_S); default 5 min. */
  modelRetryMaxMs?: number;
  logger: Logger;
  /** Worker ids are `<idPrefix>-<slot>-<random>`; default the host name. */
  idPrefix?: string;
}

interface Managed {
  worker: DriverWorker;
  child: ChildProcess | null;
  stopRequested: boolean;
  /** It loaded its model and took jobs: its death is a kill or a fault, not a crash loop. */
  wasReady: boolean;
  /** Set when the driver gave up on the worker (never became ready). */
  failure: string | null;
  stderrPath: string | null;
  killTimer?: NodeJS.Timeout;
  readyTimer?: NodeJS.Timeout;
  exited: Promise<void>;
  markExited: () => void;
}

interface SlotHealth {
  /** Exits before ready within the crash-loop window. */
  crashes: number[];
  /** Consecutive model load failures (exit 3); reset when a worker of the slot becomes ready. */
  modelFailures: number;
  backoffUntil: number;
  crashLoopUntil: number;
  failed: string | null;
  lastError: string | null;
}

/**
 * Runs workers as child processes of this machine, one per slot: a GPU slot's worker sees only
 * its GPU (CUDA_VISIBLE_DEVICES as device 0, or Vulkan narrowed to it for WebGPU: `slotEnv`).
 * Workers run in their own process group, so a
 * Ctrl-C in the terminal reaches the autoscaler only and the drain happens once, in order; and
 * they outlive an autoscaler that dies, for the next one to adopt through their heartbeats.
 */
export class LocalDriver implements WorkerDriver {
  readonly slots: readonly Slot[];
  private readonly managed = new Map<string, Managed>();
  private readonly health = new Map<string, SlotHealth>();
  private readonly listeners = new Set<(event: DriverEvent) => void>();
  private readonly command: readonly string[];
  private readonly idPrefix: string;
  private readonly host = os.hostname();
  private adoptedPoll: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: LocalDriverOptions) {
    this.slots = options.slots;
    this.command = options.command ?? defaultWorkerCommand();
    this.idPrefix = options.idPrefix ?? this.host;
    for (const slot of this.slots) this.health.set(slot.id, { crashes: [], modelFailures: 0, backoffUntil: 0, crashLoopUntil: 0, failed: null, lastError: null });
  }

  workers(): DriverWorker[] {
    return [...this.managed.values()].map((m) => ({ ...m.worker }));
  }

  freeSlots(): Slot[] {
    const reports = new Map(this.slotReports().map((r) => [r.id, r]));
    return this.slots.filter((slot) => reports.get(slot.id)?.state === 'free');
  }

  usableSlotCount(): number {
    return this.slotReports().filter((r) => r.state !== 'failed' && r.state !== 'crash-loop').length;
  }

  slotReports(): SlotReport[] {
    const now = Date.now();
    return this.slots.map((slot) => {
      const health = this.health.get(slot.id) as SlotHealth;
      const occupant = [...this.managed.values()].find((m) => m.worker.slot === slot.id);
      const base = { id: slot.id, kind: slot.kind, workerId: occupant?.worker.id ?? null, reason: null, until: null };
      if (health.failed) return { ...base, state: 'failed', reason: health.failed };
      if (occupant) return { ...base, state: 'occupied' };
      if (health.crashLoopUntil > now) return { ...base, state: 'crash-loop', reason: health.lastError, until: health.crashLoopUntil };
      if (health.backoffUntil > now) return { ...base, state: 'backoff', reason: health.lastError, until: health.backoffUntil };
      return { ...base, state: 'free' };
    });
  }

  onEvent(listener: (event: DriverEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start(slot: Slot, model?: string): DriverWorker {
    if (this.closed) throw new Error('driver is closed');
    const report = this.slotReports().find((r) => r.id === slot.id);
    if (!report) throw new Error(`unknown slot ${slot.id}`);
    if (report.state !== 'free') throw new Error(`slot ${slot.id} is not free (${report.state}${report.workerId ? ` by ${report.workerId}` : ''})`);

    const id = `${this.idPrefix}-${slot.id}-${randomBytes(3).toString('hex')}`;
    const stderrPath = stderrFile(id);
    // stderr goes to a file rather than a pipe: a worker must survive its autoscaler's death.
    const stderrFd = fs.openSync(stderrPath, 'w');
    const stdout = this.options.stdout ?? 'inherit';
    const stdio: StdioOptions = ['ignore', stdout, stderrFd];
    let child: ChildProcess;
    try {
      child = spawn(this.command[0] as string, this.command.slice(1), {
        cwd: this.options.cwd,
        // The worker watches this process: orphaned and not adopted, it finishes its job and exits.
        env: { WORKER_PARENT_PID: String(process.pid), ...this.workerEnv(slot, id), ...(model !== undefined ? { WORKER_MODEL: model } : {}) },
        stdio,
        detached: true,
      });
    } finally {
      fs.closeSync(stderrFd);
    }
    const worker: DriverWorker = {
      id,
      slot: slot.id,
      pid: child.pid ?? null,
      phase: 'starting',
      currentJob: null,
      startedAt: Date.now(),
      adopted: false,
      model: model ?? null,
    };
    const m = this.track(worker, child, stderrPath);
    child.once('error', (err) => {
      // Spawn failed (no such command): no 'exit' follows.
      m.failure ??= `could not start the worker: ${err.message}`;
      this.onExit(m, null, null);
    });
    child.once('exit', (code, signal) => this.onExit(m, code, signal));
    m.readyTimer = setTimeout(() => {
      if (m.worker.phase !== 'starting' || m.stopRequested) return;
      m.failure = `did not become ready within ${Math.round(this.options.readyTimeoutMs / 1000)} s`;
      this.options.logger.error({ workerId: id, slot: slot.id }, `worker ${m.failure}; killing it`);
      this.signal(m, 'SIGKILL');
    }, this.options.readyTimeoutMs);
    m.readyTimer.unref();
    this.options.logger.info({ workerId: id, slot: slot.id, pid: worker.pid, model: worker.model }, 'worker started');
    this.emit({ type: 'started', worker: { ...worker } });
    return { ...worker };
  }

  stop(id: string, reason: string): Promise<void> {
    const m = this.managed.get(id);
    if (!m) return Promise.resolve();
    if (!m.stopRequested) {
      m.stopRequested = true;
      m.worker.phase = 'draining';
      this.options.logger.info({ workerId: id, slot: m.worker.slot, reason, currentJob: m.worker.currentJob }, 'stopping worker (it finishes its current job)');
      this.emit({ type: 'stopping', worker: { ...m.worker }, reason });
      this.signal(m, 'SIGTERM');
      m.killTimer = setTimeout(() => {
        this.options.logger.warn(
          { workerId: id, slot: m.worker.slot, graceMs: this.options.stopGraceMs, currentJob: m.worker.currentJob },
          'worker still running after the grace period: SIGKILL (its job goes back to the queue)',
        );
        this.emit({ type: 'killed', worker: { ...m.worker }, reason: 'grace period over' });
        this.signal(m, 'SIGKILL');
      }, this.options.stopGraceMs);
      m.killTimer.unref();
    }
    return m.exited;
  }

  sync(records: readonly WorkerRecord[]): void {
    const byId = new Map(records.map((r) => [r.id, r]));
    for (const m of this.managed.values()) {
      if (m.child === null && !pidAlive(m.worker.pid)) {
        this.onExit(m, null, null);
        continue;
      }
      const record = byId.get(m.worker.id);
      if (!record) continue;
      m.worker.currentJob = record.currentJob;
      const before = m.worker.phase;
      m.worker.phase = m.stopRequested ? 'draining' : record.state;
      if (record.state !== 'starting') m.wasReady = true;
      if (before === 'starting' && (record.state === 'ready' || record.state === 'busy')) {
        clearTimeout(m.readyTimer);
        const health = this.health.get(m.worker.slot)!;
        health.lastError = null;
        health.modelFailures = 0;
        this.emit({ type: 'ready', worker: { ...m.worker } });
      }
    }
    if (this.closed) return;
    for (const record of records) this.maybeAdopt(record);
  }

  async close(options: { stopWorkers?: boolean } = {}): Promise<void> {
    if (options.stopWorkers ?? true) {
      await Promise.all([...this.managed.keys()].map((id) => this.stop(id, 'autoscaler stopping')));
    }
    this.closed = true;
    clearInterval(this.adoptedPoll);
    for (const m of this.managed.values()) {
      clearTimeout(m.readyTimer);
      clearTimeout(m.killTimer);
    }
  }

  /** SIGKILL to every worker, for a second Ctrl-C; resolves once they are gone (their exits put their jobs back). */
  killAll(): Promise<void> {
    const all = [...this.managed.values()];
    for (const m of all) this.signal(m, 'SIGKILL');
    return Promise.all(all.map((m) => m.exited)).then(() => undefined);
  }

  /** A live worker on this machine in one of our slots that no one manages: its autoscaler died. */
  private maybeAdopt(record: WorkerRecord): void {
    if (this.managed.has(record.id) || record.host !== this.host) return;
    if (!this.slots.some((s) => s.id === record.slot)) return;
    if (!pidAlive(record.pid)) return;
    const worker: DriverWorker = {
      id: record.id,
      slot: record.slot,
      pid: record.pid,
      phase: record.state,
      currentJob: record.currentJob,
      startedAt: record.startedAt,
      adopted: true,
      model: record.model,
    };
    // Its stderr file is named by its id, so the reason it dies is still ours to read.
    const m = this.track(worker, null, stderrFile(record.id));
    if (record.state === 'draining') {
      // Its old autoscaler asked it to stop; finish that here, grace period included.
      void this.stop(record.id, 'adopted while draining');
    }
    this.options.logger.info({ workerId: record.id, slot: record.slot, pid: record.pid, state: record.state }, 'adopted an orphaned worker');
    this.emit({ type: 'adopted', worker: { ...m.worker } });
    // Not our child: no exit event, so watch its pid.
    this.adoptedPoll ??= setInterval(() => {
      for (const a of this.managed.values()) if (a.child === null && !pidAlive(a.worker.pid)) this.onExit(a, null, null);
    }, 250);
    this.adoptedPoll.unref();
  }

  private track(worker: DriverWorker, child: ChildProcess | null, stderrPath: string | null): Managed {
    let markExited!: () => void;
    const exited = new Promise<void>((resolve) => (markExited = resolve));
    const m: Managed = { worker, child, stopRequested: false, wasReady: worker.phase !== 'starting', failure: null, stderrPath, exited, markExited };
    this.managed.set(worker.id, m);
    return m;
  }

  private onExit(m: Managed, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.managed.get(m.worker.id) !== m) return;
    this.managed.delete(m.worker.id);
    clearTimeout(m.readyTimer);
    clearTimeout(m.killTimer);
    const stderr = readTail(m.stderrPath);
    const expected = m.stopRequested && m.failure === null;
    const log = { workerId: m.worker.id, slot: m.worker.slot, code, signal, adopted: m.worker.adopted };
    if (expected) {
      this.options.logger.info(log, 'worker stopped');
    } else if (!this.closed) {
      this.recordCrash(m, code, stderr);
    }
    this.emit({ type: 'exited', worker: { ...m.worker }, code, signal, expected, error: stderr });
    m.markExited();
    if (![...this.managed.values()].some((w) => w.child === null)) {
      clearInterval(this.adoptedPoll);
      this.adoptedPoll = undefined;
    }
  }

  private recordCrash(m: Managed, code: number | null, stderr: string | null): void {
    const now = Date.now();
    const slot = m.worker.slot;
    const health = this.health.get(slot);
    if (!health) return;
    const fatal = m.failure ?? (code !== null ? FATAL_EXIT_CODES[code] : undefined);
    const detail = lastLine(stderr);
    health.lastError = detail ?? fatal ?? `exited with ${code ?? 'a signal'}`;
    const log = { workerId: m.worker.id, slot, code, stderr: detail };
    if (fatal) {
      // The same configuration would fail the same way: report, do not retry.
      health.failed = detail && !detail.includes(fatal) ? `${fatal}: ${detail}` : (detail ?? fatal);
      this.options.logger.error(log, `worker failed to start (${health.failed}); slot ${slot} is not retried`);
      this.emit({ type: 'slot-failed', slot, reason: health.failed });
      return;
    }
    if (code === MODEL_FAILURE_EXIT_CODE) {
      health.modelFailures += 1;
      const delay = Math.min(this.options.modelRetryMaxMs ?? 300_000, Math.max(this.options.restartBackoffMs, 1000) * 2 ** (health.modelFailures - 1));
      health.backoffUntil = now + delay;
      const reason = detail ?? 'model could not be loaded';
      this.options.logger.error({ ...log, retryInMs: delay, failures: health.modelFailures }, `${reason}; slot ${slot} tries again in ${Math.round(delay / 1000)} s`);
      this.emit({ type: 'model-unavailable', slot, reason, until: health.backoffUntil, failures: health.modelFailures, model: m.worker.model ?? null });
      return;
    }
    if (m.wasReady) {
      // A worker that had loaded its model and served died (kill -9, OOM killer, a fault in one
      // job): not a crash loop. Its slot takes a new worker after the first backoff step.
      health.backoffUntil = now + this.options.restartBackoffMs;
      this.options.logger.warn({ ...log, restartInMs: this.options.restartBackoffMs }, 'worker died after it was ready; replacing it');
      this.emit({ type: 'backoff', slot, until: health.backoffUntil, crashes: 0 });
      return;
    }
    health.crashes = [...health.crashes.filter((t) => now - t < this.options.crashLoopWindowMs), now];
    if (health.crashes.length >= this.options.crashLoopRestarts) {
      health.crashLoopUntil = now + this.options.crashLoopWindowMs;
      health.crashes = [];
      const reason = `crash loop: ${this.options.crashLoopRestarts} crashes within ${Math.round(this.options.crashLoopWindowMs / 1000)} s (last: ${health.lastError})`;
      this.options.logger.error({ ...log, until: new Date(health.crashLoopUntil).toISOString() }, `${reason}; slot ${slot} rests`);
      this.emit({ type: 'crash-loop', slot, until: health.crashLoopUntil, reason });
      return;
    }
    const delay = Math.min(MAX_BACKOFF_MS, this.options.restartBackoffMs * 2 ** (health.crashes.length - 1));
    health.backoffUntil = now + delay;
    this.options.logger.warn({ ...log, restartInMs: delay, crashes: health.crashes.length }, 'worker crashed; its slot takes a new worker after a backoff');
    this.emit({ type: 'backoff', slot, until: health.backoffUntil, crashes: health.crashes.length });
  }

  private workerEnv(slot: Slot, id: string): NodeJS.ProcessEnv {
    const base = this.options.env ?? process.env;
    return { ...base, WORKER_ID: id, WORKER_SLOT: slot.id, ...slotEnv(slot, base, this.slots.length) };
  }

  private signal(m: Managed, signal: NodeJS.Signals): void {
    try {
      if (m.child) m.child.kill(signal);
      else if (m.worker.pid !== null) process.kill(m.worker.pid, signal);
    } catch {
      // Already gone: the exit is picked up by its event or the pid poll.
    }
  }

  private emit(event: DriverEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.options.logger.error({ err }, 'driver event listener failed');
      }
    }
  }
}

/**
 * The worker's entry beside this module's folder: compiled (this file is dist/autoscaler/local-driver.js)
 * it is plain Node on dist/worker/main.js; from the sources, tsx runs worker/main.ts.
 */
export function defaultWorkerCommand(self: string = fileURLToPath(import.meta.url)): string[] {
  const compiled = self.endsWith('.js');
  const main = path.join(path.dirname(self), '..', 'worker', compiled ? 'main.js' : 'main.ts');
  return compiled ? [process.execPath, main] : [process.execPath, '--import', 'tsx', main];
}

/** Where a worker's stderr goes: named by its id, so an autoscaler that adopts the worker finds it too. */
const stderrFile = (workerId: string) => path.join(os.tmpdir(), `sdjobs-worker-${workerId.replace(/[^A-Za-z0-9_.-]/g, '_')}.stderr`);

function readTail(file: string | null): string | null {
  if (!file) return null;
  try {
    const text = fs.readFileSync(file, 'utf8');
    fs.rmSync(file, { force: true });
    const tail = text.slice(-STDERR_TAIL_BYTES).trim();
    return tail === '' ? null : tail;
  } catch {
    return null;
  }
}

function lastLine(text: string | null): string | null {
  if (!text) return null;
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  const config = lines.findIndex((l) => l.startsWith('Invalid configuration'));
  if (config >= 0) return lines.slice(config).join(' ');
  // Prefer the worker's own report over a stack trace's last frame.
  return lines.find((l) => l.startsWith('model could not be loaded')) ?? lines.find((l) => /^(Error|Invalid configuration)/.test(l)) ?? lines.at(-1) ?? null;
}
