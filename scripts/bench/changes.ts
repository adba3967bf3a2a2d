import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { addConsumer } from '../../src/api/consumers-table.js';
import { closeDatabase, createDatabase } from '../../src/db/client.js';
import { freePort } from '../../src/db/embedded.js';
import { countRows, openPool } from './database.js';
import { createPool, patiroDelivery, physitrackDelivery, runLoad, warmAndRun, type LoadResult, type LoadSettings } from './load.js';
import type { BenchContext } from './options.js';
import type { Child, CpuUse } from './processes.js';
import type { WebhookResult } from './report.js';

// Phases 9 and 10, the change feed (issue 21). 9: the cost on the ack path: two services, each on a database of its own, one of the
// databases with the bench switch set (webhook_receiver.bench_skip_changes = 'on': the very same statements, without change rows), in
// turns (off, on, then on, off, …). 10: one service as shipped, loaded at the full rate (Patiro, then Physitrack) while two readers page
// through the feed, one through GET /v1/changes, one through receiver_v1.changes_after: do they keep up, and is every change read once?
// Each database is first filled for a few seconds and analyzed: on young tables never analyzed, the Physitrack intake's generic plan may
// look up a notice's earlier delivery through the wrong index, on some connections, by chance (docs/performance.md), which would
// make the comparison one of plans.

const VENDORS = ['Patiro', 'Physitrack'] as const;
export type ChangesVendor = (typeof VENDORS)[number];
const TABLES: Record<ChangesVendor, [string, string]> = { Patiro: ['patiro_events', 'event_id'], Physitrack: ['physitrack_deliveries', 'patient_id'] };
const PAGE_ROWS = 500;

/** `changes`: 'on' writes change rows (as shipped), 'off' is the database with the switch; `changeRows`: rows `changes` gained in the measured window, by kind. */
export type CostTurn = { vendor: ChangesVendor; changes: 'off' | 'on'; round: number; w: WebhookResult; changeRows: Record<string, number> };
/** `readInWindow`: changes read during the measured load; `lagAtStop`: visible changes not yet read when the load ended; `caughtUpAfterS`: from then to the reader at the head. */
export type FeedReader = { name: string; readInWindow: number; lagAtStop: number; caughtUpAfterS: number; errors: number };
export type FeedTurn = { vendor: ChangesVendor; load: LoadResult; cpu: CpuUse; written: number; readers: FeedReader[] };
/** Per reader, at the end of phase 10: `reads` (rows received), `distinct` ids, `due` (rows of the table up to the head), `missing` (due, never read), `unknown` (read, not in the table). */
export type FeedCheck = { name: string; reads: number; distinct: number; due: number; missing: number; unknown: number };
export type ChangesResults = {
  cost: CostTurn[];
  /** After phase 9: the rows of `changes` in each database; the switch as a new connection to the 'off' database reads it. */
  totals?: { off: number; on: number; setting: string };
  feed: FeedTurn[];
  check?: FeedCheck[];
  /** After 10, with no load: a new reader of each kind from the feed's start to the head, one after the other. */
  backlog?: { name: string; changes: number; seconds: number }[];
  /** Lines at level warn (40) and error (50) or above in each service's log, `expected` apart (the switch's own error line); `first`: the first error's message. */
  logs: { service: string; warnings: number; errors: number; expected: number; first?: string }[];
};

const deliveries = (ctx: BenchContext, vendor: ChangesVendor) => {
  if (vendor === 'Patiro') return createPool(patiroDelivery(ctx.secrets.patiro));
  const runId = ctx.stamp + randomBytes(3).toString('hex');
  return createPool(physitrackDelivery(ctx.secrets.physitrack, (i) => ctx.fileHost.holdUrl(`${runId}-${i}`), runId));
};

const kindsOf = async (db: pg.Pool) => Object.fromEntries((await db.query<{ kind: string; n: number }>('SELECT kind, count(*)::int AS n FROM changes GROUP BY kind')).rows.map((r) => [r.kind, r.n]));

/** A webhook phase as measureWebhook runs it, and the change rows the measured window wrote, counted from after the warm-up. */
async function measureTurn(ctx: BenchContext, service: Child, db: pg.Pool, vendor: ChangesVendor, s: LoadSettings) {
  const [table, key] = TABLES[vendor];
  let before = { stored: 0, kinds: {} as Record<string, number> };
  const counts = async () => ({ stored: await countRows(db, `SELECT count(*) AS n FROM ${table}`), kinds: await kindsOf(db) });
  const { load, cpu } = await warmAndRun(service, deliveries(ctx, vendor), s, async () => void (before = await counts()));
  const after = await counts();
  const ackedFound = await countRows(db, `SELECT count(*) AS n FROM ${table} WHERE ${key} = ANY($1::text[])`, [load.ackedKeys]);
  const changeRows = Object.fromEntries(Object.entries(after.kinds).map(([kind, n]) => [kind, n - (before.kinds[kind] ?? 0)]).filter(([, n]) => n !== 0));
  return { w: { load, stored: after.stored - before.stored, ackedFound, cpu }, changeRows };
}

