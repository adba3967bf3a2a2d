import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SOURCES_KEY } from '../helpers/app.js';
import { waitFor } from '../helpers/wait.js';
import { isAcknowledged, runLoad, sendPatiro, sendPhysitrack, summarise, type Outcome } from './senders.js';
import { restartServiceProcess } from './service-process.js';
import { checkStoredOnce, countersMatchReceipts, journalRecords, pdfUrls, readiness, startFaultRig, waitReplayed, type FaultRig } from './spool-helpers.js';

// kill -9 in the middle of concurrent deliveries while PostgreSQL is away, so that every 2xx came
// from the spool. The replica restarts while PostgreSQL is still away: it must be ready and serve
// the environment's source and the clinics' table sources (from its copy of the sources table).
// When PostgreSQL is back, what both processes spooled is written, through one more kill -9 in the
// middle of the replay: nothing acknowledged is lost, and what was fsynced before a kill (answered
// or not, written or not) is counted once.

let rig: FaultRig;

beforeAll(async () => {
  rig = await startFaultRig({ spool: 'kill9', tableSources: true, env: { SOURCES_SECRET_KEY: TEST_SOURCES_KEY } });
});
afterAll(() => rig?.close());

const count = async (sql: string) => Number((await rig.database.pool.query(sql)).rows[0].n);

describe('kill -9 under load while PostgreSQL is away', () => {
  it('restarts ready from the spool and the local sources, and later writes every acknowledged delivery exactly once', async () => {
    const { database, proxy, host, client, service, spoolDir, sources } = rig;
    // The local copy of the sources table is written once the table has been read.
    await waitFor(() => existsSync(path.join(spoolDir, 'sources.json')), 5000);

    proxy.cut({ newConnections: 'refuse' });
    const nextPdf = pdfUrls(host, 'kill9');
    const to = (base: string): (() => Promise<Outcome>)[] => [
      () => sendPatiro(client, base),
      () => sendPatiro(client, base, { sourceId: sources.patiro.id, secret: sources.patiro.secret }),
      () => sendPhysitrack(client, base, nextPdf()),
      () => sendPhysitrack(client, base, nextPdf(), { sourceId: sources.physitrack.id, apiKey: sources.physitrack.apiKey }),
    ];
    const targets = to(service.baseUrl);
    let next = 0;
    let acknowledgedSoFar = 0;
    let killedAt = 0;
    const send = async () => {
      const outcome = await targets[next++ % targets.length]!();
      if (isAcknowledged(outcome)) acknowledgedSoFar += 1;
      return outcome;
    };
    // 8 senders; kill -9 once 300 deliveries were acknowledged from the spool, mid-stream, and
    // keep sending for half a second against the dead service.
    const load = runLoad({ senders: 8, send, stop: () => killedAt > 0 && Date.now() - killedAt > 500 });
    await waitFor(() => acknowledgedSoFar >= 300, 30_000, 5);
    killedAt = Date.now();
    await service.kill9();
    const outcomes = await load;
    const beforeKill = await journalRecords(spoolDir);

    // Restarted on the same port and spool, PostgreSQL still away.
    const restarted = await restartServiceProcess(service);
    await restarted.waitReady();
    const ready = await readiness(restarted.baseUrl);
    const after: Outcome[] = [];
    for (let round = 0; round < 5; round++) after.push(...(await Promise.all(to(restarted.baseUrl).map((send) => send()))));

    const records = await journalRecords(spoolDir);
    const acknowledged = [...outcomes, ...after].filter(isAcknowledged);
    const inSpool = new Set(records.map((r) => `${r.vendor} ${r.id}`));
    const lostBeforeRestore = acknowledged.filter((o) => !inSpool.has(`${o.vendor} ${o.id}`)).map((o) => o.id);
    const answeredAfterKill = outcomes.filter((o) => o.status !== undefined && o.startedAt > killedAt).length;
    const spooledNotAcknowledged = beforeKill.filter((r) => !acknowledged.some((o) => o.vendor === r.vendor && o.id === r.id)).length;

    // PostgreSQL back: the replay starts, and is killed half-way (some written, some not); the
    // next process replays what is left, files already committed but not yet removed included.
    await proxy.restore();
    const restoredAt = Date.now();
    let writtenAtKill = 0;
    await waitFor(async () => (writtenAtKill = await count('SELECT count(*) AS n FROM webhook_audit WHERE receipt_id IS NOT NULL')) >= records.length / 3, 20_000, 5);
    await restarted.kill9();
    const leftAtKill = (await journalRecords(spoolDir)).length;
    const third = await restartServiceProcess(restarted);
    await third.waitReady();
    await waitReplayed(third.baseUrl);
    const replayedMs = Date.now() - restoredAt;

    const patiroRows = await count('SELECT count(*) AS n FROM patiro_events');
    const physitrackRows = await count('SELECT count(*) AS n FROM physitrack_deliveries');
    console.log(
      `[spool kill -9 while away] sent ${outcomes.length} before the restart ${JSON.stringify(summarise(outcomes))}, ` +
        `acknowledged ${outcomes.filter(isAcknowledged).length}; in the spool at the kill ${beforeKill.length} records (${spooledNotAcknowledged} fsynced but never answered); ` +
        `restarted: /readyz ${ready.status} ${JSON.stringify({ database: ready.database, spool: ready.spool })}, after the restart ${JSON.stringify(summarise(after))}; ` +
        `replay killed with ${writtenAtKill} written and ${leftAtKill} records left in the spool; ${records.length} records replayed in all ${replayedMs} ms after the restore; tables: ${patiroRows} events, ${physitrackRows} deliveries`,
    );

    expect(acknowledgedSoFar).toBeGreaterThanOrEqual(300);
    expect(answeredAfterKill).toBe(0); // the kill really stopped the service mid-way
    expect(ready).toMatchObject({ status: 200, database: 'unavailable', spool: { state: 'ok' } });
    expect(ready.spool!.records).toBeGreaterThanOrEqual(beforeKill.length);
    // Both sources of both vendors are served while PostgreSQL is away, the table ones from the local copy.
    expect(summarise(after)).toEqual({ 204: after.length });
    expect(lostBeforeRestore).toEqual([]);
    expect(writtenAtKill).toBeLessThan(records.length); // the kill came mid-replay

    // Every spooled record (acknowledged or not) is written once, and nothing else is.
    const everyRecord = records.map((r) => ({ id: r.id, vendor: r.vendor, sourceId: r.sourceId, startedAt: r.receivedAt.getTime(), latencyMs: 0 }) as Outcome);
    expect((await checkStoredOnce(database.pool, everyRecord)).problems).toEqual([]);
    expect(patiroRows + physitrackRows).toBe(records.length);
    // And the acknowledged ones arrived when they were sent.
    expect((await checkStoredOnce(database.pool, acknowledged)).problems).toEqual([]);
    const counters = await countersMatchReceipts(database.pool);
    expect(counters).toEqual({ patiro: [patiroRows, patiroRows], physitrack: [physitrackRows, physitrackRows] });
  });
});
