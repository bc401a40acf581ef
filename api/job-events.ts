import type { Response } from 'express';
import { isFinished, type JobRecord } from '../shared/job-queue.js';
import type { AppDeps } from './deps.js';
import { jobView } from '../shared/job-view.js';

/**
 * `GET /v1/jobs/:id/events`: server-sent events named by the job's status, each carrying the job
 * view as JSON — `queued` (with queue_position), `running` (with progress, at most about five a
 * second), then exactly one `succeeded`, `failed`, `canceled` or `expired`, after which the stream ends.
 * The first event is always the current state, so a reconnecting client needs no replay.
 */

const HEARTBEAT_MS = 15_000;
const RANK: Record<string, number> = { queued: 0, running: 1, succeeded: 2, failed: 2, canceled: 2, expired: 2 };

export function streamJobEvents(deps: AppDeps, res: Response, first: JobRecord, baseUrl: string): void {
  res.status(200);
  res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
  res.setHeader('Cache-Control', 'no-cache, no-transform');
  res.setHeader('Connection', 'keep-alive');
  // nginx and friends buffer responses unless told not to.
  res.setHeader('X-Accel-Buffering', 'no');
  res.flushHeaders();
  res.write('retry: 2000\n\n');

  let seq = 0;
  let last: { rank: number; key: string } | null = null;
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    stop?.();
    res.end();
  };
  const send = (record: JobRecord) => {
    if (ended) return;
    const rank = RANK[record.status] ?? 0;
    const view = jobView(record, baseUrl);
    const key = JSON.stringify([view.status, view.progress, view.queue_position]);
    // Reads can overlap a change; never step back, never repeat an identical state.
    if (last && (rank < last.rank || key === last.key)) return;
    last = { rank, key };
    seq += 1;
    res.write(`id: ${seq}\nevent: ${record.status}\ndata: ${JSON.stringify(view)}\n\n`);
    if (isFinished(record.status)) end();
  };

  const heartbeat = setInterval(() => {
    if (!ended) res.write(': keep-alive\n\n');
  }, HEARTBEAT_MS);
  heartbeat.unref();
  let stop: (() => void) | undefined;
  res.on('close', end);
  // The client may have left while the job was being read.
  if (!res.socket || res.socket.destroyed) return end();

  send(first);
  if (ended) return;
  stop = deps.queue.watch(first.id, (record) => {
    if (record) send(record);
    else end(); // removed by retention while someone watched: nothing more will happen
  });
}
