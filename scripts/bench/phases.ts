import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { closeDatabase, createDatabase } from '../../src/db/client.js';
import { addSource } from '../../src/sources/manage.js';
import { countRows, openPool, runByteaLimit } from './database.js';
import { createPool, patiroDelivery, physitrackDelivery, runLoad, warmAndRun, type LoadResult, type LoadSettings, type RequestPool } from './load.js';
import type { BenchContext } from './options.js';
import { baseEnv, logTail, REPO_ROOT, run, startChild, withCpu, type Child, type Cleanup, type CpuUse } from './processes.js';
import type { Results, WebhookResult } from './report.js';

// The phases with a server under test: 1, 1b, the lone requests and 4 (the service), 3 (bare Fastify), 5 (the PDF pipeline and its baselines).

/** A webhook phase: the load, then the rows it left in `table` (once `settle` resolves), compared with the 2xx answers one by one by `key`. */
export async function measureWebhook(service: Child, pool: RequestPool, db: pg.Pool, [table, key]: [string, string], s: LoadSettings, settle?: () => Promise<void>): Promise<WebhookResult> {
  const count = `SELECT count(*) AS n FROM ${table}`;
  let before = 0;
  // The warm-up's deliveries are stored too: count from after it.
  const { load, cpu } = await warmAndRun(service, pool, s, async () => void (before = await countRows(db, count)));
  await settle?.();
  const stored = (await countRows(db, count)) - before;
  return { load, stored, ackedFound: await countRows(db, `${count} WHERE ${key} = ANY($1::text[])`, [load.ackedKeys]), cpu };
}

/** Phases 1, 1b, the lone requests and 4, against one service process on `databaseUrl`. */
export async function runWebhookPhases(ctx: BenchContext, databaseUrl: string, results: Results): Promise<void> {
  const { o, secrets } = ctx;
  const patiro: [string, string] = ['patiro_events', 'event_id'];
  const service = await ctx.startService('the service (webhook phases)', databaseUrl, 'service-webhooks');
  const db = openPool(databaseUrl, ctx.cleanup);
  try {
    ctx.say(`1: POST /webhooks/patiro at c=${o.connections}`);
    results.patiro = await measureWebhook(service, createPool(patiroDelivery(secrets.patiro)), db, patiro, ctx.load);
    // One after the other, phases differ by ±20 % on a shared machine (JIT, table size, tenants), more than what is measured; at once, not.
    ctx.say(`1b: the default source and a database source at once, c=${o.connections / 2} each`);
    const source = await addDatabaseSource(ctx, databaseUrl, service);
    const half = { ...ctx.load, connections: Math.max(1, Math.floor(o.connections / 2)) };
    const [viaDefault, viaSource] = await Promise.all([
      measureWebhook(service, createPool(patiroDelivery(secrets.patiro)), db, patiro, half),
      measureWebhook(service, createPool(patiroDelivery(source.secret, source.path)), db, patiro, half),
    ]);
    results.patiroSplit = { viaDefault, viaSource };
    await measureLoneRequests(ctx, service, databaseUrl, results);
    // The file_urls are accepted and never answered: the worker claims DOWNLOAD_CONCURRENCY notices and waits on them all phase, so no
    // downloads, retries or failures (as from a host answering 404) compete with the ingest path; what remains is the worker being woken.
    ctx.say(`4: POST /webhooks/physitrack at c=${o.connections}`);
    const runId = ctx.stamp + randomBytes(3).toString('hex');
    const notices = createPool(physitrackDelivery(secrets.physitrack, (i) => ctx.fileHost.holdUrl(`${runId}-${i}`), runId));
    results.physitrack = await measureWebhook(service, notices, db, ['physitrack_deliveries', 'patient_id'], ctx.load);
  } catch (err) {
    if (!ctx.cleanup.signal.aborted) process.stderr.write(`the service's log ends:\n${logTail(path.join(ctx.tmpDir, 'service-webhooks.log'))}\n`);
    throw err;
  } finally {
    ctx.fileHost.stopHolding();
    await service.stop();
  }
}

