import path from 'node:path';
import { z } from 'zod';
import { parseHostPatterns } from './downloads/url-policy.js';

export type Env = Record<string, string | undefined>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Plain decimal digits only: Number() would also read 0x1F90, 1e3, 1.0 and blanks around them. */
const integer = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number in plain decimal digits')
    .transform(Number)
    .pipe(z.number().min(min, `must be from ${min} to ${max}`).max(max, `must be from ${min} to ${max}`));

const boolean = z.enum(['true', 'false'], { error: 'must be true or false' }).transform((v) => v === 'true');

/** A comma-separated list; blanks around items are ignored, empty items dropped. */
const list = z.string().transform((v) =>
  v
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0),
);

// Secrets are trimmed (list items above, single values with .trim()): a Kubernetes Secret file
// ends in a newline, and a secret that kept it would fail every request with a silent 401.
const secretList = list.pipe(z.array(z.string().min(16, 'each secret must be at least 16 characters')).min(1));

/** base64 of exactly 32 bytes (an AES-256 key); comma-separated: the first encrypts, all decrypt. */
const keyList = list.pipe(
  z
    .array(
      z
        .string()
        .regex(/^[A-Za-z0-9+/_-]+={0,2}$/, 'each key must be base64')
        .transform((text) => Buffer.from(text, 'base64'))
        .refine((key) => key.length === 32, 'each key must be base64 of exactly 32 bytes (openssl rand -base64 32)'),
    )
    .min(1),
);

const basicAuth = z
  .string()
  .trim()
  .superRefine((value, ctx) => {
    const colon = value.indexOf(':');
    if (colon < 1 || colon === value.length - 1) ctx.addIssue({ code: 'custom', message: 'must be user:password' });
    else if (value.length - colon - 1 < 16) ctx.addIssue({ code: 'custom', message: 'the password must be at least 16 characters, like every secret' });
  });

/** Physitrack's file hosts; development adds localhost, where `npm run send -- physitrack` serves its sample PDF. */
const PRODUCTION_FILE_URL_HOSTS = 'physitrack.com,*.physitrack.com,physitrackuploads.s3.amazonaws.com';

