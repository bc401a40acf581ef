import fs from 'node:fs';
import path from 'node:path';
import { pidAlive } from '../shared/process-alive.js';
import { waitForExit } from '../test/helpers/service-process.js';
import { Lab, Load, settle, sleep, waitUntil, type Outcome } from './lab.js';

/** How hard each experiment pushes: the short profile runs in CI, the full one by hand. */
export interface Profile {
  name: 'short' | 'full';
  /** Worker kills in a row. */
  kills: number;
  /** Jobs submitted per experiment (at most). */
  jobs: number;
  /** Pause between two submissions. */
  submitEveryMs: number;
  /** Redis down for this long before it restarts. */
  redisDownMs: number;
  /** S3 down for this long. */
  s3DownMs: number;
  /** How long an experiment waits for its jobs to finish before counting the rest as lost. */
  settleMs: number;
}

export const PROFILES: Record<Profile['name'], Profile> = {
  short: { name: 'short', kills: 6, jobs: 12, submitEveryMs: 300, redisDownMs: 1500, s3DownMs: 10_000, settleMs: 90_000 },
  full: { name: 'full', kills: 10, jobs: 30, submitEveryMs: 250, redisDownMs: 3000, s3DownMs: 30_000, settleMs: 240_000 },
};

export interface ExperimentResult {
  name: string;
  outcome: Outcome;
  /** Seconds; what it measures is in `recoveryOf`. */
  recoveryS: number | null;
  recoveryOf: string;
  /** Everything that makes this experiment fail: loss, a double run, a failure that should not be. */
  problems: string[];
}

export interface Experiment {
  name: string;
  run(lab: Lab, profile: Profile): Promise<ExperimentResult>;
}

/** The problems every experiment checks: nothing lost, nothing stored twice, no failure it did not expect. */
function verdict(name: string, outcome: Outcome, recoveryS: number | null, recoveryOf: string, extra: string[] = []): ExperimentResult {
  const problems = [...extra];
  if (outcome.lost.length > 0) problems.push(`lost: ${outcome.lost.join(', ')}`);
  if (outcome.runTwice.length > 0) problems.push(`run twice: ${outcome.runTwice.join(', ')}`);
  const unexpected = outcome.failed - outcome.expectedFailures;
  if (unexpected > 0) problems.push(`${unexpected} job(s) failed`);
  return { name, outcome, recoveryS, recoveryOf, problems };
}

const seconds = (ms: number) => Math.round(ms / 100) / 10;

/** Resolves with the time (ms) a job completes after `since`. */
async function nextCompletionAfter(lab: Lab, ids: () => string[], since: number, timeoutMs: number): Promise<number> {
  return waitUntil(
    'a job to complete',
    async () => {
      const states = await Promise.all(ids().map((id) => lab.jobState(id)));
      const done = states.filter((s) => s.state === 'completed' && (s.finishedOn ?? 0) > since).map((s) => s.finishedOn as number);
      return done.length > 0 ? Math.min(...done) : null;
    },
    timeoutMs,
    100,
  );
}

/** A busy worker and its job, once there is one. */
async function busyWorker(lab: Lab, timeoutMs = 60_000) {
  return waitUntil('a busy worker', async () => (await lab.workers()).find((w) => w.state === 'busy' && w.currentJob), timeoutMs, 50);
}

export const workerKills: Experiment = {
  name: 'worker kill -9',
  async run(lab, profile) {
    // The load runs until the last kill (stop() below); its cap only bounds a run that hangs. It
    // must not run out first: with a quick job loop the queue stays short, the load submits every
    // submitEveryMs, and six kills with their restarts outlast 48 submissions.
    const load = new Load(lab, profile.submitEveryMs, profile.kills * 30 + profile.jobs);
    const delays: number[] = [];
    for (let k = 0; k < profile.kills; k++) {
      const victim = await busyWorker(lab);
      const jobId = victim.currentJob as string;
      const killedAt = Date.now();
      process.kill(victim.pid, 'SIGKILL');
      // Recovery: the job runs again elsewhere (or is finished by then).
      const back = await waitUntil(`job ${jobId} to run again`, async () => {
        const s = await lab.jobState(jobId);
        return (s.processedOn ?? 0) > killedAt || s.state === 'completed' ? Date.now() : null;
      }, 60_000, 50);
      delays.push(back - killedAt);
      await lab.workersReady(lab.options.slots, 60_000);
    }
    await load.stop();
    const outcome = await settle(lab, load.ids, load.refused, profile.settleMs);
    return verdict(this.name.concat(` ×${profile.kills}`), outcome, seconds(Math.max(...delays)), "kill → the victim's job runs again (max)");
  },
};

