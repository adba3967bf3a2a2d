import { parseArgs } from 'node:util';
import type { DatabaseServer } from './database.js';
import type { LoadSettings } from './load.js';
import type { BenchTls, FileHost } from './phases.js';
import type { Cleanup, Secrets, StartService } from './processes.js';

/** What --only selects: webhooks = phases 1, 1b, 4 and the lone requests; db = 2 and 2b; spool = 6, 7 and 8; http = 3; pdf = 5 and its baselines;
 *  changes = 9 and 10. */
export const PHASE_GROUPS = ['webhooks', 'db', 'spool', 'http', 'pdf', 'changes'] as const;

export const USAGE = `npm run bench -- [options]

  --only PHASES             comma list of the phases to run (default all): webhooks (1, 1b, 4 and the lone requests),
                            db (2 and 2b, the database baselines), spool (6 PostgreSQL up, the spool off and on, in turns and at
                            once; 7 PostgreSQL away; 8 the replay), http (3), pdf (5 and its durable baselines), changes (9 the change
                            feed's cost on the ack path, change rows off and on in turns; 10 the feed read while loaded)
  --connections N           concurrent connections of every load phase and database baseline (default 32)
  --duration S              seconds per measured phase (default 10, each HTTP phase after a 2 s warm-up)
  --pdfs N                  1 MiB PDFs through the pipeline (default 1000)
  --download-concurrency N  DOWNLOAD_CONCURRENCY of the service and of the PDF baselines (default 4)
  --storage KIND            PDF_STORAGE: database (default) or filesystem
  --log-level L             LOG_LEVEL of the service (default info, as deployed)
  --db-limit HOW            how the database baselines run: auto (pgbench when installed, default), pgbench or node
  --spool-rounds N          rounds of phase 6 in turns, each both settings of each vendor (default 2), before the one at once
  --changes-rounds N        rounds of phase 9 in turns, each both settings of each vendor (default 2)
  --quick                   a smoke run in about 80 s: 2 s phases, 0.5 s warm-ups, 100 lone requests, 100 PDFs`;

const STRING_FLAGS = ['only', 'connections', 'duration', 'pdfs', 'download-concurrency', 'storage', 'log-level', 'db-limit', 'spool-rounds', 'changes-rounds'] as const;

/** Parses the command line; `--help` yields undefined. Throws one readable error for a bad flag. */
export function parseOptions(argv: string[]) {
  const strings = Object.fromEntries(STRING_FLAGS.map((name) => [name, { type: 'string' as const }]));
  const { values } = parseArgs({ args: argv, strict: true, options: { ...strings, quick: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) return undefined;
  const v = values as Partial<Record<(typeof STRING_FLAGS)[number], string>>;
  const positive = (name: 'connections' | 'duration' | 'pdfs' | 'download-concurrency' | 'spool-rounds' | 'changes-rounds', fallback: number, integer = true) => {
    const n = v[name] === undefined ? fallback : Number(v[name]);
    if (!(n > 0 && n < Infinity) || (integer && !Number.isInteger(n))) throw new Error(`--${name} must be a positive ${integer ? 'whole ' : ''}number, not "${v[name]}"`);
    return n;
  };
  /** The first of `allowed` is the default. */
  const oneOf = <T extends string>(name: 'only' | 'storage' | 'log-level' | 'db-limit', allowed: readonly T[], value = v[name]): T => {
    if (value !== undefined && !allowed.includes(value as T)) throw new Error(`--${name} takes ${allowed.join(', ')}, not "${value}"`);
    return (value ?? allowed[0]) as T;
  };
  const quick = values.quick === true;
  const only = (v.only ?? PHASE_GROUPS.join(',')).split(',').map((name) => oneOf('only', PHASE_GROUPS, name.trim()));
  return {
    only: new Set<string>(only),
    quick,
    connections: positive('connections', 32),
    durationS: positive('duration', quick ? 2 : 10, false),
    warmupS: quick ? 0.5 : 2,
    loneRequests: quick ? 100 : 500,
    pdfs: positive('pdfs', quick ? 100 : 1000),
    pdfBytes: 1024 * 1024,
    downloadConcurrency: positive('download-concurrency', 4),
    spoolRounds: positive('spool-rounds', 2),
    changesRounds: positive('changes-rounds', 2),
    storage: oneOf('storage', ['database', 'filesystem'] as const),
    logLevel: oneOf('log-level', ['info', 'fatal', 'error', 'warn', 'debug', 'trace', 'silent'] as const),
    dbLimit: oneOf('db-limit', ['auto', 'pgbench', 'node'] as const),
  };
}

export type BenchOptions = NonNullable<ReturnType<typeof parseOptions>>;

/** What every group of phases is given: set up once by scripts/bench.ts, torn down by `cleanup`; `stamp` names every database and run. */
export type BenchContext = {
  o: BenchOptions; load: LoadSettings; cleanup: Cleanup; tmpDir: string; stamp: string; secrets: Secrets; server: DatabaseServer; tls: BenchTls; fileHost: FileHost;
  startService: StartService; say(message: string): void;
};
