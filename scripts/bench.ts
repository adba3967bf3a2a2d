import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { logTail, startChild, type Child } from './bench/child-process.js';
import { createCleanup, sleep, type Cleanup } from './bench/cleanup.js';
import { cpuBetween, cpuSnapshot } from './bench/cpu.js';
import { openPool, startDatabaseServer } from './bench/database.js';
import { createPool, patiroRequestBuilder, physitrackRequestBuilder } from './bench/deliveries.js';
import { startFileHost } from './bench/file-host.js';
import { runLoad } from './bench/load.js';
import { parseOptions, USAGE, type BenchOptions } from './bench/options.js';
import { runPipeline, runPlainFetch } from './bench/pdf-pipeline.js';
import { measureWebhook, PATIRO_ROWS, PHYSITRACK_ROWS, runDbLimit, warmAndRun, type PhaseSettings } from './bench/phases.js';
import { formatReport, type Results } from './bench/report.js';
import { makeSelfSignedCert } from './bench/tls.js';

// npm run bench: issue 5's benchmark. The service runs as its own process (`node --import tsx
// src/main.ts`), exactly as deployed apart from the compiler; this process generates the load,
// serves the PDFs and reads the database. Everything talks over 127.0.0.1. See --help.

const repoRoot = path.resolve(import.meta.dirname, '..');
const started = performance.now();
const say = (message: string) => process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(1).padStart(5)} s] ${message}\n`);

/** DATABASE_POOL_SIZE's default, which the benchmark leaves in place: the service's concurrency towards PostgreSQL. */
const SERVICE_POOL_SIZE = 10;

interface Secrets {
  patiro: string;
  physitrack: string;
}

/**
 * The service's whole configuration, every variable named so that a developer's .env file in the
 * repository (read by main.ts, but never overriding a variable that is set, even to "") cannot
 * change what is measured. Empty means the documented default.
 */
function serviceEnv(o: BenchOptions, databaseUrl: string, dataDir: string, secrets: Secrets, certPath: string): Record<string, string> {
  return {
    NODE_ENV: 'production',
    DATABASE_URL: databaseUrl,
    DATA_DIR: dataDir,
    LOG_LEVEL: o.logLevel,
    BODY_LIMIT_BYTES: '', ACK_DEADLINE_MS: '', DATABASE_POOL_SIZE: '',
    SHUTDOWN_TIMEOUT_MS: '10000',
    PATIRO_SIGNING_SECRET: secrets.patiro, PATIRO_TIMESTAMP_TOLERANCE_SECONDS: '', PATIRO_TOKEN: '', PATIRO_BASIC_AUTH: '',
    PHYSITRACK_API_KEY: secrets.physitrack, PHYSITRACK_TOKENS: '',
    // The local file host is https://127.0.0.1:<port>, so loopback must be allowed for this run.
    PHYSITRACK_FILE_URL_HOSTS: '127.0.0.1', DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true',
    DOWNLOAD_CONCURRENCY: String(o.downloadConcurrency),
    DOWNLOAD_TIMEOUT_MS: '', DOWNLOAD_MAX_BYTES: '', DOWNLOAD_RETRY_BASE_MS: '', DOWNLOAD_DEADLINE_HOURS: '', DOWNLOAD_LEASE_SECONDS: '',
    PDF_STORAGE: o.storage, PDF_DIR: '',
    NODE_EXTRA_CA_CERTS: certPath,
  };
}

/** Fills `results` phase by phase, so a failure late in the run still reports the phases before it. */
async function bench(o: BenchOptions, cleanup: Cleanup, results: Results): Promise<void> {
  const stamp = new Date().toISOString().replace(/\D/g, '').slice(0, 14);
  const tmpDir = await mkdtemp(path.join(os.tmpdir(), 'webhook-bench-'));
  await chmod(tmpDir, 0o755); // as root, the embedded PostgreSQL runs as `postgres` and must reach its data
  cleanup.add('remove the temporary directory', () => rm(tmpDir, { recursive: true, force: true }));
  const s: PhaseSettings = { connections: o.connections, durationS: o.durationS, warmupS: o.warmupS, signal: cleanup.signal };
  // Other processes on the machine take CPU from every phase; measure how busy it is first.
  const quietFrom = cpuSnapshot({});
  await sleep(1000, cleanup.signal);
  const othersBefore = cpuBetween(quietFrom, cpuSnapshot({})).others;
  const secrets: Secrets = { patiro: randomBytes(24).toString('base64url'), physitrack: randomBytes(24).toString('base64url') };

  say(process.env.BENCH_DATABASE_URL ? 'connecting to BENCH_DATABASE_URL' : 'starting an embedded PostgreSQL');
  const server = await startDatabaseServer(cleanup, tmpDir, process.env.BENCH_DATABASE_URL);
  s.postmasterPid = server.postmasterPid;
  const mainUrl = await server.createDatabase(`bench_${stamp}`);
  const pdfUrl = await server.createDatabase(`bench_${stamp}_pdf`);
  const tls = await makeSelfSignedCert(tmpDir);
  const fileHost = await startFileHost(tls, o.pdfBytes, cleanup);
  results.header.push(
    `Webhook receiver benchmark, ${new Date().toISOString()}`,
    `  machine:  ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim() ?? '?'}), Node ${process.version}; other processes used ${Math.round(othersBefore)}% of a core just before the run`,
    ...(othersBefore > 20 ? ['  !!! the machine was not idle: the figures below are disturbed (see the "others" CPU column)'] : []),
    `  database: ${server.description}`,
    `  service:  node --import tsx src/main.ts, NODE_ENV=production, LOG_LEVEL=${o.logLevel} (to a file), pool and ack deadline at their defaults`,
    `  load:     autocannon, ${o.connections} connections, ${o.warmupS} s warm-up + ${o.durationS} s per phase${o.quick ? ' (quick mode)' : ''}`,
  );
  const startService = (name: string, databaseUrl: string, dir: string): Promise<Child> =>
    startChild({
      name, entry: 'src/main.ts', env: serviceEnv(o, databaseUrl, path.join(tmpDir, dir), secrets, tls.certPath),
      // One profile per thread (the tsx loader runs in a thread of its own), so a directory per process.
      nodeArgs: o.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(o.cpuProfDir, dir)}`] : [],
      logPath: path.join(tmpDir, `${dir}.log`), repoRoot,
    }, cleanup);

  say('starting the service (webhook phases)');
  const service = await startService('the service (webhook phases)', mainUrl, 'service-webhooks');
  const db = openPool(mainUrl, cleanup);
  try {
    say(`1: POST /webhooks/patiro at c=${o.connections}`);
    const patiroPool = createPool(patiroRequestBuilder(secrets.patiro));
    results.patiro = await measureWebhook(service, patiroPool, db, PATIRO_ROWS, s);
    say(`   a lone request: ${o.loneRequests} sequential`);
    patiroPool.prepare(o.loneRequests);
    results.lone = await runLoad({ baseUrl: service.baseUrl, connections: 1, pool: patiroPool, amount: o.loneRequests, signal: s.signal });

    // Phase 4's file_urls point at a path of the local file host that accepts the request and never
    // answers. The worker (DOWNLOAD_CONCURRENCY slots) claims that many notices and then waits on
    // them for the whole phase: no downloads, retries or failures competing with the ingest path for
    // the database, as a host that answers 404 or refuses would cause (every notice claimed, retried
    // and re-claimed). What remains is what the worker always does when woken by a stored notice.
    say(`4: POST /webhooks/physitrack at c=${o.connections}`);
    const runId = stamp + randomBytes(3).toString('hex');
    const physitrackPool = createPool(physitrackRequestBuilder(secrets.physitrack, (i) => fileHost.holdUrl(`${runId}-${i}`), runId));
    results.physitrack = await measureWebhook(service, physitrackPool, db, PHYSITRACK_ROWS, s);
  } catch (err) {
    if (!cleanup.signal.aborted) process.stderr.write(`the service's log ends:\n${logTail(path.join(tmpDir, 'service-webhooks.log'))}\n`);
    throw err;
  } finally {
    fileHost.stopHolding();
    await service.stop();
  }

  say(`2: the database limit at c=${o.connections}`);
  results.dbLimit = await runDbLimit(mainUrl, db, o.dbLimit, tmpDir, s);
  if (o.connections !== SERVICE_POOL_SIZE) {
    say(`   and at the service's pool size, c=${SERVICE_POOL_SIZE}`);
    const atPool = await runDbLimit(mainUrl, db, o.dbLimit, tmpDir, { ...s, connections: SERVICE_POOL_SIZE });
    results.dbLimitAtPool = { ...atPool, connections: SERVICE_POOL_SIZE };
  }

  say(`3: the HTTP limit (bare Fastify) at c=${o.connections}`);
  const bare = await startChild({ name: 'the bare Fastify server', entry: 'scripts/bench/bare-server.ts', env: {}, logPath: path.join(tmpDir, 'bare.log'), repoRoot }, cleanup);
  results.http = await warmAndRun(bare, createPool(patiroRequestBuilder(secrets.patiro), { reuse: 20_000 }), s);
  await bare.stop();

  const mib = (o.pdfBytes / 1024 / 1024).toFixed(2);
  say(`5: the PDF pipeline, ${o.pdfs} × ${mib} MiB, DOWNLOAD_CONCURRENCY=${o.downloadConcurrency}, PDF_STORAGE=${o.storage}`);
  const pdfService = await startService('the service (PDF pipeline)', pdfUrl, 'service-pdf');
  const pipeline = await runPipeline({
    service: pdfService, db: openPool(pdfUrl, cleanup), fileHost, apiKey: secrets.physitrack,
    pdfs: o.pdfs, pdfBytes: o.pdfBytes, connections: o.connections, runId: stamp, signal: s.signal, postmasterPid: s.postmasterPid,
  });
  results.pipeline = { ...pipeline, label: `${o.pdfs} × ${mib} MiB, DOWNLOAD_CONCURRENCY=${o.downloadConcurrency}, ${o.storage}` };
  await pdfService.stop();
  say(`   plain undici fetch of the same files, concurrency ${o.downloadConcurrency}`);
  const plain = await runPlainFetch({ repoRoot, urlPrefix: fileHost.pdfUrlPrefix, count: o.pdfs, concurrency: o.downloadConcurrency, certPath: tls.certPath, signal: s.signal });
  results.plain = { ...plain, concurrency: o.downloadConcurrency };
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
    if (results.patiro) process.stdout.write(`\nPARTIAL RESULTS (the run did not finish)\n${formatReport(results)}\n`);
    exitCode = cleanup.signal.aborted ? 130 : 1;
  } finally {
    await cleanup.run();
  }
  process.exit(exitCode);
}

await main();