/** A Patiro source in the sources table, as `sources add` makes it; resolves once the service serves it. */
async function addDatabaseSource(ctx: BenchContext, databaseUrl: string, service: Child): Promise<{ path: string; secret: string }> {
  const db = createDatabase({ url: databaseUrl, poolSize: 1, connectTimeoutMs: 5000 });
  try {
    const { row, secret } = await addSource(db, [Buffer.from(ctx.secrets.sourcesKey, 'base64')], { vendor: 'patiro', name: 'bench clinic' });
    // The service hears of it on its control channel; until then the path answers 404.
    for (let waited = 0; ; waited += 50, await sleep(50)) {
      const response = await fetch(`${service.baseUrl}/webhooks/patiro/${row.id}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      await response.arrayBuffer();
      if (response.status === 401) return { path: `/webhooks/patiro/${row.id}`, secret };
      if (waited > 5000) throw new Error(`the service did not serve the new source within 5 s (it answered ${response.status})`);
    }
  } finally {
    await closeDatabase(db);
  }
}

// A lone request's latency on the service, and on one with group commit off (WRITE_BATCH_MAX_ROWS=1): what batching costs a request with
// nobody to share a commit with. The second service runs on this database between phases 1 and 4: both write into tables of the same
// size, its worker has no notices to claim, and each measurement runs while the other service idles.
async function measureLoneRequests(ctx: BenchContext, service: Child, databaseUrl: string, results: Results): Promise<void> {
  const { o } = ctx;
  ctx.say('   starting a second service with batching off (WRITE_BATCH_MAX_ROWS=1)');
  const unbatched = await ctx.startService('the service with batching off', databaseUrl, 'service-unbatched', { WRITE_BATCH_MAX_ROWS: '1' });
  const send = (target: Child, amount: number, connections = 1, durationS?: number) => {
    const pool = createPool(patiroDelivery(ctx.secrets.patiro));
    pool.prepare(amount);
    return runLoad({ baseUrl: target.baseUrl, connections, pool, amount: durationS ? undefined : amount, durationS, signal: ctx.load.signal });
  };
  try {
    // The configured service is warm from phase 1; this one gets phase 1's warm-up (JIT, connection pool).
    await send(unbatched, o.connections * 50, o.connections, o.warmupS);
    ctx.say(`   a lone request: ${o.loneRequests} sequential, then the same with batching off`);
    results.lone = await send(service, o.loneRequests);
    results.loneUnbatched = await send(unbatched, o.loneRequests);
  } finally {
    await unbatched.stop();
  }
}

/** Phase 3: the same request bodies answered by Fastify alone (scripts/bench/bare-server.ts). */
export async function runHttpPhase(ctx: BenchContext, results: Results): Promise<void> {
  ctx.say(`3: the HTTP limit (bare Fastify) at c=${ctx.o.connections}`);
  const bare = await startChild('the bare Fastify server', ['--import', 'tsx', 'scripts/bench/bare-server.ts'], {}, path.join(ctx.tmpDir, 'bare.log'), ctx.cleanup);
  try {
    results.http = await warmAndRun(bare, createPool(patiroDelivery(ctx.secrets.patiro), 20_000), ctx.load);
  } finally {
    await bare.stop();
  }
}

/** A self-signed certificate for 127.0.0.1, made by openssl for this run; processes trust `certPath` (NODE_EXTRA_CA_CERTS) as a private CA. */
export async function makeSelfSignedCert(dir: string) {
  const [keyPath, certPath] = [path.join(dir, 'file-host.key'), path.join(dir, 'file-host.crt')];
  await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '1',
    '-subj', '/CN=webhook-receiver bench file host', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'])
    .catch((err: NodeJS.ErrnoException & { stderr?: string }) => Promise.reject(new Error(err.code === 'ENOENT' ? 'openssl is needed, but not installed' : `openssl failed: ${err.stderr ?? err.message}`)));
  return { key: await readFile(keyPath), cert: await readFile(certPath), certPath };
}
export type BenchTls = Awaited<ReturnType<typeof makeSelfSignedCert>>;

// The PDF host, on 127.0.0.1: `pdfUrl(i)` is a file of its own (a header naming it, a random middle shared by all, sent without a copy, a
// trailer); `holdUrl` is accepted and never answered, until `stopHolding` closes every held request and from then on every new one (until
// `resumeHolding`).
export async function startFileHost(tls: BenchTls, pdfBytes: number, cleanup: Cleanup) {
  const trailer = Buffer.from('\n%%EOF\n');
  const header = (index: string) => Buffer.from(`%PDF-1.7\n% webhook-receiver bench file ${index.padStart(12, '0')}\n`);
  const middle = randomBytes(Math.max(0, pdfBytes - header('0').length - trailer.length));
  const held = new Set<ServerResponse>();
  let holding = true;
  const server = createServer({ key: tls.key, cert: tls.cert }, (request, response) => {
    const pdf = /^\/pdf\/(\d{1,12})\.pdf$/.exec(request.url ?? '');
    if (pdf) {
      const head = header(pdf[1]!);
      response.writeHead(200, { 'content-type': 'application/pdf', 'content-length': head.length + middle.length + trailer.length });
      response.write(head);
      response.write(middle);
      response.end(trailer);
    } else if (request.url?.startsWith('/hold/') && holding) {
      held.add(response.on('close', () => held.delete(response)));
    } else {
      response.destroy();
    }
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  cleanup.add('stop the PDF file host', () => new Promise((resolve) => (server.closeAllConnections(), server.close(resolve))));
  const prefix = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    pdfUrlPrefix: `${prefix}/pdf/`,
    pdfUrl: (index: number) => `${prefix}/pdf/${index}.pdf`,
    holdUrl: (name: string) => `${prefix}/hold/${encodeURIComponent(name)}.pdf`,
    stopHolding: () => void ((holding = false), held.forEach((response) => response.destroy())),
    resumeHolding: () => void (holding = true),
  };
}
export type FileHost = Awaited<ReturnType<typeof startFileHost>>;

/** `notDone`: acked notices whose download did not end done; `retries`: attempts beyond one each; `elapsedS`: first notice received → last PDF stored. */
export type PipelineResult = { label: string; notices: LoadResult; done: number; notDone: number; retries: number; elapsedS: number; idleRss: number; peakRss: number; cpu: CpuUse };
export type FetchResult = { files: number; elapsedS: number; cpu: CpuUse };

const PROGRESS = `SELECT count(*) FILTER (WHERE download_status = 'done')::int AS done, count(*) FILTER (WHERE download_status IN ('pending', 'downloading'))::int AS open,
  count(*)::int AS total, coalesce(sum(attempts), 0)::int AS attempts FROM physitrack_deliveries`;

// POSTs `pdfs` notices through the real route, each pointing at its own PDF on the file host, and waits until the worker has closed all of
// them (giving up after 60 s without progress). The database is this phase's alone: every row in physitrack_deliveries is one of these.
async function runPipeline(ctx: BenchContext, url: string, label: string): Promise<PipelineResult> {
  const { o, load: s } = ctx;
  const service = await ctx.startService('the service (PDF pipeline)', url, 'service-pdf');
  const db = openPool(url, ctx.cleanup);
  try {
    const pool = createPool(physitrackDelivery(ctx.secrets.physitrack, ctx.fileHost.pdfUrl, `${ctx.stamp}-pdf`));
    pool.prepare(o.pdfs);
    const idleRss = service.memory().rss;
    const { result, cpu } = await withCpu({ target: service.pid, postmaster: s.postmaster }, async () => {
      const notices = await runLoad({ baseUrl: service.baseUrl, connections: Math.min(s.connections, o.pdfs), pool, amount: o.pdfs, signal: s.signal });
      // What is still open after 60 s without progress is reported as not done.
      let last = (await db.query<Record<'done' | 'open' | 'total' | 'attempts', number>>(PROGRESS)).rows[0]!;
      for (let changedAt = Date.now(); (last.open > 0 || last.total < notices.acked) && Date.now() - changedAt < 60_000; await sleep(100, undefined, { signal: s.signal })) {
        const now = (await db.query<typeof last>(PROGRESS)).rows[0]!;
        if (now.done !== last.done || now.open !== last.open) changedAt = Date.now();
        last = now;
      }
      return { notices, closed: last };
    });
    const { rows } = await db.query<{ s: number | null }>("SELECT extract(epoch FROM max(downloaded_at) - min(received_at))::float8 AS s FROM physitrack_deliveries WHERE download_status = 'done'");
    const { notices, closed } = result;
    // A process of its own: its peak since start is the pipeline's (start and idle take less).
    return { label, notices, done: closed.done, notDone: notices.acked - closed.done, retries: closed.attempts - closed.total, elapsedS: rows[0]?.s ?? Number.NaN,
      idleRss, peakRss: service.memory().peak, cpu };
  } finally {
    await service.stop();
  }
}

// Phase 5, the PDF pipeline, then its durable baselines one after another, each alone on the machine: the same files fetched by plain
// undici into fsynced files, and (with database storage) PostgreSQL taking the same bytes from plain INSERTs.
export async function runPdfPhases(ctx: BenchContext, results: Results): Promise<void> {
  const { o, load: s } = ctx;
  const label = `${o.pdfs} × ${(o.pdfBytes / 1024 / 1024).toFixed(2)} MiB, DOWNLOAD_CONCURRENCY=${o.downloadConcurrency}, ${o.storage}`;
  ctx.say(`5: the PDF pipeline, ${label}`);
  results.pipeline = await runPipeline(ctx, await ctx.server.createDatabase(`bench_${ctx.stamp}_pdf`), label);
  ctx.say(`   undici into fsynced files, concurrency ${o.downloadConcurrency}`);
  // Under tmpDir, so on the same filesystem as the service's PDF_DIR (DATA_DIR/pdf).
  const intoDir = await mkdtemp(path.join(ctx.tmpDir, 'fetch-to-files-'));
  const args = ['--import', 'tsx', 'scripts/bench/fetch-to-files.ts', ctx.fileHost.pdfUrlPrefix, String(o.pdfs), String(o.downloadConcurrency), intoDir];
  try {
    const { result, cpu } = await withCpu({ postmaster: s.postmaster }, () => run(process.execPath, args, { cwd: REPO_ROOT, env: { ...baseEnv(), NODE_EXTRA_CA_CERTS: ctx.tls.certPath }, signal: s.signal, timeout: 30 * 60_000 })
      .catch((err: { stderr?: string; message: string }) => Promise.reject(new Error(`the fetch into files failed: ${err.stderr || err.message}`))));
    const { files, elapsedS, cpuS } = JSON.parse(result.stdout) as { files: number; elapsedS: number; cpuS: number };
    results.toFiles = { files, elapsedS, cpu: { ...cpu, target: cpuS } }; // the loop's own CPU, without node's and tsx's start
  } finally {
    await rm(intoDir, { recursive: true, force: true }); // the next baseline needs the disk space more
  }
  if (o.storage !== 'database') return;
  ctx.say(`   the database limit: plain pg INSERT of the same bytes, concurrency ${o.downloadConcurrency}`);
  results.byteaLimit = await runByteaLimit(await ctx.server.createDatabase(`bench_${ctx.stamp}_bytea`), o.pdfs, o.pdfBytes, o.downloadConcurrency, s);
}
