import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { DEFAULT_PROMPT_MODIFIERS, PromptModifiersSchema, type PromptModifiers } from './prompt-variations.js';
import { parseAllowList, type AllowList } from './webhooks/address-policy.js';
import { parseSchedule } from './webhooks/schedule.js';
import { secretBytes } from './webhooks/signing.js';
import type { S3StoreOptions } from './storage/s3-store.js';
import { BUILTIN_BASE_SEED, builtinCatalogue, CatalogueError, defaultModel, parseCatalogueText, readCatalogueFile, singleModelCatalogue, type ModelEntry } from './model-catalogue.js';

/**
 * The one configuration schema of every process. `loadConfig` turns environment variables into a
 * typed, frozen object and fails at boot naming each bad variable; `.env.example` lists them all.
 */

const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'expected true or false (or 1/0, yes/no)' })
    .default(fallback ? 'true' : 'false')
    .transform((v) => v === 'true' || v === '1' || v === 'yes');

/** "from 1 to 1024", or "1 or more" when there is no upper bound: every numeric error states its range. */
const range = (min: number, max: number) => (max >= Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`);

/** A whole number within [min, max]; the same message for every way it can be wrong. */
const wholeNumber = (min: number, max: number) => {
  const message = `expected a whole number ${range(min, max)}`;
  return z.coerce.number({ message }).int(message).min(min, message).max(max, message);
};

const int = (fallback: number, min: number, max = Number.MAX_SAFE_INTEGER) => wholeNumber(min, max).default(fallback);

/** An enumeration whose error lists the accepted values. */
const oneOf = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, { message: `expected one of ${values.join(', ')}` });

const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v === '' ? undefined : v));

const decimalNumber = (min: number, max: number, what = 'a number') => {
  const message = `expected ${what} ${range(min, max)}`;
  return z.coerce.number({ message }).min(min, message).max(max, message);
};

const decimal = (fallback: number, min: number, max: number, what = 'a number') => decimalNumber(min, max, what).default(fallback);

/** Seconds (decimals allowed, so tests can use short delays). */
const seconds = (fallback: number, min = 0, max = 86_400) => decimal(fallback, min, max, 'a number of seconds');

/** A whole number that may be left empty (then a default computed elsewhere applies). */
const emptyAsUnset = (v: unknown) => (v === '' ? undefined : v);
const optionalInt = (min: number, max: number) => z.preprocess(emptyAsUnset, wholeNumber(min, max).optional());

export const EnvSchema = z.object({
  HOST: z.string().default('127.0.0.1'),
  PORT: int(8000, 0, 65535),
  PUBLIC_URL: optionalString.pipe(z.url({ protocol: /^https?$/, message: 'expected an absolute http(s) URL' }).optional()),
  /** Express's `trust proxy`: which proxies' X-Forwarded-Host/-Proto/-For to believe; empty = none. */
  TRUST_PROXY: optionalString,
  LOG_LEVEL: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Bull Board at /admin/queues behind HTTP basic auth; off (404) unless both are set. */
  ADMIN_USER: optionalString,
  ADMIN_PASSWORD: optionalString,
  /** GET /metrics for Prometheus. */
  METRICS_ENABLED: bool(true),
  /** Count job outcomes and durations from the queue's events; with several API replicas, on in one. */
  METRICS_JOB_EVENTS: bool(true),

  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'expected redis://host:port or rediss://…').default('redis://127.0.0.1:6379'),
  QUEUE_PREFIX: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'expected letters, digits, _ . -').default('sdjobs'),

  STORAGE_DRIVER: oneOf(['local', 's3']).default('local'),
  STORAGE_LOCAL_DIR: z.string().default('data/images'),
  S3_ENDPOINT: optionalString.pipe(z.url({ message: 'expected an absolute URL' }).optional()),
  S3_REGION: z.string().default('us-east-1'),
  S3_BUCKET: optionalString,
  S3_ACCESS_KEY_ID: optionalString,
  S3_SECRET_ACCESS_KEY: optionalString,
  S3_FORCE_PATH_STYLE: bool(true),
  S3_CREATE_BUCKET: bool(false),
  /** Serve images by redirecting to a presigned URL instead of streaming them through the API. */
  S3_PRESIGN_URLS: bool(false),
  S3_PRESIGN_TTL_S: int(3600, 1, 7 * 24 * 3600),
  /** How long a worker retries the upload of a finished job's images before that attempt fails (the images wait in memory). */
  STORAGE_UPLOAD_RETRY_S: seconds(600, 0, 7 * 24 * 3600),
  /** The longest wait between two storage retries (uploads, and the probe of a worker paused on a storage outage). */
  STORAGE_RETRY_MAX_DELAY_S: seconds(30, 0.05, 3600),

  /** JSON catalogue of the served models (shared/model-catalogue.ts); overrides MODEL_DIR. */
  MODELS_FILE: optionalString,
  /** The same catalogue inline (container platforms: a ConfigMap value); MODELS_FILE wins when both are set. */
  MODELS_JSON: optionalString,
  /** One model, without a catalogue. Neither set: the two tiny models (base, and `unqtkn` fine-tuned). */
  MODEL_DIR: optionalString,
  MODEL_NAME: optionalString,
  /** `npm start` writes the random-weight tiny model(s) when missing (MODEL_DIR, or the two built-in ones). */
  MODEL_AUTO_TINY: bool(true),
  /** The catalogue model a worker holds (set by the autoscaler); empty: the default model. */
  WORKER_MODEL: optionalString,
  WORKER_PROVIDER: oneOf(['cpu', 'cuda', 'webgpu']).default('cpu'),
  WORKER_DEVICE_ID: int(0, 0, 63),
  WORKER_CPU_THREADS: int(0, 0, 256),
  WORKER_CPU_SPIN: bool(false),
  WORKER_ALLOW_CPU_FALLBACK: bool(false),
  /** WebGPU provider: the layout of convolution-like operators (NHWC: ONNX Runtime's default, a little faster on lavapipe). */
  WORKER_WEBGPU_LAYOUT: oneOf(['NHWC', 'NCHW']).default('NHWC'),
  WORKER_ID: optionalString,
  /** The slot the autoscaler gave this worker (`gpu0`, `cpu1`); shown in GET /v1/workers. */
  WORKER_SLOT: optionalString,
  /** Set by the autoscaler that starts a worker: orphaned and adopted by no other autoscaler, the worker finishes its job and exits. */
  WORKER_PARENT_PID: optionalInt(1, 4_194_304),
  WORKER_HEARTBEAT_MS: int(2000, 100, 60_000),
  /** A running job's lock; a worker that dies loses it and the job goes back to the queue. */
  WORKER_LOCK_DURATION_MS: int(30_000, 1000, 3_600_000),
  /** How often workers look for jobs whose worker died (BullMQ's stalled-job check). */
  WORKER_STALLED_INTERVAL_MS: int(5_000, 200, 3_600_000),
  /** Encode and upload a job's images while the next job generates (one generation at a time either way). */
  WORKER_OVERLAP: bool(true),
  /** With the overlap: how many jobs may be encoded and uploaded at once while the next one generates. */
  WORKER_FINISHING_JOBS: int(2, 1, 8),
  /** With the overlap: the next job is taken at most this many ms before the generation in progress is expected to end; 0: never before it ends. */
  WORKER_EARLY_TAKE_MS: int(20, 0, 1000),

  AUTOSCALER_MIN_WORKERS: int(0, 0, 1024),
  AUTOSCALER_INITIAL_WORKERS: optionalInt(0, 1024),
  AUTOSCALER_MAX_WORKERS: optionalInt(1, 1024),
  AUTOSCALER_TARGET_JOBS_PER_WORKER: decimal(1, 0.01, 1000),
  AUTOSCALER_UPSCALE_DELAY_S: seconds(5),
  AUTOSCALER_DOWNSCALE_DELAY_S: seconds(60),
  AUTOSCALER_DOWNSCALE_TO_ZERO_DELAY_S: z.preprocess(emptyAsUnset, decimalNumber(0, 86_400, 'a number of seconds').optional()),
  AUTOSCALER_INTERVAL_MS: int(1000, 20, 60_000),
  AUTOSCALER_GPUS: optionalString.pipe(z.string().regex(/^(none|\d+(,\d+)*)$/, 'expected none or GPU indices like 0,1').optional()),
  /** Empty: one per served model (the two built-in tiny models: 2), at most one per CPU core. */
  AUTOSCALER_CPU_SLOTS: optionalInt(1, 256),
  /** What serves a GPU slot: auto = cuda for NVIDIA GPUs (nvidia-smi), webgpu for other GPUs (DRM render nodes). */
  AUTOSCALER_GPU_PROVIDER: oneOf(['auto', 'cuda', 'webgpu']).default('auto'),
  AUTOSCALER_STOP_GRACE_S: seconds(120),
  AUTOSCALER_READY_TIMEOUT_S: seconds(600, 0.1),
  AUTOSCALER_RESTART_BACKOFF_MS: int(1000, 0, 600_000),
  AUTOSCALER_CRASH_LOOP_RESTARTS: int(5, 1, 1000),
  AUTOSCALER_CRASH_LOOP_WINDOW_S: seconds(300, 0.1),
  /** A slot whose worker could not load the model tries again after a wait doubling from the restart backoff up to this. */
  AUTOSCALER_MODEL_RETRY_MAX_S: seconds(300, 0.1),
  AUTOSCALER_LEADER_TTL_MS: int(5000, 200, 600_000),
  /** With more models wanting work than slots: how long a model's oldest job waits before a worker of another model drains to hand over its slot. */
  AUTOSCALER_SWAP_AFTER_S: seconds(5, 0, 86_400),
  AUTOSCALER_ID: optionalString,

  DEFAULT_STEPS: int(20, 1, 500),
  DEFAULT_GUIDANCE: decimal(7.5, 0, 50),
  MAX_STEPS: int(150, 1, 1000),
  /** At most 16: the pipeline's limit per job. */
  MAX_NUM_IMAGES: int(4, 1, 16),
  MIN_IMAGE_SIZE: int(64, 8, 8192),
  MAX_IMAGE_SIZE: int(1024, 8, 8192),
  MAX_PROMPT_CHARS: int(2000, 1, 100_000),
  MAX_BODY_BYTES: int(64 * 1024, 1024, 10 * 1024 * 1024),
  SYNC_TIMEOUT_S: int(60, 1, 3600),
  JOB_ATTEMPTS: int(3, 1, 20),
  JOB_BACKOFF_MS: int(2000, 0, 3_600_000),
  JOB_KEEP_AGE_S: int(24 * 3600, 1, 365 * 24 * 3600),
  JOB_KEEP_COUNT: int(10_000, 1, 10_000_000),
  /** How often finished jobs past JOB_KEEP_AGE_S / JOB_KEEP_COUNT are removed with their images (one sweeper at a time across processes). */
  JOB_RETENTION_INTERVAL_S: seconds(30, 0.1, 3600),
  /** Longest one run may take (seconds); past it the job fails with `timeout` and frees the GPU. 0 = no limit. */
  JOB_MAX_RUN_S: int(600, 0, 7 * 24 * 3600),
  /** A synchronous request whose client goes away cancels its job. */
  SYNC_CANCEL_ON_DISCONNECT: bool(true),

  /** Tries per image while a filter screens it out; after the last one the image is returned black, marked blocked. */
  FILTER_MAX_TRIES: int(3, 1, 10),
  /** The grayscale filter's limit on the 99th-percentile chroma (0…255). */
  FILTER_GRAYSCALE_MAX_CHROMA: decimal(12, 0, 255),
  /** Comma-separated paths of modules whose default export is an image filter (or a list, or a factory). */
  FILTER_MODULES: optionalString,
  /** JSON file of prompt-variation modifiers by category; empty: the built-in set. */
  PROMPT_MODIFIERS_FILE: optionalString,

  /** Comma-separated API keys; empty = the API runs open (and says so at startup). */
  API_KEYS: optionalString,
  IDEMPOTENCY_TTL_S: int(24 * 3600, 60, 30 * 24 * 3600),
  /** Requests per minute one API key may make to /v1 and /dreambooth (counted in Redis, shared by replicas); 0 = no limit. */
  RATE_LIMIT_REQUESTS_PER_MIN: int(1200, 0, 1_000_000),
  /** Job submissions per minute one API key may make (POST /v1/jobs, GET /v1/generate, /dreambooth); 0 = no limit. */
  RATE_LIMIT_SUBMISSIONS_PER_MIN: int(120, 0, 1_000_000),
  /** Queued plus running jobs one API key may have at once; 0 = no limit. */
  MAX_QUEUED_JOBS_PER_KEY: int(100, 0, 1_000_000),

  /** `whsec_…` signing secrets, space- or comma-separated; deliveries carry one signature per secret (rotation). */
  WEBHOOK_SECRETS: optionalString,
  /** Host names, addresses or CIDRs webhooks may reach although they are internal (loopback, private, …). */
  WEBHOOK_ALLOW_HOSTS: optionalString,
  /** Delay before each attempt, the first included (Svix's schedule by default). */
  WEBHOOK_RETRY_SCHEDULE: z.string().default('0,5s,5m,30m,2h,5h,10h,10h'),
  WEBHOOK_TIMEOUT_MS: int(15_000, 100, 300_000),
  WEBHOOK_CONCURRENCY: int(16, 1, 1000),
  /** How often the notifier looks for finished jobs whose events were never enqueued. */
  WEBHOOK_RECONCILE_INTERVAL_S: seconds(30, 0.05, 3600),
});

export type Env = z.infer<typeof EnvSchema>;

/** MODEL_NAME without MODEL_DIR: the base tiny model's folder, as before catalogues. */
const DEFAULT_MODEL_DIR = 'models/tiny-sd';

export interface Config {
  host: string;
  port: number;
  publicUrl: string | undefined;
  /** Express's `trust proxy` value; false: no proxy is trusted (links are relative without PUBLIC_URL). */
  trustProxy: TrustProxy;
  logLevel: Env['LOG_LEVEL'];
  /** null: the admin dashboard is off. */
  admin: { user: string; password: string } | null;
  metrics: { enabled: boolean; jobEvents: boolean };
  redisUrl: string;
  queuePrefix: string;
  storage:
    | { driver: 'local'; dir: string }
    | ({ driver: 's3'; presignUrls: boolean } & S3StoreOptions);
  /** Storage outages: how long an upload is retried, and the longest wait between two tries. */
  storageRetry: { uploadRetryS: number; maxDelayS: number };
  /** The model this process serves: a worker's (WORKER_MODEL), else the catalogue's default. */
  model: { dir: string; name: string; autoTiny: boolean; queue: string };
  /** Every served model, the default marked (shared/model-catalogue.ts). */
  models: ModelEntry[];
  worker: {
    provider: 'cpu' | 'cuda' | 'webgpu';
    deviceId: number;
    cpuThreads: number;
    /** ONNX Runtime's CPU threads spin between runs (off by default: see .env.example). */
    cpuSpin: boolean;
    allowCpuFallback: boolean;
    webgpuLayout: 'NHWC' | 'NCHW';
    id: string | undefined;
    slot: string | undefined;
    /** The autoscaler process that started this worker, when one did. */
    parentPid: number | undefined;
    heartbeatMs: number;
    lockDurationMs: number;
    stalledIntervalMs: number;
    /** Encode and upload a job while the next one generates (WORKER_OVERLAP). */
    overlap: boolean;
    /** Jobs encoded and uploaded at once while the next one generates (WORKER_FINISHING_JOBS). */
    finishingJobs: number;
    /** Take the next job this many ms at most before the generation in progress is expected to end (WORKER_EARLY_TAKE_MS). */
    earlyTakeMs: number;
  };
  autoscaler: AutoscalerConfig;
  limits: {
    defaultSteps: number;
    defaultGuidance: number;
    maxSteps: number;
    maxNumImages: number;
    minImageSize: number;
    maxImageSize: number;
    maxPromptChars: number;
    maxBodyBytes: number;
  };
  syncTimeoutS: number;
  jobs: { attempts: number; backoffMs: number; keepAgeS: number; keepCount: number; retentionIntervalS: number; maxRunS: number };
  syncCancelOnDisconnect: boolean;
  /** Image filters: tries per image, the grayscale threshold, operators' filter modules. */
  filters: { maxTries: number; grayscaleMaxChroma: number; modules: string[] };
  /** Modifier categories prompt variations draw from. */
  promptModifiers: PromptModifiers;
  /** SHA-256 hashes (hex) of the API keys; the keys themselves are not kept. Empty: open. */
  auth: { apiKeyHashes: string[]; idempotencyTtlS: number };
  /** Per-key limits (with API_KEYS); 0 = none. */
  tenants: { requestsPerMin: number; submissionsPerMin: number; maxQueuedJobs: number };
  webhooks: {
    secrets: string[];
    allow: AllowList;
    retryScheduleMs: number[];
    timeoutMs: number;
    concurrency: number;
    reconcileIntervalS: number;
  };
}

/** Bounds and delays follow Ray Serve's autoscaling_config (min/initial/max replicas, delays). */
export interface AutoscalerConfig {
  minWorkers: number;
  /** Workers started when the autoscaler starts, before the load has a say (Ray's initial_replicas). */
  initialWorkers: number;
  /** Undefined: one per slot. */
  maxWorkers: number | undefined;
  targetJobsPerWorker: number;
  upscaleDelayS: number;
  downscaleDelayS: number;
  /** The wait before the last worker goes (1 → 0); defaults to downscaleDelayS. */
  downscaleToZeroDelayS: number;
  intervalMs: number;
  /** GPU indices to use, 'none' for CPU slots only, or 'detect' (nvidia-smi, then DRM render nodes for webgpu). */
  gpus: number[] | 'none' | 'detect';
  cpuSlots: number;
  /** What serves GPU slots: cuda, webgpu, or auto (cuda for NVIDIA GPUs, webgpu for the others). */
  gpuProvider: 'auto' | 'cuda' | 'webgpu';
  stopGraceS: number;
  readyTimeoutS: number;
  restartBackoffMs: number;
  crashLoopRestarts: number;
  crashLoopWindowS: number;
  modelRetryMaxS: number;
  leaderTtlMs: number;
  /** A model without a worker takes a busy slot of another model once its oldest job has waited this long. */
  swapAfterS: number;
  id: string | undefined;
}

/** false, true (any peer: only behind a proxy that overwrites the headers), a hop count, or addresses/CIDRs/names. */
export type TrustProxy = false | true | number | string[];

const TRUST_PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** TRUST_PROXY as Express takes it; throws with what was expected. */
export function parseTrustProxy(text: string | undefined): TrustProxy {
  const value = (text ?? '').trim();
  if (value === '' || value === 'false') return false;
  if (value === 'true') return true;
  if (/^\d{1,2}$/.test(value)) return Number(value);
  const entries = value.split(',').map((e) => e.trim()).filter((e) => e !== '');
  for (const entry of entries) {
    const [address = '', bits] = entry.split('/');
    const family = isIP(address);
    const prefixOk = bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128));
    if (!TRUST_PROXY_NAMES.has(entry) && !(family !== 0 && prefixOk)) {
      throw new Error(`expected false, true, a hop count, or addresses/CIDRs/loopback/linklocal/uniquelocal, comma-separated (got ${JSON.stringify(entry)})`);
    }
  }
  return entries;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Parses the environment once. Throws ConfigError naming every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => `${String(i.path[0] ?? '?')}: ${i.message} (got ${JSON.stringify(env[String(i.path[0])] ?? null)})`),
    );
  }
  const e = parsed.data;
  const problems: string[] = [];
  if (e.STORAGE_DRIVER === 's3' && !e.S3_BUCKET) problems.push('S3_BUCKET: required when STORAGE_DRIVER=s3');
  if (e.MIN_IMAGE_SIZE > e.MAX_IMAGE_SIZE) problems.push('MIN_IMAGE_SIZE: must not exceed MAX_IMAGE_SIZE');
  if (e.DEFAULT_STEPS > e.MAX_STEPS) problems.push('DEFAULT_STEPS: must not exceed MAX_STEPS');
  if ((e.S3_ACCESS_KEY_ID === undefined) !== (e.S3_SECRET_ACCESS_KEY === undefined)) {
    problems.push('S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY: set both or neither');
  }
  if ((e.ADMIN_USER === undefined) !== (e.ADMIN_PASSWORD === undefined)) {
    problems.push('ADMIN_USER / ADMIN_PASSWORD: set both (to turn the dashboard on) or neither');
  }
  if (e.AUTOSCALER_MAX_WORKERS !== undefined && e.AUTOSCALER_MIN_WORKERS > e.AUTOSCALER_MAX_WORKERS) {
    problems.push('AUTOSCALER_MIN_WORKERS: must not exceed AUTOSCALER_MAX_WORKERS');
  }
  const initialWorkers = e.AUTOSCALER_INITIAL_WORKERS ?? e.AUTOSCALER_MIN_WORKERS;
  if (
    e.AUTOSCALER_INITIAL_WORKERS !== undefined &&
    (initialWorkers < e.AUTOSCALER_MIN_WORKERS || (e.AUTOSCALER_MAX_WORKERS !== undefined && initialWorkers > e.AUTOSCALER_MAX_WORKERS))
  ) {
    problems.push('AUTOSCALER_INITIAL_WORKERS: must lie between AUTOSCALER_MIN_WORKERS and AUTOSCALER_MAX_WORKERS');
  }
  const apiKeys = (e.API_KEYS ?? '').split(',').map((k) => k.trim()).filter((k) => k !== '');
  if (apiKeys.some((k) => k.length < 16 || /\s/.test(k))) problems.push('API_KEYS: each key must be at least 16 characters, without spaces');
  const webhookSecrets = (e.WEBHOOK_SECRETS ?? '').split(/[\s,]+/).filter((k) => k !== '');
  for (const secret of webhookSecrets) {
    try {
      const bytes = secretBytes(secret).length;
      if (bytes < 24 || bytes > 64) problems.push(`WEBHOOK_SECRETS: a secret must hold 24 to 64 bytes (got ${bytes})`);
    } catch (err) {
      problems.push(`WEBHOOK_SECRETS: ${(err as Error).message} (e.g. whsec_ + 32 random bytes in base64)`);
    }
  }
  let allow: AllowList = { hosts: [], cidrs: [] };
  try {
    allow = parseAllowList(e.WEBHOOK_ALLOW_HOSTS);
  } catch (err) {
    problems.push(`WEBHOOK_ALLOW_HOSTS: ${(err as Error).message}`);
  }
  let trustProxy: TrustProxy = false;
  try {
    trustProxy = parseTrustProxy(e.TRUST_PROXY);
  } catch (err) {
    problems.push(`TRUST_PROXY: ${(err as Error).message}`);
  }
  let retryScheduleMs: number[] = [];
  try {
    retryScheduleMs = parseSchedule(e.WEBHOOK_RETRY_SCHEDULE);
    if (retryScheduleMs.length > 50 || retryScheduleMs.some((ms) => ms > 7 * 24 * 3_600_000)) {
      problems.push('WEBHOOK_RETRY_SCHEDULE: at most 50 attempts, each at most 7 days after the previous one');
    }
  } catch (err) {
    problems.push(`WEBHOOK_RETRY_SCHEDULE: ${(err as Error).message}`);
  }
  let promptModifiers: PromptModifiers = DEFAULT_PROMPT_MODIFIERS;
  if (e.PROMPT_MODIFIERS_FILE !== undefined) {
    try {
      const parsed = PromptModifiersSchema.safeParse(JSON.parse(readFileSync(e.PROMPT_MODIFIERS_FILE, 'utf8')));
      if (parsed.success) promptModifiers = parsed.data;
      else problems.push(`PROMPT_MODIFIERS_FILE: ${parsed.error.issues.map((i) => `${i.path.join('.') || 'file'}: ${i.message}`).join('; ')} (expected {"category": ["modifier", …], …})`);
    } catch (err) {
      problems.push(`PROMPT_MODIFIERS_FILE: cannot read a JSON object of modifier lists from ${e.PROMPT_MODIFIERS_FILE}: ${(err as Error).message}`);
    }
  }
  const catalogueDefaults = { minWorkers: e.AUTOSCALER_MIN_WORKERS, initialWorkers, maxWorkers: e.AUTOSCALER_MAX_WORKERS };
  let models: ModelEntry[] = [];
  try {
    if (e.MODELS_FILE !== undefined) models = readCatalogueFile(e.MODELS_FILE, catalogueDefaults);
    else if (e.MODELS_JSON !== undefined) models = parseCatalogueText(e.MODELS_JSON, 'MODELS_JSON', catalogueDefaults);
    else if (e.MODEL_DIR !== undefined || e.MODEL_NAME !== undefined) models = singleModelCatalogue(e.MODEL_DIR ?? DEFAULT_MODEL_DIR, e.MODEL_NAME, catalogueDefaults, e.MODEL_AUTO_TINY ? BUILTIN_BASE_SEED : undefined);
    else models = builtinCatalogue(catalogueDefaults);
  } catch (err) {
    if (!(err instanceof CatalogueError)) throw err;
    const variable = e.MODELS_FILE === undefined && e.MODELS_JSON !== undefined ? 'MODELS_JSON' : 'MODELS_FILE';
    for (const problem of err.problems) problems.push(`${variable}: ${problem}`);
  }
  let served: ModelEntry | undefined = models.length > 0 ? defaultModel(models) : undefined;
  if (e.WORKER_MODEL !== undefined && models.length > 0) {
    served = models.find((m) => m.name === e.WORKER_MODEL);
    if (!served) problems.push(`WORKER_MODEL: no model ${JSON.stringify(e.WORKER_MODEL)} in the catalogue (it has ${models.map((m) => m.name).join(', ')})`);
  }
  if (problems.length > 0 || !served) throw new ConfigError(problems);

  const config: Config = {
    host: e.HOST,
    port: e.PORT,
    publicUrl: e.PUBLIC_URL?.replace(/\/+$/, ''),
    trustProxy,
    logLevel: e.LOG_LEVEL,
    admin: e.ADMIN_USER !== undefined && e.ADMIN_PASSWORD !== undefined ? { user: e.ADMIN_USER, password: e.ADMIN_PASSWORD } : null,
    metrics: { enabled: e.METRICS_ENABLED, jobEvents: e.METRICS_JOB_EVENTS },
    redisUrl: e.REDIS_URL,
    queuePrefix: e.QUEUE_PREFIX,
    storage:
      e.STORAGE_DRIVER === 'local'
        ? { driver: 'local', dir: path.resolve(e.STORAGE_LOCAL_DIR) }
        : {
            driver: 's3',
            endpoint: e.S3_ENDPOINT,
            region: e.S3_REGION,
            bucket: e.S3_BUCKET as string,
            accessKeyId: e.S3_ACCESS_KEY_ID,
            secretAccessKey: e.S3_SECRET_ACCESS_KEY,
            forcePathStyle: e.S3_FORCE_PATH_STYLE,
            createBucket: e.S3_CREATE_BUCKET,
            presignUrls: e.S3_PRESIGN_URLS,
            presignTtlS: e.S3_PRESIGN_TTL_S,
          },
    storageRetry: { uploadRetryS: e.STORAGE_UPLOAD_RETRY_S, maxDelayS: e.STORAGE_RETRY_MAX_DELAY_S },
    model: { dir: served.dir, name: served.name, autoTiny: e.MODEL_AUTO_TINY, queue: served.queue },
    models,
    worker: {
      provider: e.WORKER_PROVIDER,
      deviceId: e.WORKER_DEVICE_ID,
      cpuThreads: e.WORKER_CPU_THREADS,
      cpuSpin: e.WORKER_CPU_SPIN,
      allowCpuFallback: e.WORKER_ALLOW_CPU_FALLBACK,
      webgpuLayout: e.WORKER_WEBGPU_LAYOUT,
      id: e.WORKER_ID,
      slot: e.WORKER_SLOT,
      parentPid: e.WORKER_PARENT_PID,
      heartbeatMs: e.WORKER_HEARTBEAT_MS,
      lockDurationMs: e.WORKER_LOCK_DURATION_MS,
      stalledIntervalMs: e.WORKER_STALLED_INTERVAL_MS,
      overlap: e.WORKER_OVERLAP,
      finishingJobs: e.WORKER_FINISHING_JOBS,
      earlyTakeMs: e.WORKER_EARLY_TAKE_MS,
    },
    autoscaler: {
      minWorkers: e.AUTOSCALER_MIN_WORKERS,
      initialWorkers,
      maxWorkers: e.AUTOSCALER_MAX_WORKERS,
      targetJobsPerWorker: e.AUTOSCALER_TARGET_JOBS_PER_WORKER,
      upscaleDelayS: e.AUTOSCALER_UPSCALE_DELAY_S,
      downscaleDelayS: e.AUTOSCALER_DOWNSCALE_DELAY_S,
      downscaleToZeroDelayS: e.AUTOSCALER_DOWNSCALE_TO_ZERO_DELAY_S ?? e.AUTOSCALER_DOWNSCALE_DELAY_S,
      intervalMs: e.AUTOSCALER_INTERVAL_MS,
      gpus:
        e.AUTOSCALER_GPUS === undefined ? 'detect' : e.AUTOSCALER_GPUS === 'none' ? 'none' : [...new Set(e.AUTOSCALER_GPUS.split(',').map(Number))],
      cpuSlots: e.AUTOSCALER_CPU_SLOTS ?? Math.max(1, Math.min(models.length, availableParallelism())),
      gpuProvider: e.AUTOSCALER_GPU_PROVIDER,
      stopGraceS: e.AUTOSCALER_STOP_GRACE_S,
      readyTimeoutS: e.AUTOSCALER_READY_TIMEOUT_S,
      restartBackoffMs: e.AUTOSCALER_RESTART_BACKOFF_MS,
      crashLoopRestarts: e.AUTOSCALER_CRASH_LOOP_RESTARTS,
      crashLoopWindowS: e.AUTOSCALER_CRASH_LOOP_WINDOW_S,
      modelRetryMaxS: e.AUTOSCALER_MODEL_RETRY_MAX_S,
      leaderTtlMs: e.AUTOSCALER_LEADER_TTL_MS,
      swapAfterS: e.AUTOSCALER_SWAP_AFTER_S,
      id: e.AUTOSCALER_ID,
    },
    limits: {
      defaultSteps: e.DEFAULT_STEPS,
      defaultGuidance: e.DEFAULT_GUIDANCE,
      maxSteps: e.MAX_STEPS,
      maxNumImages: e.MAX_NUM_IMAGES,
      minImageSize: e.MIN_IMAGE_SIZE,
      maxImageSize: e.MAX_IMAGE_SIZE,
      maxPromptChars: e.MAX_PROMPT_CHARS,
      maxBodyBytes: e.MAX_BODY_BYTES,
    },
    syncTimeoutS: e.SYNC_TIMEOUT_S,
    jobs: {
      attempts: e.JOB_ATTEMPTS,
      backoffMs: e.JOB_BACKOFF_MS,
      keepAgeS: e.JOB_KEEP_AGE_S,
      keepCount: e.JOB_KEEP_COUNT,
      retentionIntervalS: e.JOB_RETENTION_INTERVAL_S,
      maxRunS: e.JOB_MAX_RUN_S,
    },
    syncCancelOnDisconnect: e.SYNC_CANCEL_ON_DISCONNECT,
    filters: {
      maxTries: e.FILTER_MAX_TRIES,
      grayscaleMaxChroma: e.FILTER_GRAYSCALE_MAX_CHROMA,
      modules: (e.FILTER_MODULES ?? '').split(',').map((m) => m.trim()).filter((m) => m !== ''),
    },
    promptModifiers,
    auth: {
      apiKeyHashes: [...new Set(apiKeys)].map((k) => createHash('sha256').update(k, 'utf8').digest('hex')),
      idempotencyTtlS: e.IDEMPOTENCY_TTL_S,
    },
    tenants: {
      requestsPerMin: e.RATE_LIMIT_REQUESTS_PER_MIN,
      submissionsPerMin: e.RATE_LIMIT_SUBMISSIONS_PER_MIN,
      maxQueuedJobs: e.MAX_QUEUED_JOBS_PER_KEY,
    },
    webhooks: {
      secrets: webhookSecrets,
      allow,
      retryScheduleMs,
      timeoutMs: e.WEBHOOK_TIMEOUT_MS,
      concurrency: e.WEBHOOK_CONCURRENCY,
      reconcileIntervalS: e.WEBHOOK_RECONCILE_INTERVAL_S,
    },
  };
  return deepFreeze(config);
}

/** Variable names and defaults, for `.env.example` and the README's table. */
export const CONFIG_VARIABLES = Object.keys(EnvSchema.shape);

/**
 * For process entry points: the parsed config, or the problems on stderr and exit code 78
 * (EX_CONFIG), so a supervisor can tell a bad setting from a crash.
 */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env): Readonly<Config> {
  try {
    return loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
}
