import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { migrate } from '../src/db/migrate.js';
import { startChild } from './bench/child-process.js';
import { createCleanup, sleep, type Cleanup } from './bench/cleanup.js';
import type { BenchContext } from './bench/context.js';
import { cpuBetween, cpuSnapshot } from './bench/cpu.js';
import { openPool, startDatabaseServer } from './bench/database.js';
import { createPool, patiroRequestBuilder } from './bench/deliveries.js';
import { startFileHost } from './bench/file-host.js';
import { parseOptions, PHASE_GROUPS, USAGE, type BenchOptions } from './bench/options.js';
import { runPdfPhases } from './bench/pdf-phases.js';
import { runDbLimit, warmAndRun, type PhaseSettings } from './bench/phases.js';
import { formatReport, hasResults, type Results } from './bench/report.js';
import { compileService, serviceCommand, serviceStarter, type Secrets } from './bench/service.js';
import { makeSelfSignedCert } from './bench/tls.js';
import { runWebhookPhases } from './bench/webhook-phases.js';

// npm run bench: issue 5's benchmark. The service runs as its own process, as deployed: compiled
// by tsc at the start of the run and started with plain node. This process generates the load,
// serves the PDFs and reads the database. Everything talks over 127.0.0.1. See --help.

const repoRoot = path.resolve(import.meta.dirname, '..');
const started = performance.now();
const say = (message: string) => process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(1).padStart(5)} s] ${message}\n`);

/** DATABASE_POOL_SIZE's default, which the benchmark leaves in place: the service's concurrency towards PostgreSQL. */
const SERVICE_POOL_SIZE = 10;

/** The temporary directory, the database server, the file host and the header: everything the phases share. */
async function setUp(o: BenchOptions, cleanup: Cleanup, results: Results): Promise<BenchContext> {
  const stamp = new Date().toISOString().replace(/\D/g, '').slice(0, 14);
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), 'webhook-bench-'));
  await chmod(tmpDir, 0o755); // as root, the embedded PostgreSQL runs as `postgres` and must reach its data
  cleanup.add('remove the temporary directory', () => rm(tmpDir, { recursive: true, force: true }));
  // Only the phases with a service need it compiled; the bare server and the baselines run under tsx.
  const runsService = o.only.has('webhooks') || o.only.has('pdf');
  if (runsService) {
    say('compiling the service: tsc -p tsconfig.build.json (into dist/)');
    await compileService(repoRoot, cleanup.signal);
  }
  // Other processes on the machine take CPU from every phase; measure how busy it is first.
  const quietFrom = cpuSnapshot({});
  await sleep(1000, cleanup.signal);
  const othersBefore = cpuBetween(quietFrom, cpuSnapshot({})).others;
  const secrets: Secrets = {
    patiro: randomBytes(24).toString('base64url'),
    physitrack: randomBytes(24).toString('base64url'),
    sourcesKey: randomBytes(32).toString('base64'),
  };

  say(process.env.BENCH_DATABASE_URL ? 'connecting to BENCH_DATABASE_URL' : 'starting an embedded PostgreSQL');
  const server = await startDatabaseServer(cleanup, tmpDir, process.env.BENCH_DATABASE_URL);
  const s: PhaseSettings = { connections: o.connections, durationS: o.durationS, warmupS: o.warmupS, signal: cleanup.signal, postmasterPid: server.postmasterPid };
  const tls = await makeSelfSignedCert(tmpDir);
  const fileHost = await startFileHost(tls, o.pdfBytes, cleanup);
  const phases = PHASE_GROUPS.filter((group) => o.only.has(group));
  results.header.push(
    `Webhook receiver benchmark, ${new Date().toISOString()}`,
    `  machine:  ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim() ?? '?'}), Node ${process.version}; other processes used ${Math.round(othersBefore)}% of a core just before the run`,
    ...(othersBefore > 20 ? ['  !!! the machine was not idle: the figures below are disturbed (see the "others" CPU column)'] : []),
    ...(phases.length < PHASE_GROUPS.length ? [`  phases:   ${phases.join(', ')} only (--only)`] : []),
    `  database: ${server.description}`,
    ...(runsService ? [`  service:  ${serviceCommand(repoRoot)} (compiled by tsc at the start of the run), NODE_ENV=production, LOG_LEVEL=${o.logLevel} (to a file), pool and ack deadline at their defaults`] : []),
    `  load:     autocannon, ${o.connections} connections, ${o.warmupS} s warm-up + ${o.durationS} s per phase${o.quick ? ' (quick mode)' : ''}`,
  );
  const startService = serviceStarter({ o, repoRoot, tmpDir, secrets, certPath: tls.certPath, cleanup });
  return { o, s, cleanup, repoRoot, tmpDir, stamp, secrets, server, tls, fileHost, startService, say };
}

/** Phase 2: one delivery per transaction straight into PostgreSQL, at the load's concurrency and at the service's pool size. */
async function runDatabasePhase(ctx: BenchContext, databaseUrl: string, results: Results): Promise<void> {
  const { o, s } = ctx;
  // The service of the webhook phases has created the schema (then this is a no-op); with --only db nobody has.
  await migrate(databaseUrl);
  const db = openPool(databaseUrl, ctx.cleanup);
  say(`2: the database limit at c=${o.connections}`);
  results.dbLimit = await runDbLimit(databaseUrl, db, o.dbLimit, ctx.tmpDir, s);
  if (o.connections !== SERVICE_POOL_SIZE) {
    say(`   and at the service's pool size, c=${SERVICE_POOL_SIZE}`);
    const atPool = await runDbLimit(databaseUrl, db, o.dbLimit, ctx.tmpDir, { ...s, connections: SERVICE_POOL_SIZE });
    results.dbLimitAtPool = { ...atPool, connections: SERVICE_POOL_SIZE };
  }
}

