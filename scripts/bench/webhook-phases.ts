import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { logTail, type Child } from './child-process.js';
import type { BenchContext } from './context.js';
import { closeDatabase, createDatabase } from '../../src/db/client.js';
import { addSource } from '../../src/sources/manage.js';
import type pg from 'pg';
import { openPool } from './database.js';
import { createPool, patiroRequestBuilder, physitrackRequestBuilder } from './deliveries.js';
import { runLoad, type LoadResult } from './load.js';
import { measureWebhook, PATIRO_ROWS, PHYSITRACK_ROWS } from './phases.js';
import type { Results } from './report.js';

/** Phases 1 and 4 and the lone requests, against one service process on `databaseUrl`. */
export async function runWebhookPhases(ctx: BenchContext, databaseUrl: string, results: Results): Promise<void> {
  const { o, s } = ctx;
  ctx.say('starting the service (webhook phases)');
  const service = await ctx.startService('the service (webhook phases)', databaseUrl, 'service-webhooks');
  const db = openPool(databaseUrl, ctx.cleanup);
  try {
    ctx.say(`1: POST /webhooks/patiro at c=${o.connections}`);
    results.patiro = await measureWebhook(service, createPool(patiroRequestBuilder(ctx.secrets.patiro)), db, PATIRO_ROWS, s);
    ctx.say(`1b: the default source and a database source at once, c=${o.connections / 2} each`);
    const source = await addDatabaseSource(ctx, databaseUrl, service);
    results.patiroSplit = await measureSplit(ctx, service, db, source);
    await measureLoneRequests(ctx, service, databaseUrl, results);

    // Phase 4's file_urls point at a path of the local file host that accepts the request and never
    // answers. The worker (DOWNLOAD_CONCURRENCY slots) claims that many notices and then waits on
    // them for the whole phase: no downloads, retries or failures competing with the ingest path for
    // the database, as a host that answers 404 or refuses would cause (every notice claimed, retried
    // and re-claimed). What remains is what the worker always does when woken by a stored notice.
    ctx.say(`4: POST /webhooks/physitrack at c=${o.connections}`);
    const runId = ctx.stamp + randomBytes(3).toString('hex');
    const physitrackPool = createPool(physitrackRequestBuilder(ctx.secrets.physitrack, (i) => ctx.fileHost.holdUrl(`${runId}-${i}`), runId));
    results.physitrack = await measureWebhook(service, physitrackPool, db, PHYSITRACK_ROWS, s);
  } catch (err) {
    if (!ctx.cleanup.signal.aborted) process.stderr.write(`the service's log ends:\n${logTail(path.join(ctx.tmpDir, 'service-webhooks.log'))}\n`);
    throw err;
  } finally {
    ctx.fileHost.stopHolding();
    await service.stop();
  }
}

/**
 * Both sources' loads at the same time, half the connections each. Phases run one after another
 * differ by ±20 % on a shared machine (JIT warmth, table size, other tenants), more than the
 * difference to measure; at the same time, both streams see the same machine, and a source that
 * costs more per request answers fewer of its connections' requests.
 */
async function measureSplit(ctx: BenchContext, service: Child, db: pg.Pool, source: { path: string; secret: string }): Promise<Results['patiroSplit']> {
  const half = { ...ctx.s, connections: Math.max(1, Math.floor(ctx.o.connections / 2)) };
  const [viaDefault, viaSource] = await Promise.all([
    measureWebhook(service, createPool(patiroRequestBuilder(ctx.secrets.patiro)), db, PATIRO_ROWS, half),
    measureWebhook(service, createPool(patiroRequestBuilder(source.secret, source.path)), db, PATIRO_ROWS, half),
  ]);
  // `stored` counts both streams' rows; `ackedFound` is each stream's own.
  return { viaDefault, viaSource };
}

/** A Patiro source in the sources table, as `sources add` makes it; resolves once the service serves it. */
async function addDatabaseSource(ctx: BenchContext, databaseUrl: string, service: Child): Promise<{ path: string; secret: string }> {
  const db = createDatabase({ url: databaseUrl, poolSize: 1, connectTimeoutMs: 5000 });
  try {
    const { row, secret } = await addSource(db, [Buffer.from(ctx.secrets.sourcesKey, 'base64')], { vendor: 'patiro', name: 'bench clinic' });
    const path = `/webhooks/patiro/${row.id}`;
    // The service hears of it on its control channel; until then the path answers 404.
    for (let waited = 0; ; waited += 50) {
      const response = await fetch(`${service.baseUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      await response.arrayBuffer();
      if (response.status === 401) return { path, secret };
      if (waited > 5000) throw new Error(`the service did not serve the new source within 5 s (it answered ${response.status})`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    await closeDatabase(db);
  }
}

/**
 * A lone request's latency on the service as configured, and on one with group commit off
 * (WRITE_BATCH_MAX_ROWS=1, every delivery its own transaction): what batching costs a request that
 * has nobody to share a commit with.
 *
 * The second service is a short-lived process on this same database, between phases 1 and 4: both
 * measurements then write into the same tables of the same size (a database of its own would start
 * with empty indexes, cheaper to write into), and there are no Physitrack notices yet for its worker
 * to claim. The two measurements follow each other directly, each while the other service idles.
 */
async function measureLoneRequests(ctx: BenchContext, service: Child, databaseUrl: string, results: Results): Promise<void> {
  const { o, s } = ctx;
  ctx.say('   starting a second service with batching off (WRITE_BATCH_MAX_ROWS=1)');
  const unbatched = await ctx.startService('the service with batching off', databaseUrl, 'service-unbatched', { WRITE_BATCH_MAX_ROWS: '1' });
  try {
    // The configured service is warm from phase 1; this one gets phase 1's warm-up (JIT, connection pool).
    const warmUp = createPool(patiroRequestBuilder(ctx.secrets.patiro));
    warmUp.prepare(o.connections * 50);
    await runLoad({ baseUrl: unbatched.baseUrl, connections: o.connections, pool: warmUp, durationS: o.warmupS, signal: s.signal });

    ctx.say(`   a lone request: ${o.loneRequests} sequential`);
    results.lone = await runLoneRequests(ctx, service);
    ctx.say(`   a lone request, batching off: ${o.loneRequests} sequential`);
    results.loneUnbatched = await runLoneRequests(ctx, unbatched);
  } finally {
    await unbatched.stop();
  }
}

/** `--lone` sequential deliveries, each a new event, all signed just before the first is sent. */
function runLoneRequests(ctx: BenchContext, target: Child): Promise<LoadResult> {
  const pool = createPool(patiroRequestBuilder(ctx.secrets.patiro));
  pool.prepare(ctx.o.loneRequests);
  return runLoad({ baseUrl: target.baseUrl, connections: 1, pool, amount: ctx.o.loneRequests, signal: ctx.s.signal });
}