/** Unmeasured: each vendor on every service at once for a few seconds, then ANALYZE of every database (it also makes the cached plans again). */
async function fillAndAnalyze(ctx: BenchContext, targets: { service: Child; db: pg.Pool }[]): Promise<void> {
  const durationS = Math.max(1, 2 * ctx.o.warmupS);
  const connections = Math.max(1, Math.floor(ctx.o.connections / targets.length));
  for (const vendor of VENDORS) {
    await Promise.all(targets.map(({ service }) => {
      const pool = deliveries(ctx, vendor);
      pool.prepare(3000 * durationS);
      return runLoad({ baseUrl: service.baseUrl, connections, pool, durationS, signal: ctx.cleanup.signal });
    }));
  }
  await Promise.all(targets.map(({ db }) => db.query('ANALYZE')));
}

export async function runChangesPhases(ctx: BenchContext, results: ChangesResults): Promise<void> {
  ctx.fileHost.resumeHolding(); // the workers wait on the notices' file_urls all phase, as in phase 4; released before each service stops
  try {
    await runCost(ctx, results);
    ctx.fileHost.resumeHolding();
    await runFeed(ctx, results);
  } finally {
    ctx.fileHost.stopHolding();
  }
}

async function runCost(ctx: BenchContext, results: ChangesResults): Promise<void> {
  const urls = { off: await ctx.server.createDatabase(`bench_${ctx.stamp}_changes_off`), on: await ctx.server.createDatabase(`bench_${ctx.stamp}_changes_on`) };
  // A setting of the database, read by every connection as it opens: set before the service (and the bench's pool) connect.
  const admin = new pg.Client({ connectionString: urls.off });
  await admin.connect();
  await admin.query(`ALTER DATABASE "bench_${ctx.stamp}_changes_off" SET webhook_receiver.bench_skip_changes = 'on'`).finally(() => admin.end());
  const dirs = { off: 'service-changes-off', on: 'service-changes-on' };
  const services = {
    off: await ctx.startService('the service, change rows off (bench switch)', urls.off, dirs.off, { API_PORT: '' }),
    on: await ctx.startService('the service, change rows on', urls.on, dirs.on, { API_PORT: '' }),
  };
  const dbs = { off: openPool(urls.off, ctx.cleanup), on: openPool(urls.on, ctx.cleanup) };
  try {
    ctx.say('9: filling both databases for a few seconds (unmeasured), then ANALYZE');
    await fillAndAnalyze(ctx, [{ service: services.off, db: dbs.off }, { service: services.on, db: dbs.on }]);
    for (let round = 1; round <= ctx.o.changesRounds; round++) {
      for (const vendor of VENDORS) {
        for (const changes of round % 2 === 1 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
          ctx.say(`9: ${vendor} at c=${ctx.o.connections}, change rows ${changes} (round ${round})`);
          results.cost.push({ vendor, changes, round, ...(await measureTurn(ctx, services[changes], dbs[changes], vendor, ctx.load)) });
        }
      }
    }
    const setting = (await dbs.off.query<{ s: string }>("SELECT coalesce(current_setting('webhook_receiver.bench_skip_changes', true), '(unset)') AS s")).rows[0]!.s;
    results.totals = { off: await countRows(dbs.off, 'SELECT count(*) AS n FROM changes'), on: await countRows(dbs.on, 'SELECT count(*) AS n FROM changes'), setting };
  } finally {
    ctx.fileHost.stopHolding(); // or the services' stop waits for their held downloads
    await Promise.all([services.off.stop(), services.on.stop()]);
    for (const [changes, dir] of Object.entries(dirs)) results.logs.push({ service: `9, change rows ${changes}`, ...(await logLevels(path.join(ctx.tmpDir, `${dir}.log`))) });
  }
}

/** One reader of the feed from `cursor`: `page(after)` is the next page's ids and cursor; pages back to back while full, else after `idle` (a long
 *  poll waits in `page`). `stop` lets the page in flight finish: a long poll cut short by its client is not what a PMS does. */
