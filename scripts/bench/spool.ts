import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { countRows, openPool } from './database.js';
import { createPool, patiroDelivery, percentiles, physitrackDelivery, warmAndRun, type Latency, type LoadResult, type LoadSettings } from './load.js';
import type { BenchContext } from './options.js';
import { measureWebhook } from './phases.js';
import type { Child, Cleanup, CpuUse } from './processes.js';
import type { WebhookResult } from './report.js';

// Phases 6–8, the spool (issue 19). 6: the healthy path with the spool on and with it off, two services each on a database of its own,
// measured in turns (off, on, then on, off, …: a drift of the machine falls on both alike), then both at once (round 0). 7: a third service, spool on, its PostgreSQL
// behind a TCP proxy that is cut (new connections refused, open ones destroyed): acks/s from the spool, Patiro then Physitrack; then the
// disk's own time for one group file. 8: the proxy restored: how long the spool takes to empty, and whether every delivery acknowledged
// meanwhile is in its table once.

const VENDORS = ['Patiro', 'Physitrack'] as const;
export type SpoolVendor = (typeof VENDORS)[number];
const TABLES: Record<SpoolVendor, [string, string, string]> = {
  Patiro: ['patiro_events', 'event_id', 'delivery_count'], Physitrack: ['physitrack_deliveries', 'patient_id', 'notice_count'] };

/** `acked`: 2xx while away, warm-up included; `rows`: rows of those keys after the replay; `counted`: their delivery (notice) counts summed; `total`: the table's rows. */
export type AwayResult = { vendor: SpoolVendor; load: LoadResult; cpu: CpuUse; acked: number; rows: number; counted: number; total: number };
export type SpoolResults = {
  /** `spooled`: answered from the spool although PostgreSQL was up (a write over its budget), warm-up included; rows counted once replayed.
   *  `counted`: the acked deliveries' delivery (notice) counts summed, so a delivery written twice shows. Round 0: both services at once. */
  healthy: { vendor: SpoolVendor; spool: 'off' | 'on'; round: number; w: WebhookResult; spooled: number; counted: number }[];
  away: AwayResult[];
  /** The journal's files written during 7's measured windows. */
  groups?: { files: number; records: number; bytes: number; windowS: number };
  disk?: { groups: number; bytes: number; elapsedS: number; latency: Latency };
  /** Seconds from the proxy's restore; `auditRows`/`receipts`: webhook_audit's rows and distinct receipt ids, against every 2xx of the service. */
  replay?: { records: number; upAfterS: number; emptyAfterS: number; empty: boolean; replayed: number; rejected: number; auditRows: number; receipts: number; acked: number };
};

const deliveries = (ctx: BenchContext, vendor: SpoolVendor) => {
  if (vendor === 'Patiro') return createPool(patiroDelivery(ctx.secrets.patiro));
  const runId = ctx.stamp + randomBytes(3).toString('hex');
  return createPool(physitrackDelivery(ctx.secrets.physitrack, (i) => ctx.fileHost.holdUrl(`${runId}-${i}`), runId));
};

