import fs from 'node:fs';
import type { Logger } from './logger.js';

/**
 * SIGTERM/SIGINT handling for a process entry point: the first signal asks for a graceful stop,
 * a deliberate second one forces. "Deliberate" matters: one Ctrl-C or one `kill` often arrives
 * two or three times within milliseconds — the terminal signals the whole foreground process
 * group, and npm (and tsx, when it runs the script) forwards what it received to its child as
 * well. Signals that arrive within `sameWithinMs` of the first are that same request, logged and
 * ignored; a later one is a second request and forces.
 */

export type ShutdownSignal = 'SIGTERM' | 'SIGINT' | 'SIGHUP' | 'parent exited' | 'orphaned';

export interface ShutdownHandlers {
  /** The first request: stop gracefully (drain). */
  graceful(reason: ShutdownSignal): void;
  /** A second, deliberate request while draining: stop now. */
  force(reason: ShutdownSignal): void;
}

/** Long enough for every relay of one Ctrl-C (they come within a few tens of ms, more on a loaded machine), short of a person's second press. */
export const SAME_SIGNAL_WINDOW_MS = 1000;

export interface ShutdownRequests {
  /** Requests a stop as a signal would (a parent that died, an orphaned worker): graceful first, forced after. */
  request(reason: ShutdownSignal): void;
  /** Removes the process signal listeners. */
  dispose(): void;
}

export function handleShutdownSignals(
  logger: Logger,
  handlers: ShutdownHandlers,
  options: { signals?: NodeJS.Signals[]; sameWithinMs?: number; now?: () => number } = {},
): ShutdownRequests {
  const window = options.sameWithinMs ?? SAME_SIGNAL_WINDOW_MS;
  const now = options.now ?? Date.now;
  let firstAt: number | null = null;
  let forced = false;

  const request = (reason: ShutdownSignal) => {
    const at = now();
    if (firstAt === null) {
      firstAt = at;
      logger.info({ signal: reason }, `${reason}: stopping gracefully (the running jobs finish first; signal again to force)`);
      handlers.graceful(reason);
      return;
    }
    // A parent that died or an orphaned worker is a reason to stop, never a person asking to force.
    if (!reason.startsWith('SIG')) {
      logger.info({ reason }, `${reason} while stopping: still stopping gracefully`);
      return;
    }
    if (at - firstAt < window) {
      logger.info({ signal: reason, afterMs: at - firstAt }, `${reason} again within ${window} ms: the same request, relayed (npm, the terminal); still stopping gracefully`);
      return;
    }
    if (forced) return;
    forced = true;
    logger.warn({ signal: reason }, `${reason} while stopping: forcing`);
    handlers.force(reason);
  };

  const signals = options.signals ?? ['SIGTERM', 'SIGINT'];
  const listeners = signals.map((signal) => {
    const listener = () => request(signal as ShutdownSignal);
    process.on(signal, listener);
    return [signal, listener] as const;
  });
  return {
    request,
    dispose: () => {
      for (const [signal, listener] of listeners) process.off(signal, listener);
    },
  };
}

/** A process's parent pid and start time (clock ticks since boot), from /proc; null when it is gone. */
function procStat(pid: number): { ppid: number; start: string } | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return null;
    return { ppid: Number(fields[1]), start: fields[19] ?? '' };
  } catch {
    return null;
  }
}

function commandLine(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

/**
 * The processes that launched this one and whose death should stop it: the parent and, under
 * `npm start` (npm runs the script through a shell, which outlives a killed npm), every ancestor
 * up to npm itself. Each is known by pid and start time, so a reused pid does not pass for it.
 */
function launchers(): { pid: number; start: string }[] {
  const chain: { pid: number; start: string }[] = [];
  const underNpm = process.env['npm_lifecycle_event'] !== undefined;
  let pid = process.ppid;
  while (pid > 1 && chain.length < 4) {
    const stat = procStat(pid);
    if (!stat) break;
    chain.push({ pid, start: stat.start });
    if (!underNpm || /(^|\/|\s)npm(-cli\.js)?(\s|$)/.test(commandLine(pid))) break;
    pid = stat.ppid;
  }
  return chain;
}

/**
 * Calls `onExit` once a process that launched this one is gone (see `launchers`), checking every
 * `intervalMs`: `npm start` killed outright does not leave the service and its workers behind.
 * Does nothing for a process whose parent is init (a container runtime or a supervisor that is
 * init: there is nothing to outlive). Without /proc it watches the parent pid only.
 */
export function watchParent(onExit: () => void, intervalMs = 500): () => void {
  const parent = process.ppid;
  if (parent <= 1) return () => undefined;
  const chain = fs.existsSync('/proc/self/stat') ? launchers() : [];
  const gone = () =>
    process.ppid !== parent || chain.some(({ pid, start }) => procStat(pid)?.start !== start);
  const timer = setInterval(() => {
    if (gone()) {
      clearInterval(timer);
      onExit();
    }
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
