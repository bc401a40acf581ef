import { parseArgs } from 'node:util';
import { EXPERIMENTS, PROFILES, type ExperimentResult, type Profile } from './experiments.js';
import { Lab } from './lab.js';

/**
 * `npm run chaos [-- --profile short|full] [--only NAME] [--keep]`: the fault suite. It starts
 * its own AOF Redis and S3 server and the service (`npm start`: two CPU slots, the tiny model),
 * injects one fault per experiment under load, and prints per experiment what was submitted,
 * succeeded, failed, refused, lost and run twice, and how long recovery took. Exits 1 on any
 * loss, double run or unexpected failure. The short profile (CI) kills 4 workers and keeps S3
 * down 10 s; the full one kills 10, keeps S3 down 30 s and Redis 3 s, with three times the jobs.
 */

const JOB = { prompt: 'a lighthouse in a storm', img_size: 256, num_inference_steps: 150 };

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { profile: { type: 'string', default: process.env['CHAOS_PROFILE'] ?? 'short' }, only: { type: 'string' }, keep: { type: 'boolean', default: false } },
  });
  const profile = PROFILES[values.profile as Profile['name']];
  if (!profile) throw new Error(`--profile must be short or full (got ${values.profile})`);
  const experiments = EXPERIMENTS.filter((e) => !values.only || e.name.toLowerCase().includes(values.only.toLowerCase()));
  const lab = new Lab({ slots: 2, job: JOB, verbose: values.keep ?? false });
  const startedAt = Date.now();
  const results: ExperimentResult[] = [];
  const log = (line: string) => process.stdout.write(`[chaos +${Math.round((Date.now() - startedAt) / 1000)}s] ${line}\n`);
  let exitCode = 0;
  // Interrupted (Ctrl-C, a CI timeout): leave no Redis, S3 server or service behind.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`${signal}: tearing the lab down`);
      void lab.tearDown().finally(() => process.exit(130));
    });
  }
  try {
    log(`profile ${profile.name}: ${experiments.length} experiment(s); lab in ${lab.dir}`);
    await lab.setUp();
    await lab.newPrefix();
    await lab.startService();
    await lab.workersReady();
    for (const experiment of experiments) {
      if (!lab.service) {
        await lab.newPrefix();
        await lab.startService();
        await lab.workersReady();
      }
      log(`${experiment.name}…`);
      try {
        const result = await experiment.run(lab, profile);
        results.push(result);
        log(`${result.name}: ${result.problems.length === 0 ? 'ok' : result.problems.join('; ')}`);
      } catch (err) {
        results.push({
          name: experiment.name,
          outcome: { submitted: 0, succeeded: 0, failed: 0, expectedFailures: 0, refused: 0, lost: [], runTwice: [], restarted: 0, reused: 0 },
          recoveryS: null,
          recoveryOf: 'the experiment could not finish',
          problems: [`error: ${(err as Error).message}`],
        });
        log(`${experiment.name}: error: ${(err as Error).stack}`);
        // Start clean for the next one.
        await lab.stopService().catch(() => undefined);
        lab.service = null;
      }
    }
  } finally {
    await lab.tearDown();
  }
  printTable(results);
  const failed = results.filter((r) => r.problems.length > 0);
  process.stdout.write(`\n${results.length - failed.length}/${results.length} experiments passed in ${Math.round((Date.now() - startedAt) / 1000)} s (profile ${profile.name})\n`);
  for (const r of failed) process.stdout.write(`FAILED ${r.name}: ${r.problems.join('; ')}\n`);
  if (failed.length > 0 || results.length === 0) exitCode = 1;
  process.exit(exitCode);
}

/**
 * Columns: refused = submissions the service turned away (503, or the API was down): nothing was
 * queued for them, the client knows. lost = accepted and never finished. run twice = a job whose
 * run completed (images stored) more than once. restarted = jobs started again after their
 * worker died under them (expected under kills). reused = runs completed from an earlier run's
 * stored result, whose completion had not reached Redis.
 */
function printTable(results: ExperimentResult[]): void {
  const header = ['experiment', 'submitted', 'succeeded', 'failed', 'refused', 'lost', 'run twice', 'restarted', 'reused', 'recovery', 'recovery measures'];
  const rows = results.map((r) => [
    r.name,
    String(r.outcome.submitted),
    String(r.outcome.succeeded),
    r.outcome.expectedFailures > 0 ? `${r.outcome.failed} (${r.outcome.expectedFailures} expected)` : String(r.outcome.failed),
    String(r.outcome.refused),
    String(r.outcome.lost.length),
    String(r.outcome.runTwice.length),
    String(r.outcome.restarted),
    String(r.outcome.reused),
    r.recoveryS === null ? '-' : `${r.recoveryS} s`,
    r.recoveryOf,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  process.stdout.write(`\n${line(header)}\n${line(widths.map((w) => '-'.repeat(w)))}\n${rows.map(line).join('\n')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`chaos: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