export const apiKill: Experiment = {
  name: 'API kill -9 (start.ts: API + autoscaler)',
  async run(lab, profile) {
    const load = new Load(lab, profile.submitEveryMs, profile.jobs);
    await busyWorker(lab);
    const node = lab.service?.startPid();
    if (!node) throw new Error('start.ts not found');
    const orphans = (await lab.workers()).map((w) => w.pid);
    const killedAt = Date.now();
    process.kill(node, 'SIGKILL');
    await waitForExit([node], 10_000);
    await lab.startService();
    // Recovery: the API answers again and the new autoscaler has adopted the running workers.
    await waitUntil('the orphans to be adopted', async () => {
      const res = await fetch(`${lab.service?.url}/v1/workers`);
      const body = (await res.json()) as { autoscaler?: { slots: { worker: string | null }[] } };
      const workers = await lab.workers();
      const adopted = body.autoscaler?.slots.filter((s) => s.worker !== null).length ?? 0;
      return adopted >= Math.min(orphans.filter((p) => pidAlive(p)).length, workers.length) && res.ok;
    }, 60_000, 100);
    const recovered = Date.now();
    await load.stopAfter(profile.jobs);
    const outcome = await settle(lab, load.ids, load.refused, profile.settleMs);
    const survivors = orphans.filter((p) => pidAlive(p)).length;
    return verdict(this.name, outcome, seconds(recovered - killedAt), `kill → API back, ${survivors} orphaned worker(s) adopted`);
  },
};

function redisRestart(how: 'shutdown' | 'kill'): Experiment {
  return {
    name: how === 'shutdown' ? 'Redis SHUTDOWN + restart' : 'Redis kill -9 + restart',
    async run(lab, profile) {
      const load = new Load(lab, profile.submitEveryMs, profile.jobs);
      await busyWorker(lab);
      await sleep(500);
      await lab.redis.stop(how);
      await sleep(profile.redisDownMs);
      await lab.redis.start();
      const upAt = Date.now();
      const next = await nextCompletionAfter(lab, () => load.ids, upAt, 120_000);
      await load.stopAfter(profile.jobs);
      const outcome = await settle(lab, load.ids, load.refused, profile.settleMs);
      return verdict(`${this.name} (down ${seconds(profile.redisDownMs)} s)`, outcome, seconds(next - upAt), 'Redis accepts connections (then loads its AOF) → next job completes');
    },
  };
}

export const redisShutdown = redisRestart('shutdown');
export const redisKill = redisRestart('kill');

export const s3Down: Experiment = {
  name: 'S3 down',
  async run(lab, profile) {
    const load = new Load(lab, profile.submitEveryMs, profile.jobs);
    await busyWorker(lab);
    await lab.s3.stop();
    await sleep(profile.s3DownMs);
    // Workers paused: the queue kept its jobs and their attempts.
    const paused = (await lab.workers()).filter((w) => (w as { paused?: string | null }).paused).length;
    await lab.s3.start();
    const upAt = Date.now();
    const next = await nextCompletionAfter(lab, () => load.ids, upAt, 120_000);
    await load.stopAfter(profile.jobs);
    const outcome = await settle(lab, load.ids, load.refused, profile.settleMs);
    return verdict(`${this.name} ${seconds(profile.s3DownMs)} s`, outcome, seconds(next - upAt), `S3 up → next job completes (${paused} worker(s) paused)`);
  },
};

export const leaderKill: Experiment = {
  name: 'leader kill -9 (standby takes over)',
  async run(lab, profile) {
    await lab.startStandby();
    const leader = await waitUntil('a leader', () => lab.leader(), 10_000);
    await sleep(1000);
    const load = new Load(lab, profile.submitEveryMs, profile.jobs);
    await busyWorker(lab);
    const node = lab.service?.startPid();
    if (!node || leader === 'standby') throw new Error('the standby leads already, or start.ts was not found');
    const killedAt = Date.now();
    process.kill(node, 'SIGKILL');
    await waitUntil('the standby to lead', async () => (await lab.leader()) === 'standby', 30_000, 50);
    const tookOver = Date.now();
    // The API went with the leader (one process): bring it back; its autoscaler now stands by.
    await waitForExit([node], 10_000);
    await lab.startService();
    await load.stopAfter(profile.jobs);
    const outcome = await settle(lab, load.ids, load.refused, profile.settleMs);
    await lab.stopStandby();
    await lab.workersReady(lab.options.slots, 120_000);
    return verdict(this.name, outcome, seconds(tookOver - killedAt), 'kill → standby leads (and adopts the workers)');
  },
};