const envSchema = z.object({
  NODE_ENV: z.enum(['production', 'development', 'test']).default('development'),
  DATABASE_URL: z
    .string()
    .trim()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional(),
  DATA_DIR: z.string().default('./data'),
  HOST: z.string().min(1).default('0.0.0.0'),
  PORT: integer(0, 65535).default(3000),
  LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
  BODY_LIMIT_BYTES: integer(1024, 100 * 1024 * 1024).default(1024 * 1024),
  ACK_DEADLINE_MS: integer(100, 2000).default(1500),
  REQUEST_TIMEOUT_MS: integer(1000, 120_000).default(10_000),
  MAX_CONNECTIONS: integer(16, 1_000_000).default(512),
  SHUTDOWN_TIMEOUT_MS: integer(1000, 30_000).default(25_000),
  SHUTDOWN_DRAIN_MS: integer(0, 25_000).optional(),
  DATABASE_POOL_SIZE: integer(1, 100).default(10),
  WRITE_BATCH_MAX_ROWS: integer(1, 5000).default(500),
  METRICS_ENABLED: boolean.default(true),
  METRICS_PORT: integer(1, 65535).optional(),
  API_PORT: integer(0, 65535).optional(),
  API_HOST: z.string().min(1).optional(),
  RETENTION_DAYS: integer(1, 36_500).optional(),
  TLS_CERT_FILE: z.string().optional(),
  TLS_KEY_FILE: z.string().optional(),

  PATIRO_SIGNING_SECRET: secretList.optional(),
  PATIRO_TIMESTAMP_TOLERANCE_SECONDS: integer(0, 7 * 24 * 3600).default(300),
  PATIRO_TOKEN: z.string().trim().min(16, 'must be at least 16 characters').optional(),
  PATIRO_BASIC_AUTH: basicAuth.optional(),

  PHYSITRACK_API_KEY: secretList.optional(),
  PHYSITRACK_TOKENS: list.pipe(z.array(z.string()).min(1, 'must list at least one token')).optional(),
  PHYSITRACK_FILE_URL_HOSTS: z
    .string()
    .default(PRODUCTION_FILE_URL_HOSTS)
    .transform((csv, ctx) => {
      try {
        const patterns = parseHostPatterns(csv);
        if (patterns.length === 0) ctx.addIssue({ code: 'custom', message: 'must list at least one host' });
        return patterns;
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    }),
  DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: boolean.optional(),
  DOWNLOAD_ALLOW_HTTP_LOCALHOST: boolean.optional(),
  DOWNLOAD_CONCURRENCY: integer(1, 64).default(4),
  DOWNLOAD_TIMEOUT_MS: integer(1000, 10 * 60_000).default(30_000),
  DOWNLOAD_MAX_BYTES: integer(1024, 1024 * 1024 * 1024).default(50 * 1024 * 1024),
  DOWNLOAD_RETRY_BASE_MS: integer(10, 30 * 60_000).default(5000),
  DOWNLOAD_DEADLINE_HOURS: integer(1, 24 * 30).default(24),
  DOWNLOAD_LEASE_SECONDS: integer(1, 3600).default(60),
  PDF_STORAGE: z.enum(['database', 'filesystem']).default('database'),
  PDF_DIR: z.string().optional(),

  SOURCES_SECRET_KEY: keyList.optional(),

  SPOOL_DIR: z.string().trim().optional(),
  SPOOL_MAX_BYTES: integer(1024 * 1024, 1024 * 1024 * 1024 * 1024).default(1024 * 1024 * 1024),
});

export type Config = ReturnType<typeof toConfig>;

function toConfig(env: z.infer<typeof envSchema>) {
  const dataDir = path.resolve(env.DATA_DIR);
  return {
    nodeEnv: env.NODE_ENV,
    isProduction: env.NODE_ENV === 'production',
    databaseUrl: env.DATABASE_URL,
    dataDir,
    host: env.HOST,
    port: env.PORT,
    logLevel: env.LOG_LEVEL,
    bodyLimitBytes: env.BODY_LIMIT_BYTES,
    ackDeadlineMs: env.ACK_DEADLINE_MS,
    /** The most a request may take to arrive, headers and body; a connection silent this long is closed. */
    requestTimeoutMs: env.REQUEST_TIMEOUT_MS,
    /** Connections the webhook port keeps open at once; more are refused (descriptors stay for PostgreSQL and files). */
    maxConnections: env.MAX_CONNECTIONS,
    shutdownTimeoutMs: env.SHUTDOWN_TIMEOUT_MS,
    shutdownDrainMs: drainMsOf(env),
    databasePoolSize: env.DATABASE_POOL_SIZE,
    writeBatchMaxRows: env.WRITE_BATCH_MAX_ROWS,
    metrics: { enabled: env.METRICS_ENABLED, port: env.METRICS_PORT },
    /** The internal HTTP API (change feed, PDFs) on a port of its own; undefined: off. */
    api: env.API_PORT === undefined ? undefined : { host: env.API_HOST ?? env.HOST, port: env.API_PORT },
    retentionDays: env.RETENTION_DAYS,
    tls: env.TLS_CERT_FILE && env.TLS_KEY_FILE ? { certFile: path.resolve(env.TLS_CERT_FILE), keyFile: path.resolve(env.TLS_KEY_FILE) } : undefined,
    patiro: {
      signingSecrets: env.PATIRO_SIGNING_SECRET ?? [],
      timestampToleranceSeconds: env.PATIRO_TIMESTAMP_TOLERANCE_SECONDS,
      token: env.PATIRO_TOKEN,
      basicAuth: env.PATIRO_BASIC_AUTH,
    },
    physitrack: {
      apiKeys: env.PHYSITRACK_API_KEY ?? [],
      tokens: env.PHYSITRACK_TOKENS,
      fileUrlHosts: env.PHYSITRACK_FILE_URL_HOSTS,
    },
    download: {
      // Development defaults let the quick start's sample PDF, served on localhost over http, be
      // fetched; production's stay as strict as ever.
      allowPrivateAddresses: env.DOWNLOAD_ALLOW_PRIVATE_ADDRESSES ?? env.NODE_ENV === 'development',
      allowHttpLocalhost: env.DOWNLOAD_ALLOW_HTTP_LOCALHOST ?? env.NODE_ENV === 'development',
      concurrency: env.DOWNLOAD_CONCURRENCY,
      timeoutMs: env.DOWNLOAD_TIMEOUT_MS,
      maxBytes: env.DOWNLOAD_MAX_BYTES,
      retryBaseMs: env.DOWNLOAD_RETRY_BASE_MS,
      deadlineHours: env.DOWNLOAD_DEADLINE_HOURS,
      leaseSeconds: env.DOWNLOAD_LEASE_SECONDS,
    },
    storage: {
      kind: env.PDF_STORAGE,
      pdfDir: path.resolve(env.PDF_DIR ?? path.join(dataDir, 'pdf')),
    },
    sources: {
      /** AES-256-GCM keys for the credentials in the `sources` table; the first encrypts. */
      secretKeys: env.SOURCES_SECRET_KEY ?? [],
    },
    /** Where verified deliveries go while PostgreSQL is away; undefined: off (they get 503 then). */
    spool: spoolDirOf(env, dataDir) === undefined ? undefined : { dir: spoolDirOf(env, dataDir)!, maxBytes: env.SPOOL_MAX_BYTES },
  };
}

/**
 * The spool belongs on the replica's own durable volume, which only the operator can name: in
 * production (and in tests) it is on when SPOOL_DIR is set. In development it defaults to a folder
 * next to the embedded database.
 */
function spoolDirOf(env: z.infer<typeof envSchema>, dataDir: string): string | undefined {
  if (env.SPOOL_DIR) return path.resolve(env.SPOOL_DIR);
  return env.NODE_ENV === 'development' ? path.join(dataDir, 'spool') : undefined;
}

/** Load balancers keep sending to a terminating pod for a few seconds; outside production nothing does. */
function drainMsOf(env: z.infer<typeof envSchema>): number {
  return env.SHUTDOWN_DRAIN_MS ?? (env.NODE_ENV === 'production' ? 5000 : 0);
}

/** What a shutdown needs after the drain: closing connections, finishing downloads, closing the database. */
export const MIN_SHUTDOWN_AFTER_DRAIN_MS = 5000;

export class ConfigError extends Error {
  readonly code = 'WH_ERR_CONFIG';
  constructor(readonly problems: string[]) {
    super(`Invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Treats an empty variable as unset, so `FOO=` in a .env file means "use the default". */
function withoutEmpty(env: Env): Env {
  return Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value.trim() !== ''));
}

/** In development (the default NODE_ENV), the sample PDF's host (localhost) joins Physitrack's, unless the hosts are set. */
function withDevelopmentHosts(env: Env): Env {
  if ((env.NODE_ENV ?? 'development') !== 'development' || env.PHYSITRACK_FILE_URL_HOSTS !== undefined) return env;
  return { ...env, PHYSITRACK_FILE_URL_HOSTS: `${PRODUCTION_FILE_URL_HOSTS},localhost,127.0.0.1` };
}

/** Parses every variable at once so one error lists every problem. Never reads process.env itself. */
export function loadConfig(env: Env): Config {
  const parsed = envSchema.safeParse(withDevelopmentHosts(withoutEmpty(env)));
  const problems = parsed.success ? [] : parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
  if (parsed.success) problems.push(...crossChecks(parsed.data));
  if (!parsed.success || problems.length > 0) throw new ConfigError(problems);
  return toConfig(parsed.data);
}

function crossChecks(env: z.infer<typeof envSchema>): string[] {
  const problems: string[] = [];
  if (env.NODE_ENV === 'production' && !env.DATABASE_URL) {
    problems.push('DATABASE_URL: is required when NODE_ENV=production (the embedded database is for development only)');
  }
  if (Boolean(env.TLS_CERT_FILE) !== Boolean(env.TLS_KEY_FILE)) {
    problems.push('TLS_CERT_FILE, TLS_KEY_FILE: set both to serve HTTPS, or neither');
  }
  if (drainMsOf(env) + MIN_SHUTDOWN_AFTER_DRAIN_MS > env.SHUTDOWN_TIMEOUT_MS) {
    problems.push(
      `SHUTDOWN_DRAIN_MS, SHUTDOWN_TIMEOUT_MS: the drain (${drainMsOf(env)} ms) must leave at least ${MIN_SHUTDOWN_AFTER_DRAIN_MS} ms of the shutdown timeout (${env.SHUTDOWN_TIMEOUT_MS} ms) to finish requests and downloads`,
    );
  }
  if (env.METRICS_PORT === env.PORT) {
    problems.push(`METRICS_PORT, PORT: must differ (both are ${env.PORT}); METRICS_PORT gives the metrics a port of their own`);
  }
  if (env.API_PORT !== undefined && env.API_PORT !== 0 && (env.API_PORT === env.PORT || env.API_PORT === env.METRICS_PORT)) {
    problems.push(`API_PORT: must differ from PORT and METRICS_PORT (it is ${env.API_PORT}): the internal API is never served on the webhook or metrics port`);
  }
  if (env.API_HOST !== undefined && env.API_PORT === undefined) {
    problems.push('API_HOST: set API_PORT too, or unset API_HOST (the internal API is off without API_PORT)');
  }
  if (env.DOWNLOAD_LEASE_SECONDS * 1000 <= env.DOWNLOAD_TIMEOUT_MS) {
    // A lease shorter than a download would hand a row still being fetched to another worker.
    problems.push('DOWNLOAD_LEASE_SECONDS: must be longer than DOWNLOAD_TIMEOUT_MS (a download must finish within its lease)');
  }
  return problems;
}
