import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ApiError, JobClient, UnreachableError, type JobView } from './job-client.js';

/**
 * `npm run generate -- "prompt" --n 4 --size 512 --out DIR`: submits N jobs at once, shows each
 * one's progress, saves the PNGs in a new timestamped folder under DIR. Exit status: 0 all
 * succeeded, 1 a job failed or was canceled, 2 bad arguments, 3 the server was unreachable or
 * refused the request.
 */

const USAGE = `Usage: npm run generate -- "<prompt>" [options]

Options:
  --n N              jobs to submit at once (default 1); job i uses seed + i when --seed is given
  --size PX          width and height (default: the model's size)
  --width PX, --height PX
  --steps N          denoising steps (default: the server's DEFAULT_STEPS)
  --guidance G       guidance scale
  --seed S           seed of the first job
  --negative TEXT    negative prompt
  --scheduler NAME   e.g. euler_a, ddim, dpmpp_2m
  --model NAME       a served model (GET /v1/models), or auto (default): routed by the prompt's trigger words
  --out DIR          where to save (default ./outputs); each run writes DIR/<timestamp>/
  --url URL          the API (default $SDJOBS_URL or http://127.0.0.1:8000)
  --key KEY          API key (default $SDJOBS_API_KEY)
  --timeout S        give up after this many seconds (default 600)
  -h, --help`;

const EXIT = { ok: 0, jobFailed: 1, usage: 2, server: 3 } as const;

class UsageError extends Error {}

interface Options {
  prompt: string;
  n: number;
  request: Record<string, unknown>;
  seed: number | undefined;
  out: string;
  url: string;
  key: string | undefined;
  timeoutS: number;
}

function parseOptions(argv: string[]): Options | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      n: { type: 'string' },
      size: { type: 'string' },
      width: { type: 'string' },
      height: { type: 'string' },
      steps: { type: 'string' },
      guidance: { type: 'string' },
      seed: { type: 'string' },
      negative: { type: 'string' },
      scheduler: { type: 'string' },
      model: { type: 'string' },
      out: { type: 'string' },
      url: { type: 'string' },
      key: { type: 'string' },
      timeout: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const prompt = positionals.join(' ').trim();
  if (!prompt) throw new UsageError('a prompt is required');
  const number = (name: string, raw: string | undefined, integer = true): number | undefined => {
    if (raw === undefined) return undefined;
    const value = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < 0) {
      throw new UsageError(`--${name} must be a ${integer ? 'whole ' : ''}number ≥ 0, got ${JSON.stringify(raw)}`);
    }
    return value;
  };
  const n = number('n', values.n) ?? 1;
  if (n < 1 || n > 64) throw new UsageError('--n must be between 1 and 64');
  if (values.size !== undefined && (values.width !== undefined || values.height !== undefined)) {
    throw new UsageError('give --size or --width/--height, not both');
  }
  const size = number('size', values.size);
  const request: Record<string, unknown> = { prompt };
  const set = (key: string, value: unknown) => {
    if (value !== undefined) request[key] = value;
  };
  set('width', size ?? number('width', values.width));
  set('height', size ?? number('height', values.height));
  set('num_inference_steps', number('steps', values.steps));
  set('guidance_scale', number('guidance', values.guidance, false));
  set('negative_prompt', values.negative);
  set('scheduler', values.scheduler);
  if (values.model !== undefined && values.model.trim() === '') throw new UsageError('--model must name a model (or auto)');
  set('model', values.model);
  return {
    prompt,
    n,
    request,
    seed: number('seed', values.seed),
    out: values.out ?? 'outputs',
    url: values.url ?? process.env.SDJOBS_URL ?? 'http://127.0.0.1:8000',
    key: values.key ?? process.env.SDJOBS_API_KEY,
    timeoutS: number('timeout', values.timeout, false) ?? 600,
  };
}

/** One line per job; redrawn in place on a terminal, printed on each change otherwise. */
class ProgressBoard {
  private readonly lines: string[];
  private drawn = false;

  constructor(
    count: number,
    private readonly tty: boolean,
    private readonly write: (text: string) => void,
  ) {
    this.lines = Array.from({ length: count }, (_, i) => `${label(i, count)} submitting…`);
  }

  update(index: number, job: JobView): void {
    const line = `${label(index, this.lines.length)} ${describe(job)}`;
    if (line === this.lines[index]) return;
    this.lines[index] = line;
    if (!this.tty) {
      this.write(`${line}\n`);
      return;
    }
    if (this.drawn) this.write(`\x1b[${this.lines.length}A`);
    this.write(this.lines.map((l) => `\x1b[2K${l}\n`).join(''));
    this.drawn = true;
  }
}

const label = (index: number, count: number) => `[${String(index + 1).padStart(String(count).length)}/${count}]`;