function signalStop(target: 'npm' | 'group'): Experiment {
  return {
    name: target === 'npm' ? 'SIGTERM to npm start' : 'SIGINT to its process group (Ctrl-C)',
    async run(lab, profile) {
      // A backlog, and every worker mid-job when the signal comes.
      const load = new Load(lab, 50, Math.ceil(profile.jobs / 2), profile.jobs);
      await load.stopAfter(Math.ceil(profile.jobs / 2));
      await waitUntil('every worker busy', async () => (await lab.workers()).filter((w) => w.state === 'busy').length >= lab.options.slots, 60_000, 50);
      const inFlight = (await lab.workers()).flatMap((w) => (w.currentJob ? [w.currentJob] : []));
      const pids = await lab.processes();
      const service = lab.service;
      if (!service) throw new Error('no service');
      const signaledAt = Date.now();
      if (target === 'npm') process.kill(service.pid, 'SIGTERM');
      else process.kill(-service.pgid, 'SIGINT');
      await waitForExit(pids, 120_000);
      const exitedAt = Date.now();
      const extra: string[] = [];
      for (const id of inFlight) {
        const s = await lab.jobState(id);
        if (s.state !== 'completed') extra.push(`job ${id} was running at the signal and is ${s.state} after the stop`);
      }
      // The rest waits in the queue for the next start.
      await lab.startService();
      const outcome = await settle(lab, load.ids, load.refused, profile.settleMs);
      await lab.workersReady(lab.options.slots, 120_000);
      return verdict(this.name, outcome, seconds(exitedAt - signaledAt), `signal → every process exited (${inFlight.length} running job(s) finished first)`, extra);
    },
  };
}

export const sigtermNpm = signalStop('npm');
export const sigintGroup = signalStop('group');

export const brokenModel: Experiment = {
  name: 'broken model, then fixed',
  async run(lab, profile) {
    await lab.stopService();
    const broken = path.join(lab.dir, 'models', 'broken-sd');
    fs.cpSync(lab.modelDir, broken, { recursive: true });
    // UNet weights cut short: the API reads the export's configs and graph inputs (not the
    // weights) and starts; the workers' ONNX Runtime cannot load it.
    const weights = path.join(broken, 'unet', 'model.onnx_data');
    const whole = fs.readFileSync(weights);
    fs.truncateSync(weights, Math.floor(whole.length / 2));
    await lab.newPrefix();
    const startedAt = Date.now();
    await lab.startService({ MODEL_DIR: broken, MODEL_NAME: 'broken-sd' });
    const ids: string[] = [];
    let refused = 0;
    const extra: string[] = [];
    // Until a worker has tried, jobs are accepted (and fail fast); once it is known, refused with 503.
    const known = await waitUntil('the model to be reported unavailable', async () => {
      const r = await lab.submit();
      if ('id' in r) ids.push(r.id);
      else if (r.code === 'model_unavailable') refused += 1;
      const models = (await (await fetch(`${lab.service?.url}/v1/models`)).json()) as { models: { state: string }[] };
      return models.models[0]?.state === 'unavailable' ? Date.now() : null;
    }, 60_000, 300);
    for (let i = 0; i < 3; i++) {
      const r = await lab.submit();
      if ('id' in r) ids.push(r.id);
      else if (r.code === 'model_unavailable') refused += 1;
      else extra.push(`a job for the broken model got ${r.refused} ${r.code}, not 503 model_unavailable`);
    }
    const ready = await fetch(`${lab.service?.url}/readyz`);
    if (ready.status !== 503) extra.push(`/readyz answered ${ready.status} for a model that cannot load`);
    // Fixed: the slot's next try loads it, without a restart.
    fs.writeFileSync(weights, whole);
    const fixedAt = Date.now();
    await waitUntil('the model to be served', async () => {
      const models = (await (await fetch(`${lab.service?.url}/v1/models`)).json()) as { models: { state: string }[] };
      return models.models[0]?.state === 'available';
    }, 120_000, 200);
    const after: string[] = [];
    for (let i = 0; i < Math.min(4, profile.jobs); i++) {
      const r = await lab.submit();
      if ('id' in r) after.push(r.id);
      else extra.push(`after the fix a job got ${r.refused} ${r.code}`);
    }
    const firstSuccess = await nextCompletionAfter(lab, () => after, fixedAt, 120_000);
    const outcome = await settle(lab, [...ids, ...after], refused, profile.settleMs, 'model_unavailable');
    if (outcome.succeeded < after.length) extra.push('jobs after the fix did not all succeed');
    await lab.stopService();
    return verdict(this.name, outcome, seconds(firstSuccess - fixedAt), `model fixed → first job succeeds (reported unavailable ${seconds(known - startedAt)} s after start; ${refused} job(s) refused with 503)`, extra);
  },
};

