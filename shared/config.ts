import path from 'node:path';
import { z } from 'zod';

/**
 * The one configuration schema of every process. `loadConfig` turns environment variables into a
 * typed, frozen object and fails at boot naming each bad variable; `.env.example` lists them all.
 */

const bool = (fallback: boolean) =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'expected true or false' })
    .default(fallback ? 'true' : 'false')
    .transform((v) => v === 'true' || v === '1' || v === 'yes');

const int = (fallback: number, min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce
    .number({ message: 'expected a number' })
    .int('expected a whole number')
    .min(min)
    .max(max)
    .default(fallback);

const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v === '' ? undefined : v));

const EnvSchema = z.object({
  HOST: z.string().default('127.0.0.1'),
  PORT: int(8000, 0, 65535),
  PUBLIC_URL: optionalString.pipe(z.url({ message: 'expected an absolute URL' }).optional()),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),

  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'expected redis://host:port or rediss://…').default('redis://127.0.0.1:6379'),
  QUEUE_PREFIX: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'expected letters, digits, _ . -').default('sdjobs'),

  STORAGE_DRIVER: z.enum(['local', 's3']).default('local'),
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

  MODEL_DIR: z.string().default('models/tiny-sd'),
  MODEL_NAME: optionalString,
  /** `npm start` writes the random-weight tiny model into MODEL_DIR when it is missing. */
  MODEL_AUTO_TINY: bool(true),
  WORKER_PROVIDER: z.enum(['cpu', 'cuda']).default('cpu'),
  WORKER_DEVICE_ID: int(0, 0, 63),
  WORKER_CPU_THREADS: int(0, 0, 256),
  WORKER_ALLOW_CPU_FALLBACK: bool(false),
  WORKER_ID: optionalString,

  DEFAULT_STEPS: int(20, 1, 500),
  DEFAULT_GUIDANCE: z.coerce.number({ message: 'expected a number' }).min(0).max(50).default(7.5),
  MAX_STEPS: int(150, 1, 1000),
  MAX_NUM_IMAGES: int(4, 1, 64),
  MIN_IMAGE_SIZE: int(64, 8, 8192),
  MAX_IMAGE_SIZE: int(1024, 8, 8192),
  MAX_PROMPT_CHARS: int(2000, 1, 100_000),
  MAX_BODY_BYTES: int(64 * 1024, 1024, 10 * 1024 * 1024),
  SYNC_TIMEOUT_S: int(60, 1, 3600),
  JOB_ATTEMPTS: int(3, 1, 20),
  JOB_BACKOFF_MS: int(2000, 0, 3_600_000),
  JOB_KEEP_AGE_S: int(24 * 3600, 1, 365 * 24 * 3600),
  JOB_KEEP_COUNT: int(10_000, 1, 10_000_000),
});

export type Env = z.infer<typeof EnvSchema>;

export interface Config {
  host: string;
  port: number;
  publicUrl: string | undefined;
  logLevel: Env['LOG_LEVEL'];
  redisUrl: string;
  queuePrefix: string;
  storage:
    | { driver: 'local'; dir: string }
    | {
        driver: 's3';
        endpoint: string | undefined;
        region: string;
        bucket: string;
        accessKeyId: string | undefined;
        secretAccessKey: string | undefined;
        forcePathStyle: boolean;
        createBucket: boolean;
        presignUrls: boolean;
        presignTtlS: number;
      };
  model: { dir: string; name: string; autoTiny: boolean };
  worker: {
    provider: 'cpu' | 'cuda';
    deviceId: number;
    cpuThreads: number;
    allowCpuFallback: boolean;
    id: string | undefined;
  };
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
  jobs: { attempts: number; backoffMs: number; keepAgeS: number; keepCount: number };
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
  if (problems.length > 0) throw new ConfigError(problems);

  const config: Config = {
    host: e.HOST,
    port: e.PORT,
    publicUrl: e.PUBLIC_URL?.replace(/\/+$/, ''),
    logLevel: e.LOG_LEVEL,
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
    model: {
      dir: path.resolve(e.MODEL_DIR),
      name: e.MODEL_NAME ?? path.basename(path.resolve(e.MODEL_DIR)),
      autoTiny: e.MODEL_AUTO_TINY,
    },
    worker: {
      provider: e.WORKER_PROVIDER,
      deviceId: e.WORKER_DEVICE_ID,
      cpuThreads: e.WORKER_CPU_THREADS,
      allowCpuFallback: e.WORKER_ALLOW_CPU_FALLBACK,
      id: e.WORKER_ID,
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
    },
  };
  return deepFreeze(config);
}

/** Variable names and defaults, for `.env.example` and the README's table. */
export const CONFIG_VARIABLES = Object.keys(EnvSchema.shape);