function describe(job: JobView): string {
  const id = job.id.slice(0, 8);
  switch (job.status) {
    case 'queued':
      return `${id} queued${job.queue_position === null ? '' : ` (position ${job.queue_position})`}`;
    case 'running': {
      const { step = 0, total = job.input.num_inference_steps } = job.progress ?? {};
      const width = 20;
      const filled = Math.round((step / Math.max(1, total)) * width);
      return `${id} running [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${step}/${total}`;
    }
    case 'succeeded':
      return `${id} done (seed ${job.outputs?.seed ?? job.input.seed})${job.model ? ` on model ${job.model}${job.routed_by ? ` (${job.routed_by})` : ''}` : ''}`;
    default:
      return `${id} ${job.status}${job.error ? `: ${job.error.code}: ${job.error.message}` : ''}`;
  }
}

/** `2026-11-25T13-45-07` (local time), sortable and safe in file names. */
function timestamp(date = new Date()): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}-${pad(date.getMinutes())}-${pad(date.getSeconds())}`;
}

async function run(argv: string[], io = { out: process.stdout, err: process.stderr }): Promise<number> {
  let options: Options | 'help';
  try {
    options = parseOptions(argv);
  } catch (err) {
    io.err.write(`error: ${err instanceof Error ? err.message : String(err)}\n\n${USAGE}\n`);
    return EXIT.usage;
  }
  if (options === 'help') {
    io.out.write(`${USAGE}\n`);
    return EXIT.ok;
  }
  const opts = options;
  const client = new JobClient({ baseUrl: opts.url, apiKey: opts.key });
  const signal = AbortSignal.timeout(opts.timeoutS * 1000);

  // All jobs go in at once, so the workers can take them in parallel.
  const requests = Array.from({ length: opts.n }, (_, i) => ({ ...opts.request, ...(opts.seed === undefined ? {} : { seed: opts.seed + i }) }));
  const submitted = await Promise.allSettled(requests.map((request) => client.submit(request)));
  const refused = submitted.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (refused) {
    const err = refused.reason as unknown;
    if (err instanceof UnreachableError) io.err.write(`error: ${err.message}\n`);
    else if (err instanceof ApiError) io.err.write(`error: the server refused the job (${err.status} ${err.code}): ${err.message}\n`);
    else io.err.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    const accepted = submitted.filter((r) => r.status === 'fulfilled').length;
    if (accepted > 0) io.err.write(`(${accepted} of ${opts.n} jobs were submitted before that and will still run)\n`);
    return EXIT.server;
  }
  const jobs = submitted.map((r) => (r as PromiseFulfilledResult<JobView>).value);

  const folder = path.resolve(opts.out, timestamp());
  await fs.mkdir(folder, { recursive: true });
  io.out.write(`${opts.n} job${opts.n === 1 ? '' : 's'} submitted to ${opts.url}; saving to ${folder}\n`);

  const board = new ProgressBoard(jobs.length, Boolean((io.out as NodeJS.WriteStream).isTTY), (text) => io.out.write(text));
  const saved: string[] = [];
  const problems: string[] = [];
  let unreachable: UnreachableError | undefined;
  await Promise.all(
    jobs.map(async (job, index) => {
      try {
        const final = await client.follow(job, (view) => board.update(index, view), signal);
        if (final.status !== 'succeeded' || !final.outputs) {
          problems.push(`job ${final.id} ${final.status}${final.error ? `: ${final.error.code}: ${final.error.message}` : ''}`);
          return;
        }
        for (const [i, image] of final.outputs.images.entries()) {
          const name = `${String(index + 1).padStart(2, '0')}${final.outputs.images.length > 1 ? `-${i}` : ''}-seed${image.seed}.png`;
          const file = path.join(folder, name);
          await fs.writeFile(file, await client.download(image.url));
          saved.push(file);
        }
      } catch (err) {
        if (err instanceof UnreachableError) unreachable = err;
        const reason = (err as Error)?.name === 'TimeoutError' ? `gave up after ${opts.timeoutS} s` : err instanceof Error ? err.message : String(err);
        problems.push(`job ${job.id}: ${reason}`);
      }
    }),
  );
  await fs.writeFile(
    path.join(folder, 'jobs.json'),
    `${JSON.stringify({ prompt: opts.prompt, request: opts.request, url: opts.url, jobs: jobs.map((j) => j.id), files: saved.map((f) => path.basename(f)).sort() }, null, 2)}\n`,
  );

  io.out.write(`saved ${saved.length} image${saved.length === 1 ? '' : 's'} in ${folder}\n`);
  if (problems.length > 0) {
    for (const problem of problems) io.err.write(`error: ${problem}\n`);
    return unreachable ? EXIT.server : EXIT.jobFailed;
  }
  return EXIT.ok;
}

process.exitCode = await run(process.argv.slice(2));
