import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SOURCES_KEY } from '../helpers/app.js';
import { samplePdf } from '../helpers/https-file-host.js';
import { deliveryRows, waitForDeliveries } from './deliveries.js';
import { isAcknowledged, runLoad, sendPatiro, sendPhysitrack, summarise, type Outcome } from './senders.js';
import { checkStoredOnce, countersMatchReceipts, latencyFigures, pdfUrls, readiness, startFaultRig, waitReplayed, type FaultRig } from './spool-helpers.js';

// PostgreSQL goes away (through a TCP proxy) under load from both vendors and two sources each (the
// environment's and a clinic's table source). With the spool on, every verified delivery is
// answered 204 within the ack budget; once the proxy reopens, the spool is replayed and every
// acknowledged delivery is in its table exactly once, with the time it arrived, and every PDF
// announced during the outage is downloaded. One service lives through both kinds of outage.

const SENDERS = 8;
const OUTAGE_MS = 3000;

let rig: FaultRig;
const pdf = samplePdf(1024);

beforeAll(async () => {
  rig = await startFaultRig({ spool: 'outage', tableSources: true, env: { SOURCES_SECRET_KEY: TEST_SOURCES_KEY, DOWNLOAD_CONCURRENCY: '16' } });
});
afterAll(() => rig?.close());

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Deliveries the service logged as spooled (one info line per request). */
const spooledLogged = () => rig.service.logEntries().filter((e) => typeof e.msg === 'string' && e.msg.includes('spooled (PostgreSQL is away)')).length;

describe.each(['refuse', 'blackhole'] as const)('an outage under load (new connections: %s)', (mode) => {
  it('answers every delivery 204 within 2 s, then stores each exactly once with its receive time and downloads every PDF', async () => {
    const { database, proxy, host, client, service, sources } = rig;
    const nextPdf = pdfUrls(host, `outage-${mode}`, pdf);
    const targets: (() => Promise<Outcome>)[] = [
      () => sendPatiro(client, service.baseUrl),
      () => sendPatiro(client, service.baseUrl, { sourceId: sources.patiro.id, secret: sources.patiro.secret }),
      () => sendPhysitrack(client, service.baseUrl, nextPdf()),
      () => sendPhysitrack(client, service.baseUrl, nextPdf(), { sourceId: sources.physitrack.id, apiKey: sources.physitrack.apiKey }),
    ];
    let next = 0;
    const spooledBefore = spooledLogged();
    let cutAt = 0;
    let restoredAt = 0;
    let during: Awaited<ReturnType<typeof readiness>> | undefined;
    // Live load first, then the cut, 3 s of outage, the restore, and live load again for a moment:
    // live deliveries overtake the spooled ones being replayed.
    const outage = async () => {
      await sleep(300);
      proxy.cut({ newConnections: mode });
      cutAt = Date.now();
      await sleep(OUTAGE_MS - 300);
      during = await readiness(service.baseUrl);
      await sleep(300);
      await proxy.restore();
      restoredAt = Date.now();
    };
    const [outcomes] = await Promise.all([
      runLoad({ senders: SENDERS, send: () => targets[next++ % targets.length]!(), stop: () => restoredAt > 0 && Date.now() - restoredAt > 500 }),
      outage(),
    ]);

    await waitReplayed(service.baseUrl);
    const replayedMs = Date.now() - restoredAt;
    const acknowledged = outcomes.filter(isAcknowledged);
    const urls = new Set(acknowledged.filter((o) => o.vendor === 'physitrack').map((o) => o.id));
    await waitForDeliveries(database.pool, (rows) => rows.filter((r) => urls.has(r.file_url) && r.download_status === 'done').length === urls.size, 40_000);
    const downloadedMs = Date.now() - restoredAt;

    const inCut = outcomes.filter((o) => o.startedAt >= cutAt && o.startedAt < restoredAt);
    const spooled = spooledLogged() - spooledBefore;
    const byVendorSource: Record<string, number> = {};
    for (const o of acknowledged) {
      const key = `${o.vendor}/${o.sourceId === 'default' ? 'default' : 'table'}`;
      byVendorSource[key] = (byVendorSource[key] ?? 0) + 1;
    }
    console.log(
      `[spool outage ${mode}] sent ${outcomes.length} ${JSON.stringify(summarise(outcomes))} (${JSON.stringify(byVendorSource)}); ` +
        `during the cut ${inCut.length}, spooled ${spooled}; latency all ${latencyFigures(outcomes)}, during the cut ${latencyFigures(inCut)}; ` +
        `/readyz near the end of the cut ${during?.status} ${JSON.stringify({ database: during?.database, spool: during?.spool })}; ` +
        `spool replayed ${replayedMs} ms after restore; ${urls.size} PDFs downloaded ${downloadedMs} ms after restore`,
    );

    for (const o of outcomes) expect({ id: o.id, status: o.status, fast: o.latencyMs < 2000 }).toEqual({ id: o.id, status: 204, fast: true });
    expect(inCut.length).toBeGreaterThanOrEqual(100); // the load really ran through the outage
    expect(spooled).toBeGreaterThanOrEqual(inCut.length / 2);
    expect(during).toMatchObject({ status: 200, database: 'unavailable', spool: { state: 'ok' } });
    expect(during!.spool!.records).toBeGreaterThan(0);

    const check = await checkStoredOnce(database.pool, acknowledged);
    expect(check.problems).toEqual([]);
    const counters = await countersMatchReceipts(database.pool);
    expect(counters.patiro[0]).toBe(counters.patiro[1]);
    expect(counters.physitrack[0]).toBe(counters.physitrack[1]);
    const sha256 = createHash('sha256').update(pdf).digest('hex');
    const mine = (await deliveryRows(database.pool)).filter((r) => urls.has(r.file_url));
    expect(mine.map((r) => r.sha256)).toEqual(mine.map(() => sha256));
  });
});