function startReader(name: string, cursor: string, page: (after: string) => Promise<{ ids: string[]; next: string }>, idle: (signal: AbortSignal) => Promise<unknown>) {
  const stop = new AbortController();
  const state = { name, cursor, reads: 0, ids: new Set<string>(), errors: 0, firstError: '' };
  const done = (async () => {
    while (!stop.signal.aborted) {
      try {
        const { ids, next } = await page(state.cursor);
        state.reads += ids.length;
        for (const id of ids) state.ids.add(id);
        state.cursor = next;
        if (ids.length < PAGE_ROWS) await idle(stop.signal).catch(() => undefined);
      } catch (err) {
        if (stop.signal.aborted) break;
        state.errors += 1;
        state.firstError ||= (err as Error).message;
        await sleep(100);
      }
    }
  })();
  return { state, stop: () => (stop.abort(), done) };
}
type Reader = ReturnType<typeof startReader>;

/** A cursor `c1.<txid>.<id>` ('' the start) as a pair to compare. */
const positionOf = (cursor: string) => {
  const match = /^c1\.(\d+)\.(\d+)$/.exec(cursor);
  return match ? [BigInt(match[1]!), BigInt(match[2]!)] as const : ([0n, 0n] as const);
};
const atOrPast = (cursor: string, head: string) => {
  const [[t, i], [ht, hi]] = [positionOf(cursor), positionOf(head)];
  return t > ht || (t === ht && i >= hi);
};

/** Polls every 20 ms until every reader's cursor is at or past `head`, or `limitS` pass; the seconds each took (NaN: never). */
async function catchUp(readers: Reader[], head: string, signal: AbortSignal, limitS = 120): Promise<number[]> {
  const start = performance.now();
  const after = readers.map(() => Number.NaN);
  while (after.some(Number.isNaN) && performance.now() - start < limitS * 1000) {
    for (const [i, reader] of readers.entries()) {
      if (Number.isNaN(after[i]) && atOrPast(reader.state.cursor, head)) after[i] = (performance.now() - start) / 1000;
    }
    if (after.some(Number.isNaN)) await sleep(20, undefined, { signal });
  }
  return after;
}

