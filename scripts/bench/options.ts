import { parseArgs } from 'node:util';

/** Groups of phases --only can select: webhooks = 1, 4 and the lone requests; db = 2; http = 3; pdf = 5 and its baselines. */
export const PHASE_GROUPS = ['webhooks', 'db', 'http', 'pdf'] as const;
export type PhaseGroup = (typeof PHASE_GROUPS)[number];

export interface BenchOptions {
  /** The phase groups to run (all unless --only narrows them). */
  only: ReadonlySet<PhaseGroup>;
  connections: number;
  /** Seconds of measured load per HTTP or database phase. */
  durationS: number;
  /** Seconds of unmeasured load before each HTTP phase (JIT, connection pools). */
  warmupS: number;
  /** Sequential requests for "a lone request's latency". */
  loneRequests: number;
  pdfs: number;
  pdfBytes: number;
  downloadConcurrency: number;
  storage: 'database' | 'filesystem';
  logLevel: string;
  dbLimit: 'auto' | 'pgbench' | 'node';
  quick: boolean;
  /** Write V8 CPU profiles of the service processes here. */
  cpuProfDir: string | undefined;
}

export const USAGE = `npm run bench -- [options]

  --only PHASES             comma list of the phases to run (default all): webhooks (1, 4 and the lone
                            requests), db (2), http (3), pdf (5 and its baselines)
  --connections N           concurrent connections for every load phase (default 32)
  --duration S              seconds per measured phase (default 10)
  --warmup S                unmeasured seconds before each HTTP phase (default 2)
  --lone N                  sequential requests for the lone-request latency (default 500)
  --pdfs N                  PDFs through the pipeline (default 1000)
  --pdf-bytes B             size of each PDF in bytes (default 1048576)
  --download-concurrency N  DOWNLOAD_CONCURRENCY of the service and the plain fetch (default 4)
  --storage KIND            PDF_STORAGE: database (default) or filesystem
  --log-level L             LOG_LEVEL of the service (default info, as deployed)
  --db-limit HOW            auto (pgbench when installed, default), pgbench or node
  --cpu-prof DIR            write V8 CPU profiles of the service processes into DIR (skews timings a little)
  --quick                   smoke run in seconds: --duration 2 --warmup 0.5 --lone 100 --pdfs 100
                            (also BENCH_QUICK=1); explicit flags still win

  BENCH_DATABASE_URL        use this PostgreSQL server (a bench_<timestamp> database is created
                            and dropped in it) instead of an embedded one`;

function positive(name: string, value: string | undefined, fallback: number, integer = true): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
    throw new Error(`--${name} must be a positive ${integer ? 'whole ' : ''}number, not "${value}"`);
  }
  return n;
}

function oneOf<T extends string>(name: string, value: string | undefined, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(value)) throw new Error(`--${name} must be one of ${allowed.join(', ')}, not "${value}"`);
  return value as T;
}

function phaseGroups(value: string | undefined): ReadonlySet<PhaseGroup> {
  if (value === undefined) return new Set(PHASE_GROUPS);
  const names = value.split(',').map((name) => name.trim()).filter((name) => name !== '');
  const unknown = names.filter((name) => !(PHASE_GROUPS as readonly string[]).includes(name));
  if (names.length === 0 || unknown.length > 0) {
    const problem = names.length === 0 ? 'it names none' : `${unknown.map((name) => `"${name}"`).join(', ')} is not one of them`;
    throw new Error(`--only takes a comma list of ${PHASE_GROUPS.join(', ')}; ${problem}`);
  }
  return new Set(names as PhaseGroup[]);
}

/** Parses the command line; `--help` yields undefined. Throws one readable error for a bad flag. */
export function parseOptions(argv: string[], env: NodeJS.ProcessEnv): BenchOptions | undefined {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      only: { type: 'string' },
      connections: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      lone: { type: 'string' },
      pdfs: { type: 'string' },
      'pdf-bytes': { type: 'string' },
      'download-concurrency': { type: 'string' },
      storage: { type: 'string' },
      'log-level': { type: 'string' },
      'db-limit': { type: 'string' },
      quick: { type: 'boolean' },
      'cpu-prof': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return undefined;
  const quick = values.quick === true || env.BENCH_QUICK === '1' || env.BENCH_QUICK === 'true';
  const pdfBytes = positive('pdf-bytes', values['pdf-bytes'], 1024 * 1024);
  if (pdfBytes < 64) throw new Error('--pdf-bytes must be at least 64');
  return {
    only: phaseGroups(values.only),
    connections: positive('connections', values.connections, 32),
    durationS: positive('duration', values.duration, quick ? 2 : 10, false),
    warmupS: positive('warmup', values.warmup, quick ? 0.5 : 2, false),
    loneRequests: positive('lone', values.lone, quick ? 100 : 500),
    pdfs: positive('pdfs', values.pdfs, quick ? 100 : 1000),
    pdfBytes,
    downloadConcurrency: positive('download-concurrency', values['download-concurrency'], 4),
    storage: oneOf('storage', values.storage, ['database', 'filesystem'] as const, 'database'),
    logLevel: oneOf('log-level', values['log-level'], ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info'),
    dbLimit: oneOf('db-limit', values['db-limit'], ['auto', 'pgbench', 'node'] as const, 'auto'),
    quick,
    cpuProfDir: values['cpu-prof'],
  };
}
