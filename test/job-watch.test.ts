import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { JobWatcher } from '../shared/job-watch.js';

/**
 * When a watched job is re-read, on fake timers: what matters is which reads happen before any
 * time passes, not how fast the machine is.
 */

interface Rec {
  status: string;
}

/** A job store the test changes by hand; each read is recorded, and may be held in flight. */
function fakeJob(initial: string) {
  let status = initial;
  const reads: number[] = [];
  let gate: Promise<void> | null = null;
  let failNext = false;
  return {
    reads,
    set(next: string) {
      status = next;
    },
    /** The next read sees the job as it is now but answers only once the returned function is called. */
    holdNextRead(): () => void {
      let release!: () => void;
      gate = new Promise<void>((resolve) => (release = resolve));
      return release;
    },
    failNextRead() {
      failNext = true;
    },
    read: async (_id: string): Promise<Rec | null> => {
      reads.push(Date.now());
      if (failNext) {
        failNext = false;
        throw new Error('redis away');
      }
      const seen = status;
      const held = gate;
      gate = null;
      if (held) await held;
      return seen === 'gone' ? null : { status: seen };
    },
  };
}

/** Lets promise callbacks run without moving the clock. */
const settle = () => vi.advanceTimersByTimeAsync(0);

beforeEach(() => {
  vi.useFakeTimers();
  vi.setSystemTime(1_000_000);
});
afterEach(() => {
  vi.useRealTimers();
});

describe('JobWatcher', () => {
  it('reads the job as soon as it ends, however recently it was read', async () => {
    const job = fakeJob('running');
    const watcher = new JobWatcher<Rec>({ read: job.read, throttleMs: 200, safetyPollMs: 60_000 });
    const seen: string[] = [];
    watcher.watch('a', (r) => seen.push(r?.status ?? 'gone'));
    await settle();
    expect(job.reads).toHaveLength(1);

    // Progress right after a read waits for the throttle...
    await vi.advanceTimersByTimeAsync(10);
    job.set('running');
    watcher.changed('a');
    await settle();
    expect(job.reads).toHaveLength(1);

    // ...the end does not: it is read with no time passing.
    job.set('succeeded');
    watcher.ended('a');
    await settle();
    expect(job.reads).toHaveLength(2);
    expect(seen).toEqual(['running', 'succeeded']);
    expect(job.reads[1]).toBe(job.reads[0]! + 10);
  });

  it('reads again at once when the job ends during a read that started before the end', async () => {
    const job = fakeJob('running');
    const watcher = new JobWatcher<Rec>({ read: job.read, throttleMs: 200, safetyPollMs: 60_000 });
    const seen: string[] = [];
    watcher.watch('a', (r) => seen.push(r?.status ?? 'gone'));
    await settle();

    await vi.advanceTimersByTimeAsync(200);
    watcher.changed('a'); // due now: the throttle has passed
    const release = job.holdNextRead();
    await settle();
    expect(job.reads).toHaveLength(2);
    // The read in flight saw the job running; the job ends before it answers.
    job.set('succeeded');
    watcher.ended('a');
    release();
    await settle();
    expect(job.reads).toHaveLength(3);
    expect(seen).toEqual(['running', 'running', 'succeeded']);
  });

  it('still throttles progress: a burst of changes makes one read, a throttle after the last', async () => {
    const job = fakeJob('running');
    const watcher = new JobWatcher<Rec>({ read: job.read, throttleMs: 200, safetyPollMs: 60_000 });
    watcher.watch('a', () => undefined);
    await settle();
    for (let i = 0; i < 10; i++) {
      watcher.changed('a');
      await vi.advanceTimersByTimeAsync(15);
    }
    expect(job.reads).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(50);
    expect(job.reads).toHaveLength(2);
    expect(job.reads[1]! - job.reads[0]!).toBe(200);
  });

  it('catches an end whose event never came with the safety poll', async () => {
    const job = fakeJob('running');
    const watcher = new JobWatcher<Rec>({ read: job.read, throttleMs: 200, safetyPollMs: 2000 });
    const seen: string[] = [];
    const stop = watcher.watch('a', (r) => {
      seen.push(r?.status ?? 'gone');
      if (r?.status === 'succeeded') stop();
    });
    await settle();
    job.set('succeeded'); // no event
    await vi.advanceTimersByTimeAsync(1999);
    expect(seen).toEqual(['running']);
    await vi.advanceTimersByTimeAsync(1);
    expect(seen).toEqual(['running', 'succeeded']);
    // The listener stopped watching: nothing is left scheduled.
    expect(vi.getTimerCount()).toBe(0);
  });

  it('keeps polling slowly while nothing happens, and a change in between resets the wait', async () => {
    const job = fakeJob('queued');
    const watcher = new JobWatcher<Rec>({ read: job.read, throttleMs: 200, safetyPollMs: 2000 });
    watcher.watch('a', () => undefined);
    await settle();
    await vi.advanceTimersByTimeAsync(4000);
    expect(job.reads.map((t) => t - 1_000_000)).toEqual([0, 2000, 4000]);
    await vi.advanceTimersByTimeAsync(500);
    watcher.ended('a');
    await settle();
    await vi.advanceTimersByTimeAsync(2000);
    expect(job.reads.map((t) => t - 1_000_000)).toEqual([0, 2000, 4000, 4500, 6500]);
  });

  it('tells listeners when the job is gone', async () => {
    const job = fakeJob('running');
    const watcher = new JobWatcher<Rec>({ read: job.read, safetyPollMs: 60_000 });
    const seen: Array<string | null> = [];
    watcher.watch('a', (r) => seen.push(r?.status ?? null));
    await settle();
    job.set('gone');
    watcher.ended('a'); // BullMQ's `removed`
    await settle();
    expect(seen).toEqual(['running', null]);
  });

  it('retries a failed read later instead of reporting the job gone', async () => {
    const job = fakeJob('running');
    const watcher = new JobWatcher<Rec>({ read: job.read, retryMs: 1000, safetyPollMs: 60_000 });
    const seen: Array<string | null> = [];
    job.failNextRead();
    watcher.watch('a', (r) => seen.push(r?.status ?? null));
    await settle();
    expect(seen).toEqual([]);
    await vi.advanceTimersByTimeAsync(1000);
    expect(seen).toEqual(['running']);
  });

  it('re-reads only queued jobs when the line moves', async () => {
    const queued = fakeJob('queued');
    const running = fakeJob('running');
    const watcher = new JobWatcher<Rec>({ read: (id) => (id === 'q' ? queued.read(id) : running.read(id)), throttleMs: 200, safetyPollMs: 60_000 });
    watcher.watch('q', () => undefined);
    watcher.watch('r', () => undefined);
    await settle();
    watcher.queuedChanged();
    await vi.advanceTimersByTimeAsync(200);
    expect(queued.reads).toHaveLength(2);
    expect(running.reads).toHaveLength(1);
  });

  it('leaves no timer behind once the last listener stops, or on close', async () => {
    const job = fakeJob('running');
    const watcher = new JobWatcher<Rec>({ read: job.read });
    const stopA = watcher.watch('a', () => undefined);
    const stopB = watcher.watch('a', () => undefined);
    watcher.watch('b', () => undefined);
    await settle();
    stopA();
    expect(vi.getTimerCount()).toBe(2);
    stopB();
    expect(vi.getTimerCount()).toBe(1);
    watcher.close();
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(job.reads).toHaveLength(2);
  });
});
