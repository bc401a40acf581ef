/**
 * How long this worker's generations take, by shape (size, steps, images: what sets a
 * generation's cost), and how long taking a job from the queue takes: together they tell the job
 * loop when to take the next job so that it is ready the moment the GPU frees up, and no sooner.
 *
 * An estimate is given only for a shape whose recent generations agree (their spread within
 * `SPREAD` of their median): a job is taken early only when the end of the one before it is
 * predictable, never on a guess.
 */

/** Generations remembered per shape. */
const SAMPLES = 8;
/** Fewest generations of a shape before it is estimated. */
const MIN_SAMPLES = 3;
/** Largest spread (max − min) of the remembered generations, as a share of their median, plus 2 ms. */
const SPREAD = 0.1;
/** Shapes remembered (the least recently used forgotten). */
const SHAPES = 64;

export class GenerationClock {
  private readonly byShape = new Map<string, number[]>();
  private takeMs: number | undefined;
  private takeDevMs = 0;
  /** The spread allowed to the generation whose end was last announced (see `maxWaitMs`). */
  private announcedSpreadMs = 0;

  constructor(
    /** The most a job may be taken before the GPU is expected to free up; 0: never early. */
    readonly maxLeadMs: number,
  ) {}

  /** A generation of `shape` that ran to its end took `ms`. */
  recordGeneration(shape: string, ms: number): void {
    if (!(ms >= 0)) return;
    const samples = this.byShape.get(shape) ?? [];
    this.byShape.delete(shape);
    samples.push(ms);
    if (samples.length > SAMPLES) samples.shift();
    this.byShape.set(shape, samples);
    if (this.byShape.size > SHAPES) this.byShape.delete(this.byShape.keys().next().value as string);
  }

  /** The expected length of a generation of `shape`, or undefined where it is not predictable. */
  estimate(shape: string): number | undefined {
    const samples = this.byShape.get(shape);
    if (!samples || samples.length < MIN_SAMPLES) return undefined;
    const sorted = [...samples].sort((a, b) => a - b);
    const median = sorted[sorted.length >> 1]!;
    if (sorted[sorted.length - 1]! - sorted[0]! > spreadAllowed(median)) return undefined;
    return median;
  }

  /** An early take took `ms` from the GPU's place being given to the job being ready for it. */
  recordTake(ms: number): void {
    if (!(ms >= 0)) return;
    if (this.takeMs === undefined) {
      this.takeMs = ms;
      this.takeDevMs = ms / 2;
      return;
    }
    const error = ms - this.takeMs;
    this.takeMs += error / 8;
    this.takeDevMs += (Math.abs(error) - this.takeDevMs) / 4;
  }

  /**
   * How long before the expected end of a generation the next job is taken: the take's usual
   * time and its spread, plus a millisecond for timers, within 2 ms and `maxLeadMs`.
   */
  leadMs(): number {
    const usual = this.takeMs === undefined ? 5 : this.takeMs + 3 * this.takeDevMs + 1;
    return Math.min(this.maxLeadMs, Math.max(2, usual));
  }

  /**
   * When to announce the end of a generation of `shape` that starts now, in ms from now; undefined:
   * not at all (early takes are off, or the shape is not predictable).
   */
  announceAfter(shape: string): number | undefined {
    if (this.maxLeadMs <= 0) return undefined;
    const expected = this.estimate(shape);
    if (expected === undefined) return undefined;
    this.announcedSpreadMs = spreadAllowed(expected);
    return Math.max(0, expected - this.leadMs());
  }

  /**
   * How long a job taken early waits for the GPU before it goes back to the queue: the generation
   * before it ran past its estimate by more than the spread its shape is allowed, and an idle
   * worker may take the job meanwhile. At least 50 ms and four leads.
   */
  maxWaitMs(): number {
    const lead = this.leadMs();
    return Math.max(50, 4 * lead, lead + this.announcedSpreadMs);
  }
}

/** The spread (max − min) of a shape's generations within which it counts as predictable. */
function spreadAllowed(medianMs: number): number {
  return medianMs * SPREAD + 2;
}
