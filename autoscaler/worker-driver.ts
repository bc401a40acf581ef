import type { RegisteredWorkerState, SlotReport, WorkerRecord } from '../shared/worker-registry.js';
import type { Slot } from './slots.js';

/**
 * What the control loop needs from whatever runs workers: local processes pinned to GPU slots
 * (`LocalDriver`), or a cluster engine beyond one machine. The loop decides how many; the driver
 * knows where they run, what state they are in, and which slots cannot be used.
 */
export interface WorkerDriver {
  readonly slots: readonly Slot[];
  /** Every worker the driver runs or has adopted, draining ones included. */
  workers(): DriverWorker[];
  /** Slots with nothing on them and nothing holding them back (backoff, crash loop, failure). */
  freeSlots(): Slot[];
  /** Slots a worker may use at all: not failed and not resting after a crash loop. */
  usableSlotCount(): number;
  slotReports(): SlotReport[];
  /** Starts a worker holding `model` (default: the default model) on a free slot; throws when the slot is taken (never two on one GPU). */
  start(slot: Slot, model?: string): DriverWorker;
  /** Graceful stop: the worker finishes its current job and exits; killed after the grace period. Resolves on exit. */
  stop(id: string, reason: string): Promise<void>;
  /** Brings the driver's view up to date with the registry: worker states, and orphans on this machine to adopt. */
  sync(records: readonly WorkerRecord[]): void;
  onEvent(listener: (event: DriverEvent) => void): () => void;
  /** `stopWorkers: false` leaves the workers running for another autoscaler to adopt. */
  close(options?: { stopWorkers?: boolean }): Promise<void>;
}

export interface DriverWorker {
  id: string;
  slot: string;
  pid: number | null;
  phase: RegisteredWorkerState;
  currentJob: string | null;
  startedAt: number;
  /** Taken over from an autoscaler that went away. */
  adopted: boolean;
  /** The catalogue model it holds; null or absent: the default model (started without one). */
  model?: string | null;
}

export type DriverEvent =
  | { type: 'started'; worker: DriverWorker }
  | { type: 'adopted'; worker: DriverWorker }
  | { type: 'ready'; worker: DriverWorker }
  | { type: 'stopping'; worker: DriverWorker; reason: string }
  | { type: 'killed'; worker: DriverWorker; reason: string }
  | {
      type: 'exited';
      worker: DriverWorker;
      code: number | null;
      signal: string | null;
      /** Asked to stop (a crash otherwise). */
      expected: boolean;
      /** The worker's last stderr lines, when it had any. */
      error: string | null;
    }
  | { type: 'backoff'; slot: string; until: number; crashes: number }
  | { type: 'crash-loop'; slot: string; until: number; reason: string }
  | { type: 'slot-failed'; slot: string; reason: string }
  /** The slot's worker could not load the model (exit 3); the slot tries again at `until`. */
  | { type: 'model-unavailable'; slot: string; reason: string; until: number; failures: number; model: string | null };