const readyz = async (service: Child) => (await (await fetch(`${service.baseUrl}/readyz`)).json()) as { database?: string; spool?: { records: number } };
const scrapedAt = new WeakMap<Child, number>();
/** GET /metrics: a metric's samples summed over their labels. The service renders a scrape at most once a second: reads are spaced more. */
async function scrape(service: Child): Promise<(name: string) => number> {
  await sleep(Math.max(0, (scrapedAt.get(service) ?? 0) + 1050 - Date.now()));
  const text = await (await fetch(`${service.baseUrl}/metrics`)).text();
  scrapedAt.set(service, Date.now());
  return (name) => [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((sum, m) => sum + Number(m[1]), 0);
}

/** Deliveries spooled since the service started: waiting, or replayed. */
const spooledBy = async (service: Child) => ((await readyz(service)).spool?.records ?? 0) + (await scrape(service))('webhook_spool_replayed_total');

/** Resolves once the service's spool is empty (at once without a spool), or after 60 s. */
async function spoolEmpty(service: Child, signal: AbortSignal): Promise<void> {
  for (const giveUpAt = Date.now() + 60_000; ((await readyz(service)).spool?.records ?? 0) > 0 && Date.now() < giveUpAt;) await sleep(100, undefined, { signal });
}

export async function runSpoolPhases(ctx: BenchContext, spool: SpoolResults): Promise<void> {
  ctx.fileHost.resumeHolding(); // the workers wait on the notices' file_urls all phase, as in phase 4; released before each service stops
  await runHealthyRounds(ctx, spool);
  ctx.fileHost.resumeHolding();
  await runAway(ctx, spool);
}

async function runHealthyRounds(ctx: BenchContext, results: SpoolResults): Promise<void> {
  const urls = { off: await ctx.server.createDatabase(`bench_${ctx.stamp}_spool_off`), on: await ctx.server.createDatabase(`bench_${ctx.stamp}_spool_on`) };
  const services = {
    off: await ctx.startService('the service, spool off', urls.off, 'service-spool-off'),
    on: await ctx.startService('the service, spool on', urls.on, 'service-spool-on', { SPOOL_DIR: path.join(ctx.tmpDir, 'service-spool-on', 'spool') }),
  };
  const dbs = { off: openPool(urls.off, ctx.cleanup), on: openPool(urls.on, ctx.cleanup) };
  /** `spooledBefore`: spooledBy(services.on) before the phase, read by the caller so that phases at once start together. */
  const measure = async (vendor: SpoolVendor, spool: 'off' | 'on', round: number, load: LoadSettings, spooledBefore: number) => {
    const [table, key, count] = TABLES[vendor];
    const w = await measureWebhook(services[spool], deliveries(ctx, vendor), dbs[spool], [table, key], load, () => spoolEmpty(services[spool], ctx.cleanup.signal));
    const counted = await countRows(dbs[spool], `SELECT coalesce(sum(${count}), 0) AS n FROM ${table} WHERE ${key} = ANY($1::text[])`, [w.load.ackedKeys]);
    return { vendor, spool, round, w, spooled: spool === 'on' ? (await spooledBy(services.on)) - spooledBefore : 0, counted };
  };
  try {
    for (let round = 1; round <= ctx.o.spoolRounds; round++) {
      for (const vendor of VENDORS) {
        for (const spool of round % 2 === 1 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
          ctx.say(`6: ${vendor} at c=${ctx.o.connections}, PostgreSQL up, spool ${spool} (round ${round})`);
          results.healthy.push(await measure(vendor, spool, round, ctx.load, spool === 'on' ? await spooledBy(services.on) : 0));
        }
      }
    }
    // Then both at once, half the connections each: one after the other, other tenants' bursts fall on one side; at once, on both.
    const half = { ...ctx.load, connections: Math.max(1, Math.floor(ctx.o.connections / 2)) };
    for (const vendor of VENDORS) {
      ctx.say(`6: ${vendor}, the two services at once, c=${half.connections} each`);
      const spooledBefore = await spooledBy(services.on);
      results.healthy.push(...(await Promise.all([measure(vendor, 'off', 0, half, 0), measure(vendor, 'on', 0, half, spooledBefore)])));
    }
  } finally {
    ctx.fileHost.stopHolding(); // or the services' stop waits for their held downloads
    await Promise.all([services.off.stop(), services.on.stop()]);
  }
}

async function runAway(ctx: BenchContext, results: SpoolResults): Promise<void> {
  const url = await ctx.server.createDatabase(`bench_${ctx.stamp}_spool_away`);
  const proxy = await startProxy(url, ctx.cleanup);
  const spoolDir = path.join(ctx.tmpDir, 'service-spool-away', 'spool');
  const service = await ctx.startService('the service, spool on, PostgreSQL behind a proxy', proxy.url, 'service-spool-away', { SPOOL_DIR: spoolDir });
  const db = openPool(url, ctx.cleanup); // the bench's own queries go around the proxy
  try {
    proxy.cut();
    const keys: Record<SpoolVendor, string[]> = { Patiro: [], Physitrack: [] };
    const windows: [number, number][] = [];
    for (const vendor of VENDORS) {
      ctx.say(`7: ${vendor} at c=${ctx.o.connections}, PostgreSQL away (the proxy refuses): acks from the spool`);
      let from = 0;
      const { warm, load, cpu } = await warmAndRun(service, deliveries(ctx, vendor), ctx.load, async () => void (from = Date.now()));
      windows.push([from, Date.now()]);
      keys[vendor] = [...warm.ackedKeys, ...load.ackedKeys];
      results.away.push({ vendor, load, cpu, acked: keys[vendor].length, rows: 0, counted: 0, total: 0 });
    }
    results.groups = await groupsWithin(path.join(spoolDir, 'journal'), windows);
    ctx.say('7c: the disk alone: group files made durable one at a time, as the journal does');
    const groupBytes = results.groups.files > 0 ? Math.round(results.groups.bytes / results.groups.files) : 64 * 1024;
    results.disk = await diskGroupCommits(path.join(ctx.tmpDir, 'disk-group-commits'), groupBytes, Math.min(3, ctx.o.durationS));

    ctx.say('8: the proxy restored: replaying the spool into PostgreSQL');
    const records = (await readyz(service)).spool?.records ?? 0;
    const restoredAt = performance.now();
    await proxy.restore();
    const since = () => (performance.now() - restoredAt) / 1000;
    let [upAfterS, left, changedAt] = [Number.NaN, records, since()];
    // Polled every 100 ms; given up after 60 s without progress.
    while (left > 0 && since() - changedAt < 60) {
      await sleep(100, undefined, { signal: ctx.cleanup.signal });
      const now = await readyz(service);
      if (now.database === 'ok' && Number.isNaN(upAfterS)) upAfterS = since();
      if ((now.spool?.records ?? 0) !== left) [left, changedAt] = [now.spool?.records ?? 0, since()];
    }
    const emptyAfterS = since();
    for (const away of results.away) {
      const [table, key, count] = TABLES[away.vendor];
      const found = (await db.query<{ n: string; c: string }>(`SELECT count(*) AS n, coalesce(sum(${count}), 0) AS c FROM ${table} WHERE ${key} = ANY($1::text[])`, [keys[away.vendor]])).rows[0];
      Object.assign(away, { rows: Number(found?.n), counted: Number(found?.c), total: await countRows(db, `SELECT count(*) AS n FROM ${table}`) });
    }
    const audit = (await db.query<{ n: string; r: string }>('SELECT count(*) AS n, count(DISTINCT receipt_id) AS r FROM webhook_audit')).rows[0];
    const metrics = await scrape(service);
    results.replay = { records, upAfterS, emptyAfterS, empty: left === 0, replayed: metrics('webhook_spool_replayed_total'), rejected: metrics('webhook_spool_rejected_total'),
      auditRows: Number(audit?.n), receipts: Number(audit?.r), acked: keys.Patiro.length + keys.Physitrack.length };
  } finally {
    ctx.fileHost.stopHolding();
    await service.stop();
    proxy.cut();
  }
}

/** A TCP proxy in front of PostgreSQL (test/faults/tcp-proxy.ts, reduced to what 7 needs): `cut` stops listening, so new connections are
 *  refused, and destroys the open ones; `restore` listens on the same port again. */
async function startProxy(databaseUrl: string, cleanup: Cleanup) {
  const target = new URL(databaseUrl);
  const sockets = new Set<net.Socket>();
  const onConnection = (client: net.Socket) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
      sockets.add(from);
      from.on('error', () => to.destroy()).on('close', () => (sockets.delete(from), to.destroy())).pipe(to);
    }
  };
  let server = net.createServer(onConnection);
  const listen = (port: number) => new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
  await listen(0);
  const { port } = server.address() as AddressInfo;
  const cut = () => void (server.close(), sockets.forEach((socket) => socket.destroy()));
  cleanup.add('close the TCP proxy', cut);
  return {
    url: Object.assign(new URL(databaseUrl), { hostname: '127.0.0.1', port: String(port) }).toString(),
    cut,
    async restore() {
      // A connection of this host may hold the port as its local end for a moment.
      for (let attempt = 1; ; attempt++, await sleep(50)) {
        server = net.createServer(onConnection);
        try {
          return await listen(port);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 40) throw err;
        }
      }
    },
  };
}

