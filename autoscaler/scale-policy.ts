/**
 * How many workers to run: a pure function of the queue's load, the current target and the time,
 * with Ray Serve's autoscaling_config semantics (min/initial/max replicas, target per replica,
 * upscale_delay_s, downscale_delay_s, downscale_to_zero_delay_s) and these of its failures fixed:
 *
 * - Ray counts requests it can see at handles and replicas; we count the queue's full load
 *   (waiting + prioritized + due delayed + running), so a retry waiting out its backoff or a
 *   running job is never mistaken for idleness.
 * - From zero Ray starts one replica and makes the rest wait out upscale_delay_s; here a cold
 *   start goes straight to what the load asks for.
 * - Ray's delays count control-loop periods; here they are wall-clock time, so a slow loop does
 *   not stretch them.
 * - Ray leaves replicas pending when the cluster has no GPU for them; here the target never
 *   exceeds the usable slots.
 *
 * Flapping: a change happens only after the load has asked for it (in the same direction) for the
 * whole delay; a single tick at the current size resets the clock, as Ray's decision counter does.
 */

export interface PolicyConfig {
  minWorkers: number;
  /** Resolved: the configured maximum or, unset, the number of slots. */
  maxWorkers: number;
  initialWorkers: number;
  targetJobsPerWorker: number;
  upscaleDelayS: number;
  downscaleDelayS: number;
  downscaleToZeroDelayS: number;
}

/** The direction the load has been asking for, and since when (carried from one decision to the next). */
export interface PendingScale {
  direction: 'up' | 'down';
  since: number;
}

export interface ScaleState {
  /** ms epoch */
  now: number;
  /** The queue's full load: waiting + prioritized + due delayed + active. */
  load: number;
  /** The standing target: workers running or starting (draining ones excluded). */
  workers: number;
  /** Slots a worker may use at all: crash-looping and failed slots excluded. */
  usableSlots: number;
  pending: PendingScale | null;
}

export type ScaleReason =
  | 'cold-start'
  | 'below-min'
  | 'above-max'
  | 'upscale'
  | 'downscale'
  | 'downscale-to-zero'
  | 'steady'
  | 'upscale-delay'
  | 'downscale-delay'
  | 'slot-limit';

export interface ScaleDecision {
  /** What the load asks for within min…max, before slots and delays. */
  desired: number;
  /** Workers to run from now on. */
  target: number;
  action: 'up' | 'down' | 'hold';
  reason: ScaleReason;
  pending: PendingScale | null;
}

const clamp = (value: number, low: number, high: number) => Math.max(low, Math.min(high, value));

/** What the load asks for, before bounds: one worker per `targetJobsPerWorker` jobs. */
export function workersForLoad(load: number, targetJobsPerWorker: number): number {
  if (load <= 0) return 0;
  // The epsilon keeps 3 / 0.1 from becoming 31 through floating-point noise.
  return Math.ceil(load / targetJobsPerWorker - 1e-9);
}

/** The target when an autoscaler starts with nothing to adopt (Ray's initial_replicas). */
export function initialTarget(config: PolicyConfig, usableSlots: number): number {
  const high = Math.min(config.maxWorkers, usableSlots);
  return clamp(config.initialWorkers, Math.min(config.minWorkers, high), high);
}

export function decide(state: ScaleState, config: PolicyConfig): ScaleDecision {
  const { now, workers, pending } = state;
  const high = Math.max(0, Math.min(config.maxWorkers, state.usableSlots));
  const low = Math.min(config.minWorkers, high);
  const asked = workersForLoad(state.load, config.targetJobsPerWorker);
  const desired = clamp(asked, config.minWorkers, config.maxWorkers);
  const reachable = clamp(asked, low, high);
  const hold = (reason: ScaleReason, next: PendingScale | null = null): ScaleDecision => ({
    desired,
    target: workers,
    action: 'hold',
    reason,
    pending: next,
  });
  const change = (target: number, reason: ScaleReason): ScaleDecision => ({
    desired,
    target,
    action: target > workers ? 'up' : 'down',
    reason,
    pending: null,
  });

  // Bounds apply at once, whatever the delays.
  if (workers > high) return change(high, 'above-max');
  if (workers === 0 && reachable > 0 && state.load > 0) return change(reachable, 'cold-start');
  if (workers < low) return change(low, 'below-min');

  if (reachable > workers) {
    const since = pending?.direction === 'up' ? pending : { direction: 'up' as const, since: now };
    if (now - since.since >= config.upscaleDelayS * 1000) return change(reachable, 'upscale');
    return hold('upscale-delay', since);
  }
  if (reachable < workers) {
    // Like Ray: n → 1 under downscale_delay_s, and only the last step 1 → 0 under downscale_to_zero_delay_s.
    const toZero = workers === 1;
    const target = toZero ? reachable : Math.max(1, reachable);
    const delayS = toZero ? config.downscaleToZeroDelayS : config.downscaleDelayS;
    const since = pending?.direction === 'down' ? pending : { direction: 'down' as const, since: now };
    if (now - since.since >= delayS * 1000) return change(target, toZero ? 'downscale-to-zero' : 'downscale');
    return hold('downscale-delay', since);
  }
  return hold(desired > workers ? 'slot-limit' : 'steady');
}