async function runFeed(ctx: BenchContext, results: ChangesResults): Promise<void> {
  const url = await ctx.server.createDatabase(`bench_${ctx.stamp}_changes_feed`);
  const apiPort = await freePort();
  const dir = 'service-changes-feed';
  const service = await ctx.startService('the service, change feed read', url, dir, { API_PORT: String(apiPort) });
  const db = openPool(url, ctx.cleanup); // the bench's counts
  const sqlReader = openPool(url, ctx.cleanup); // the SQL reader's own connection
  const consumers = createDatabase({ url, poolSize: 1, connectTimeoutMs: 5000 });
  const { token } = await addConsumer(consumers, { name: 'bench' }).finally(() => closeDatabase(consumers));
  const head = async () => (await db.query<{ head: string }>('SELECT receiver_v1.changes_head() AS head')).rows[0]!.head;
  ctx.say('10: filling the database for a few seconds (unmeasured), then ANALYZE; the readers start at the head after it');
  await fillAndAnalyze(ctx, [{ service, db }]);
  const start = await head();
  const [st, si] = positionOf(start);
  /** Visible changes after the readers' start. */
  const visibleSql = `SELECT count(*) AS n FROM changes c WHERE (c.txid, c.id) > ('${st}'::xid8, ${si}) AND c.txid < pg_snapshot_xmin(pg_current_snapshot())`;
  const kinds = [
    // A long poll: answered at once when there are changes, else when the service is notified of some (or after 2 s).
    { name: `GET /v1/changes?limit=${PAGE_ROWS}&wait=2`, idle: async () => undefined, page: async (after: string) => {
      const response = await fetch(`http://127.0.0.1:${apiPort}/v1/changes?after=${encodeURIComponent(after)}&limit=${PAGE_ROWS}&wait=2`, { headers: { authorization: `Bearer ${token}` } });
      if (!response.ok) throw new Error(`GET /v1/changes answered ${response.status}: ${(await response.text()).slice(0, 200)}`);
      const page = (await response.json()) as { changes: { id: string }[]; next: string };
      return { ids: page.changes.map((c) => c.id), next: page.next };
    } },
    // A PMS on PostgreSQL, polling ten times a second once it has read everything.
    { name: `receiver_v1.changes_after($1, ${PAGE_ROWS})`, idle: (signal: AbortSignal) => sleep(100, undefined, { signal }), page: async (after: string) => {
      const { rows } = await sqlReader.query<{ id: string; cursor: string }>(`SELECT id::text, cursor FROM receiver_v1.changes_after($1, ${PAGE_ROWS})`, [after]);
      return { ids: rows.map((r) => r.id), next: rows.at(-1)?.cursor ?? after };
    } },
  ];
  const readers = kinds.map((k) => startReader(k.name, start, k.page, k.idle));
  try {
    for (const vendor of VENDORS) {
      ctx.say(`10: ${vendor} at c=${ctx.o.connections}, the feed read meanwhile through GET /v1/changes and receiver_v1.changes_after`);
      let before = { rows: 0, reads: [0, 0] };
      const { load, cpu } = await warmAndRun(service, deliveries(ctx, vendor), ctx.load,
        async () => void (before = { rows: await countRows(db, 'SELECT count(*) AS n FROM changes'), reads: readers.map((r) => r.state.reads) }));
      // The load has ended: what each reader has read, against what it could read (every visible change).
      const reads = readers.map((r) => r.state.ids.size);
      const [visible, written, at] = [await countRows(db, visibleSql), await countRows(db, 'SELECT count(*) AS n FROM changes'), await head()];
      const after = await catchUp(readers, at, ctx.cleanup.signal);
      results.feed.push({ vendor, load, cpu, written: written - before.rows, readers: readers.map((r, i) => ({ name: r.state.name,
        readInWindow: reads[i]! - before.reads[i]!, lagAtStop: Math.max(0, visible - reads[i]!), caughtUpAfterS: after[i]!, errors: r.state.errors })) });
    }
    // Every change from the readers' start to the head, read once by each reader; a change read but not in the table would be one made up.
    const finalHead = await head();
    await catchUp(readers, finalHead, ctx.cleanup.signal);
    await Promise.all(readers.map((r) => r.stop()));
    const [t, i] = positionOf(finalHead);
    const { rows } = await db.query<{ id: string; due: boolean }>(`SELECT id::text AS id, (txid, id) <= ($1::text::xid8, $2::bigint) AS due FROM changes
      WHERE (txid, id) > ($3::text::xid8, $4::bigint)`, [String(t), String(i), String(st), String(si)]);
    const all = new Set(rows.map((r) => r.id));
    const due = rows.filter((r) => r.due);
    results.check = readers.map(({ state }) => ({ name: state.name, reads: state.reads, distinct: state.ids.size, due: due.length,
      missing: due.filter((r) => !state.ids.has(r.id)).length, unknown: [...state.ids].filter((id) => !all.has(id)).length }));
    // The backlog: how fast a reader that is behind catches up, with no load.
    results.backlog = [];
    for (const k of kinds) {
      ctx.say(`10: a new reader through ${k.name}, from the feed's start to the head, with no load`);
      const reader = startReader(k.name, '', k.page, k.idle);
      const [seconds] = await catchUp([reader], finalHead, ctx.cleanup.signal, 600);
      await reader.stop();
      results.backlog.push({ name: k.name, changes: reader.state.reads, seconds: seconds! });
      readers.push(reader); // its errors are reported with the others'
    }
    for (const { state } of readers) if (state.errors > 0) results.logs.push({ service: `10, reader ${state.name}`, warnings: 0, errors: state.errors, expected: 0, first: state.firstError });
  } finally {
    await Promise.all(readers.map((r) => r.stop()));
    ctx.fileHost.stopHolding();
    await service.stop();
    results.logs.push({ service: '10, the feed', ...(await logLevels(path.join(ctx.tmpDir, `${dir}.log`))) });
  }
}

/** Pino's JSON lines at warn (40) and error (50) or above, the switch's own error line apart; the first error's `msg` (and its err's message). */
async function logLevels(logPath: string): Promise<{ warnings: number; errors: number; expected: number; first?: string }> {
  const counts = { warnings: 0, errors: 0, expected: 0, first: undefined as string | undefined };
  for (const line of (await readFile(logPath, 'utf8').catch(() => '')).split('\n')) {
    const level = Number(/"level":(\d+)/.exec(line)?.[1] ?? 0);
    if (level >= 50 && line.includes('webhook_receiver.bench_skip_changes on')) counts.expected += 1;
    else if (level >= 50) counts.errors += 1;
    else if (level >= 40) counts.warnings += 1;
    if (level >= 50 && counts.first === undefined && !line.includes('webhook_receiver.bench_skip_changes on')) {
      try {
        const parsed = JSON.parse(line.slice(line.indexOf('{'))) as { msg?: string; err?: { message?: string } };
        counts.first = [parsed.msg, parsed.err?.message].filter(Boolean).join(': ');
      } catch {
        counts.first = line.slice(0, 200);
      }
    }
  }
  return counts;
}
