import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pidAlive } from '../../shared/process-alive.js';

/**
 * The whole service as a user runs it: `npm start` (or `node --import tsx scripts/start.ts`) in a
 * process group of its own, as a terminal would run it in the foreground, with its JSON logs in a
 * file. Used by the signal tests and the chaos suite.
 */

export const repoRoot = path.resolve(import.meta.dirname, '../..');

export interface ServiceProcess {
  /** The process started: npm, or node itself. */
  pid: number;
  /** Its process group (a terminal's Ctrl-C signals all of it). */
  pgid: number;
  /** The API's base URL, once it listens. */
  url: string;
  logFile: string;
  child: ChildProcess;
  /** The node process that runs scripts/start.ts (npm's grandchild, or `pid` itself). */
  startPid(): number | null;
  /** Parsed JSON log lines so far (the service's and its workers'). */
  logs(): Record<string, any>[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export async function startService(options: {
  env: Record<string, string>;
  logFile: string;
  /** `npm` (default) runs `npm start`; `node` runs start.ts directly. */
  via?: 'npm' | 'node';
  readyTimeoutMs?: number;
}): Promise<ServiceProcess> {
  // The log file may hold an earlier run's lines: this run's start is read from here on.
  const from = fs.existsSync(options.logFile) ? fs.statSync(options.logFile).size : 0;
  const out = fs.openSync(options.logFile, 'a');
  const command = options.via === 'node' ? [process.execPath, '--import', 'tsx', 'scripts/start.ts'] : ['npm', 'start', '--silent'];
  const child = spawn(command[0] as string, command.slice(1), {
    cwd: repoRoot,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', out, out],
    detached: true,
  });
  fs.closeSync(out);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const logs = () => readJsonLines(options.logFile);
  const deadline = Date.now() + (options.readyTimeoutMs ?? 90_000);
  let url: string | undefined;
  while (!url) {
    url = readJsonLines(options.logFile, from).find((l) => l.process === 'start' && typeof l.url === 'string' && String(l.msg).startsWith('ready'))?.url;
    if (url) break;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the service exited at start:\n${fs.readFileSync(options.logFile, 'utf8').slice(-4000)}`);
    if (Date.now() > deadline) throw new Error(`the service did not start:\n${fs.readFileSync(options.logFile, 'utf8').slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const pid = child.pid as number;
  return {
    pid,
    pgid: pid,
    url,
    logFile: options.logFile,
    child,
    startPid: () => (options.via === 'node' ? pid : findDescendant(pid, (cmd) => cmd.includes('scripts/start.ts') && !/^(sh|bash|dash) /.test(cmd))),
    logs,
    exited,
  };
}

/** The JSON lines of a log file (from byte `from` on); lines that are not JSON are skipped. */
export function readJsonLines(file: string, from = 0): Record<string, any>[] {
  if (!fs.existsSync(file)) return [];
  const lines: Record<string, any>[] = [];
  for (const line of fs.readFileSync(file).subarray(from).toString('utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as Record<string, any>);
    } catch {
      // A line cut by a kill: skip it.
    }
  }
  return lines;
}

/** Parent pid and command line of every process, from /proc. */
function processTable(): { pid: number; ppid: number; cmd: string }[] {
  const rows = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      rows.push({ pid: Number(entry), ppid, cmd });
    } catch {
      // Gone meanwhile.
    }
  }
  return rows;
}

/** Every live process below `root` (children, their children, …). */
export function descendants(root: number): { pid: number; cmd: string }[] {
  const table = processTable();
  const found: { pid: number; cmd: string }[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const parent = queue.shift() as number;
    for (const row of table) {
      if (row.ppid === parent) {
        found.push({ pid: row.pid, cmd: row.cmd });
        queue.push(row.pid);
      }
    }
  }
  return found;
}

function findDescendant(root: number, match: (cmd: string) => boolean): number | null {
  return descendants(root).find((p) => match(p.cmd))?.pid ?? null;
}

/** Resolves once none of `pids` is alive, or rejects after `timeoutMs` naming the survivors. */
export async function waitForExit(pids: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = pids.filter((p) => pidAlive(p));
    if (alive.length === 0) return;
    if (Date.now() > deadline) throw new Error(`still running after ${timeoutMs} ms: ${alive.join(', ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export { pidAlive };
