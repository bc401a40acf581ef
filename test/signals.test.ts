import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { handleShutdownSignals, type ShutdownRequests } from '../shared/signals.js';

/** One Ctrl-C arrives several times (terminal, npm, tsx): counted once; a later one forces. */
describe('handleShutdownSignals', () => {
  let now = 0;
  let handle: ShutdownRequests | undefined;
  afterEach(() => handle?.dispose());

  function setup() {
    const calls: string[] = [];
    handle = handleShutdownSignals(
      pino({ level: 'silent' }),
      { graceful: (r) => calls.push(`graceful:${r}`), force: (r) => calls.push(`force:${r}`) },
      { signals: [], now: () => now },
    );
    return calls;
  }

  it('takes copies of the first signal within the window as the same request', () => {
    const calls = setup();
    now = 1000;
    handle!.request('SIGINT');
    now = 1030; // tsx's relay
    handle!.request('SIGINT');
    now = 1100; // npm's forward, as SIGTERM
    handle!.request('SIGTERM');
    expect(calls).toEqual(['graceful:SIGINT']);
    now = 2500; // a person's second Ctrl-C
    handle!.request('SIGINT');
    now = 4000;
    handle!.request('SIGINT');
    expect(calls).toEqual(['graceful:SIGINT', 'force:SIGINT']);
  });

  it('never forces for a parent that died or an orphaned worker', () => {
    const calls = setup();
    now = 0;
    handle!.request('SIGTERM');
    now = 5000;
    handle!.request('parent exited');
    handle!.request('orphaned');
    expect(calls).toEqual(['graceful:SIGTERM']);
    const fresh = setup();
    handle!.request('parent exited');
    expect(fresh).toEqual(['graceful:parent exited']);
  });

  it('listens to real process signals', async () => {
    const calls: string[] = [];
    handle = handleShutdownSignals(pino({ level: 'silent' }), { graceful: (r) => calls.push(r), force: () => undefined }, { signals: ['SIGUSR2'] });
    process.kill(process.pid, 'SIGUSR2');
    await new Promise((r) => setTimeout(r, 50));
    expect(calls).toEqual(['SIGUSR2']);
  });
});
