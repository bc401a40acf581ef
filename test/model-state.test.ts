import { describe, expect, it } from 'vitest';
import { modelState, UNAVAILABLE_HOLD_MS, type ModelStatus } from '../shared/model-registry.js';

/** A model's state, by name, from its last load outcome and the workers that serve it. */
describe('modelState', () => {
  const failed = (at: number, retryAt: number | null = null): ModelStatus => ({ state: 'unavailable', error: 'model could not be loaded: no unet', at, retryAt });
  const worker = (state: 'starting' | 'ready' | 'busy' | 'draining', model = 'm') => ({ model, state });

  it('is available while a worker serves it, whatever its last load said', () => {
    expect(modelState('m', failed(1000), [worker('busy')], 2000)).toMatchObject({ state: 'available', error: null, retryAt: null });
  });

  it('is unavailable after a failed load, with the error, since when and the next try', () => {
    expect(modelState('m', failed(1000, 5000), [worker('starting')], 2000)).toEqual({
      name: 'm',
      state: 'unavailable',
      error: 'model could not be loaded: no unet',
      since: 1000,
      retryAt: 5000,
      workers: { starting: 1, ready: 0, busy: 0, draining: 0 },
    });
  });

  it('stops refusing a while after the next try was due, so a fixed model is found even when nobody retries it', () => {
    expect(modelState('m', failed(1000), [], 1000 + UNAVAILABLE_HOLD_MS - 1).state).toBe('unavailable');
    expect(modelState('m', failed(1000), [], 1000 + UNAVAILABLE_HOLD_MS).state).toBe('idle');
    expect(modelState('m', failed(1000, 100_000), [], 100_000 + UNAVAILABLE_HOLD_MS - 1).state).toBe('unavailable');
  });

  it('is loading while a worker starts, idle with none, and counts only its own workers', () => {
    expect(modelState('m', null, [worker('starting'), worker('ready', 'other')]).state).toBe('loading');
    expect(modelState('m', { state: 'available', error: null, at: 1, retryAt: null }, [worker('ready', 'other')])).toMatchObject({
      state: 'idle',
      workers: { starting: 0, ready: 0, busy: 0, draining: 0 },
    });
  });
});
