import { describe, expect, it } from 'vitest';
import { GenerationClock } from '../worker/generation-clock.js';
import { GpuGate } from '../worker/gpu-gate.js';

describe('GpuGate', () => {
  it('gives the GPU to one token at a time; a second waits until the first releases it', async () => {
    const gate = new GpuGate();
    expect(gate.tryTake('a')).toBe(true);
    expect(gate.tryTake('a')).toBe(true);
    expect(gate.tryTake('b')).toBe(false);
    const taken = gate.take('b', () => false);
    gate.release('b'); // not b's to release: nothing changes
    expect(gate.heldBy).toBe('a');
    gate.release('a');
    expect(await taken).toBe(true);
    expect(gate.heldBy).toBe('b');
    expect(gate.takenEarlyAt('b')).toBeUndefined();
  });

  it('a waiting take gives up when its stop turns true', async () => {
    const gate = new GpuGate();
    gate.tryTake('a');
    let stop = false;
    const taken = gate.take('b', () => stop);
    stop = true;
    gate.wake();
    expect(await taken).toBe(false);
    expect(gate.heldBy).toBe('a');
  });

  it('after the holder announces its end, exactly one token takes the place after it and holds the GPU once it is released', async () => {
    const gate = new GpuGate();
    gate.tryTake('a');
    expect(gate.tryTake('b')).toBe(false);
    const waiting = gate.take('b', () => false);
    gate.announceEnd('b'); // only the holder announces
    expect(gate.nextBy).toBeNull();
    gate.announceEnd('a');
    expect(await waiting).toBe(true);
    expect(gate.nextBy).toBe('b');
    expect(gate.heldBy).not.toBe('b');
    expect(gate.takenEarlyAt('b')).toBeTypeOf('number');
    expect(gate.tryTake('c')).toBe(false);

    const ready = gate.acquire('b', 10_000);
    let settled = false;
    void ready.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(settled).toBe(false);
    gate.release('a');
    expect(await ready).toBe(true);
    expect(gate.heldBy).toBe('b');
    expect(gate.takenEarlyAt('b')).toBeTypeOf('number');
    // A new generation: no early place until b announces.
    expect(gate.tryTake('c')).toBe(false);
    gate.release('b');
    expect(gate.tryTake('c')).toBe(true);
    expect(gate.takenEarlyAt('c')).toBeUndefined();
  });

  it('a token taken early gives its place up after its longest wait, and no other is taken early in that generation', async () => {
    const gate = new GpuGate();
    gate.tryTake('a');
    gate.announceEnd('a');
    expect(gate.tryTake('b')).toBe(true);
    expect(await gate.acquire('b', 30)).toBe(false);
    expect(gate.nextBy).toBeNull();
    expect(gate.tryTake('c')).toBe(false);
    gate.release('a');
    expect(gate.heldBy).toBeNull();
  });

  it("an aborted wait rejects with the signal's reason; the place is given up by release", async () => {
    const gate = new GpuGate();
    gate.tryTake('a');
    gate.announceEnd('a');
    gate.tryTake('b');
    const controller = new AbortController();
    const ready = gate.acquire('b', 10_000, controller.signal);
    controller.abort('canceled');
    await expect(ready).rejects.toBe('canceled');
    gate.release('b');
    expect(gate.nextBy).toBeNull();
    gate.release('a');
    expect(gate.heldBy).toBeNull();
  });

  it('the next job released before its predecessor leaves the GPU free once the predecessor ends', () => {
    const gate = new GpuGate();
    gate.tryTake('a');
    gate.announceEnd('a');
    gate.tryTake('b');
    gate.release('b'); // e.g. its take found no job
    expect(gate.nextBy).toBeNull();
    expect(gate.tryTake('c')).toBe(true); // the end is still announced
    gate.release('a');
    expect(gate.heldBy).toBe('c');
  });
});

describe('GenerationClock', () => {
  it('estimates a shape only after three generations that agree, as their median', () => {
    const clock = new GenerationClock(20);
    clock.recordGeneration('512', 100);
    clock.recordGeneration('512', 102);
    expect(clock.estimate('512')).toBeUndefined();
    clock.recordGeneration('512', 101);
    expect(clock.estimate('512')).toBe(101);
    expect(clock.estimate('768')).toBeUndefined();
  });

  it('does not estimate a shape whose generations disagree', () => {
    const clock = new GenerationClock(20);
    for (const ms of [100, 100, 150]) clock.recordGeneration('512', ms);
    expect(clock.estimate('512')).toBeUndefined();
    // Once the outlier is older than the samples kept, the shape is predictable again.
    for (let i = 0; i < 8; i++) clock.recordGeneration('512', 100);
    expect(clock.estimate('512')).toBe(100);
  });

  it('announces the end the lead before the estimate; the lead follows the takes within 2 ms and the maximum', () => {
    const clock = new GenerationClock(20);
    for (let i = 0; i < 3; i++) clock.recordGeneration('s', 200);
    expect(clock.leadMs()).toBe(5);
    expect(clock.announceAfter('s')).toBe(195);
    for (let i = 0; i < 30; i++) clock.recordTake(0.2);
    expect(clock.leadMs()).toBe(2);
    for (let i = 0; i < 30; i++) clock.recordTake(500);
    expect(clock.leadMs()).toBe(20);
    expect(clock.announceAfter('s')).toBe(180);
    expect(clock.maxWaitMs()).toBe(80); // 4 leads
  });

  it('lets a job taken early wait as long as the spread its predecessor is allowed, at least 50 ms', () => {
    const clock = new GenerationClock(20);
    for (let i = 0; i < 3; i++) clock.recordGeneration('fast', 100);
    for (let i = 0; i < 3; i++) clock.recordGeneration('slow', 2000);
    clock.announceAfter('fast');
    expect(clock.maxWaitMs()).toBe(50);
    clock.announceAfter('slow');
    // 10 % of 2 s + 2 ms, plus the lead (5 ms before any take was measured).
    expect(clock.maxWaitMs()).toBe(207);
  });

  it('never announces when early takes are off', () => {
    const clock = new GenerationClock(0);
    for (let i = 0; i < 3; i++) clock.recordGeneration('s', 200);
    expect(clock.announceAfter('s')).toBeUndefined();
  });
});