/** The journal's files (named <ms written>-<sequence>-<pid>-<records>.jnl) written within the windows. */
async function groupsWithin(dir: string, windows: [number, number][]) {
  const groups = { files: 0, records: 0, bytes: 0, windowS: windows.reduce((sum, [from, to]) => sum + (to - from) / 1000, 0) };
  for (const name of await readdir(dir)) {
    const match = /^(\d{15})-\d+-\d+-(\d+)\.jnl$/.exec(name);
    if (!match || !windows.some(([from, to]) => Number(match[1]) >= from && Number(match[1]) <= to)) continue;
    Object.assign(groups, { files: groups.files + 1, records: groups.records + Number(match[2]), bytes: groups.bytes + (await stat(path.join(dir, name))).size });
  }
  return groups;
}

/** The disk's part of one group commit, alone: a file of `bytes` written, fsynced, renamed, and its directory fsynced, one after another. */
async function diskGroupCommits(dir: string, bytes: number, durationS: number): Promise<NonNullable<SpoolResults['disk']>> {
  await mkdir(dir, { recursive: true });
  const [data, latencies, start] = [randomBytes(bytes), [] as number[], performance.now()];
  try {
    for (let i = 0; performance.now() - start < durationS * 1000; i++) {
      const t0 = performance.now();
      const file = await open(path.join(dir, `.tmp-${i}`), 'wx');
      await file.writeFile(data).then(() => file.sync()).finally(() => file.close());
      await rename(path.join(dir, `.tmp-${i}`), path.join(dir, `${i}.jnl`));
      const directory = await open(dir, 'r');
      await directory.sync().finally(() => directory.close());
      latencies.push(performance.now() - t0);
    }
    return { groups: latencies.length, bytes, elapsedS: (performance.now() - start) / 1000, latency: percentiles(latencies) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
