import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { migrate } from '../src/db/migrate.js';
import { runChangesPhases } from './bench/changes.js';
import { runBaseline, startDatabaseServer } from './bench/database.js';
import { parseOptions, PHASE_GROUPS, USAGE, type BenchContext, type BenchOptions } from './bench/options.js';
import { makeSelfSignedCert, runHttpPhase, runPdfPhases, runWebhookPhases, startFileHost } from './bench/phases.js';
import { compileService, createCleanup, serviceCommand, serviceStarter, type Cleanup } from './bench/processes.js';
import { formatReport, type Results } from './bench/report.js';
import { runSpoolPhases } from './bench/spool.js';

// npm run bench: the service against the limits a plain receiver faces. The service runs as deployed, compiled by tsc at the start of the
// run and started with plain node; this process generates the load, serves the PDFs and reads the database, all over 127.0.0.1.

const started = performance.now();
const say = (message: string) => process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(1).padStart(5)} s] ${message}\n`);

/** The temporary directory, the database server, the file host and the report's header: what the phases share. */
async function setUp(o: BenchOptions, cleanup: Cleanup, results: Results): Promise<BenchContext> {
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), 'webhook-bench-'));
  await chmod(tmpDir, 0o755); // as root, the embedded PostgreSQL runs as `postgres` and must reach its data
  cleanup.add('remove the temporary directory', () => rm(tmpDir, { recursive: true, force: true }));
  // Only the phases with a service need it compiled; the bare server and the baselines run under tsx.
  const runsService = o.only.has('webhooks') || o.only.has('spool') || o.only.has('pdf') || o.only.has('changes');
  if (runsService) {
    say('compiling the service: tsc -p tsconfig.build.json (into dist/)');
    await compileService(cleanup.signal);
  }
  say('starting an embedded PostgreSQL');
  const server = await startDatabaseServer(cleanup, tmpDir);
  const tls = await makeSelfSignedCert(tmpDir);
  const secrets = { patiro: randomBytes(24).toString('base64url'), physitrack: randomBytes(24).toString('base64url'), sourcesKey: randomBytes(32).toString('base64') };
  const phases = PHASE_GROUPS.filter((group) => o.only.has(group));
  results.header.push(
    `Webhook receiver benchmark, ${new Date().toISOString()}`,
    `  machine:  ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim() ?? '?'}), Node ${process.version}`,
    ...(phases.length < PHASE_GROUPS.length ? [`  phases:   ${phases.join(', ')} only (--only)`] : []),
    `  database: ${server.description}`,
    ...(server.postmaster === undefined ? ['  !!! the PostgreSQL server was not found in /proc: its CPU columns read 0'] : []),
    ...(runsService ? [`  service:  ${serviceCommand()} (compiled at the start of the run), NODE_ENV=production, LOG_LEVEL=${o.logLevel} (to a file), pool and ack deadline at their defaults`] : []),
    `  load:     autocannon, ${o.connections} connections, ${o.warmupS} s warm-up + ${o.durationS} s per phase${o.quick ? ' (quick mode)' : ''}`,
  );
  return {
    o, cleanup, tmpDir, secrets, server, tls, say, stamp: new Date().toISOString().replace(/\D/g, '').slice(0, 14),
    load: { connections: o.connections, durationS: o.durationS, warmupS: o.warmupS, signal: cleanup.signal, postmaster: server.postmaster },
    fileHost: await startFileHost(tls, o.pdfBytes, cleanup),
    startService: serviceStarter(o, tmpDir, secrets, tls.certPath, cleanup),
  };
}

/** Fills `results` phase by phase, so a failure late in the run still reports the phases before it. */
async function bench(o: BenchOptions, cleanup: Cleanup, results: Results): Promise<void> {
  const ctx = await setUp(o, cleanup, results);
  // Phase 2 runs on the database phases 1 and 4 filled, so it writes into tables of the same size.
  const mainUrl = o.only.has('webhooks') || o.only.has('db') ? await ctx.server.createDatabase(`bench_${ctx.stamp}`) : '';
  if (o.only.has('webhooks')) await runWebhookPhases(ctx, mainUrl, results);
  if (o.only.has('db')) {
    await migrate(mainUrl); // a no-op after the webhook phases' service; with --only db nobody has made the schema
    say(`2: the database limit, a single-row INSERT of the event per transaction, at c=${o.connections}`);
    results.singleRow = await runBaseline('single-row', o.dbLimit, mainUrl, ctx.tmpDir, ctx.load);
    say(`2b: the second baseline, our whole statement for one delivery per transaction, at c=${o.connections}`);
    results.wholeStatement = await runBaseline('whole-statement', o.dbLimit, mainUrl, ctx.tmpDir, ctx.load);
  }
  if (o.only.has('spool')) await runSpoolPhases(ctx, (results.spool = { healthy: [], away: [] }));
  if (o.only.has('http')) await runHttpPhase(ctx, results);
  if (o.only.has('pdf')) await runPdfPhases(ctx, results);
  if (o.only.has('changes')) await runChangesPhases(ctx, (results.changes = { cost: [], feed: [], logs: [] }));
  say('done; cleaning up');
}

let options: BenchOptions | undefined;
try {
  options = parseOptions(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n\n${USAGE}\n`);
  process.exit(2);
}
if (!options) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const cleanup = createCleanup();
const results: Results = { header: [], o: options };
let exitCode = 0;
try {
  await bench(options, cleanup, results);
  process.stdout.write(`\n${formatReport(results)}\n`);
} catch (err) {
  if (!cleanup.signal.aborted) process.stderr.write(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  // Once a phase has finished, results hold more than the header and the options: report what there is.
  if (Object.keys(results).length > 2) process.stdout.write(`\nPARTIAL RESULTS (the run did not finish)\n${formatReport(results)}\n`);
  exitCode = cleanup.signal.aborted ? 130 : 1;
} finally {
  await cleanup.run();
}
process.exit(exitCode);