/** Phase 3: the same request bodies answered by Fastify alone. */
async function runHttpPhase(ctx: BenchContext, results: Results): Promise<void> {
  say(`3: the HTTP limit (bare Fastify) at c=${ctx.o.connections}`);
  const bare = await startChild({ name: 'the bare Fastify server', entry: 'scripts/bench/bare-server.ts', env: {}, logPath: path.join(ctx.tmpDir, 'bare.log'), repoRoot }, ctx.cleanup);
  try {
    results.http = await warmAndRun(bare, createPool(patiroRequestBuilder(ctx.secrets.patiro), { reuse: 20_000 }), ctx.s);
  } finally {
    await bare.stop();
  }
}

/** Fills `results` phase by phase, so a failure late in the run still reports the phases before it. */
async function bench(o: BenchOptions, cleanup: Cleanup, results: Results): Promise<void> {
  const ctx = await setUp(o, cleanup, results);
  // Phase 2 runs on the database phases 1 and 4 filled, so it writes into tables of the same size.
  const mainUrl = o.only.has('webhooks') || o.only.has('db') ? await ctx.server.createDatabase(`bench_${ctx.stamp}`) : undefined;
  if (mainUrl && o.only.has('webhooks')) await runWebhookPhases(ctx, mainUrl, results);
  if (mainUrl && o.only.has('db')) await runDatabasePhase(ctx, mainUrl, results);
  if (o.only.has('http')) await runHttpPhase(ctx, results);
  if (o.only.has('pdf')) await runPdfPhases(ctx, results);
  say('done; cleaning up');
}

async function main(): Promise<void> {
  let options: BenchOptions | undefined;
  try {
    options = parseOptions(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}\n`);
    process.exit(2);
  }
  if (!options) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const cleanup = createCleanup();
  let exitCode = 0;
  const results: Results = { header: [], connections: options.connections, durationS: options.durationS };
  try {
    await bench(options, cleanup, results);
    process.stdout.write(`\n${formatReport(results)}\n`);
  } catch (err) {
    if (!cleanup.signal.aborted) process.stderr.write(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    if (hasResults(results)) process.stdout.write(`\nPARTIAL RESULTS (the run did not finish)\n${formatReport(results)}\n`);
    exitCode = cleanup.signal.aborted ? 130 : 1;
  } finally {
    await cleanup.run();
  }
  process.exit(exitCode);
}

await main();