/**
 * Two models on ONE slot, both with work: the slot changes hands between them (a worker drains
 * for the other model), and the draining worker is killed with -9 mid-job, again and again.
 * Every job of both models must still finish exactly once.
 */
export const twoModelsHandover: Experiment = {
  name: 'two models, one slot: kill -9 during hand-over',
  async run(lab, profile) {
    // Its own service: the one-model service the suite left running is stopped, not left behind.
    await lab.stopService();
    await lab.newPrefix();
    await lab.startService({ MODELS_JSON: lab.catalogue(), AUTOSCALER_CPU_SLOTS: '1', AUTOSCALER_INITIAL_WORKERS: '0', AUTOSCALER_SWAP_AFTER_S: '1' });
    const kills = Math.max(2, Math.floor(profile.kills / 2));
    // Alternate prompts: the tutorial's trigger word routes every other job to the fine-tuned model.
    const body = (i: number) => ({ ...lab.options.job, prompt: i % 2 === 0 ? 'photo of unqtkn dog having breakfast' : 'a lighthouse at dusk' });
    const load = new Load(lab, profile.submitEveryMs, kills * 4 + profile.jobs, 4, body);
    const delays: number[] = [];
    const extra: string[] = [];
    const killed = new Set<string>();
    for (let k = 0; k < kills; k++) {
      // A worker draining for the other model while it still runs a job: the hand-over in progress.
      // Each job is hit once: a job that kills three workers fails by design (worker_lost).
      const victim = await waitUntil(
        'a worker draining with a job (a hand-over)',
        async () => (await lab.workers()).find((w) => w.state === 'draining' && w.currentJob && !killed.has(w.currentJob)),
        90_000,
        20,
      ).catch(() => null);
      if (!victim) {
        extra.push('no hand-over seen within 90 s');
        break;
      }
      const jobId = victim.currentJob as string;
      killed.add(jobId);
      const killedAt = Date.now();
      process.kill(victim.pid, 'SIGKILL');
      const back = await waitUntil(`job ${jobId} to run again`, async () => {
        const s = await lab.jobState(jobId);
        return (s.processedOn ?? 0) > killedAt || s.state === 'completed' ? Date.now() : null;
      }, 90_000, 50).catch(() => null);
      if (back === null) extra.push(`job ${jobId} did not run again after its worker was killed mid-hand-over`);
      else delays.push(back - killedAt);
    }
    await load.stopAfter(profile.jobs);
    const outcome = await settle(lab, load.ids, load.refused, profile.settleMs);
    const models = new Set((await Promise.all(load.ids.map((id) => lab.jobState(id)))).filter((s) => s.state === 'completed').map((s) => s.model));
    if (!models.has('tiny-sd') || !models.has('tiny-sd-unqtkn')) extra.push(`jobs of both models should succeed (did: ${[...models].join(', ')})`);
    await lab.stopService();
    return verdict(`${this.name} ×${delays.length}`, outcome, delays.length > 0 ? seconds(Math.max(...delays)) : null, "kill of the draining worker → its job runs again (max)", extra);
  },
};

/** In the order they run; the service is restarted where an experiment needs it. */
export const EXPERIMENTS: Experiment[] = [workerKills, apiKill, redisShutdown, redisKill, s3Down, leaderKill, sigtermNpm, sigintGroup, brokenModel, twoModelsHandover];
