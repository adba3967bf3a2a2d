import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { patiroEvent } from '../helpers/patiro.js';
import { isAcknowledged, runLoad, sendPatiro, sendPhysitrack, summarise, type Outcome } from './senders.js';
import { checkStoredOnce, journalRecords, pdfUrls, readiness, startFaultRig, waitReplayed, type FaultRig, type Readiness } from './spool-helpers.js';

// The spool has a bound (SPOOL_MAX_BYTES, here its minimum, 1 MiB). PostgreSQL away and the spool
// full: every delivery is refused 503 + Retry-After (the vendor retries), never acknowledged
// without being on disk, and /readyz turns 503 so the load balancer sends elsewhere. Once
// PostgreSQL is back, everything acknowledged is stored.

const MAX_BYTES = 1024 * 1024;

let rig: FaultRig;

beforeAll(async () => {
  rig = await startFaultRig({ spool: 'full', env: { SPOOL_MAX_BYTES: String(MAX_BYTES) } });
});
afterAll(() => rig?.close());

/** A Patiro event of about 8 KiB, so that a hundred-odd fill the spool. */
const bigEvent = () => patiroEvent({ data: { id: 'patient-big', notes: 'x'.repeat(8000) } });

describe('a full spool while PostgreSQL is away', () => {
  it('refuses with 503 + Retry-After, never acknowledges what is not on disk, turns /readyz 503, and stores every acknowledged delivery later', async () => {
    const { database, proxy, host, client, service, spoolDir } = rig;
    proxy.cut({ newConnections: 'refuse' });
    const nextPdf = pdfUrls(host, 'full');
    let next = 0;
    let refusals = 0;
    const send = async (): Promise<Outcome> => {
      const outcome = (next++ % 4 === 3) ? await sendPhysitrack(client, service.baseUrl, nextPdf()) : await sendPatiro(client, service.baseUrl, { event: bigEvent() });
      if (!isAcknowledged(outcome)) refusals += 1;
      return outcome;
    };
    // /readyz as a load balancer polls it, while the spool fills.
    const probes: { at: number; ready: Readiness }[] = [];
    let filling = true;
    const poll = (async () => {
      while (filling) {
        probes.push({ at: Date.now(), ready: await readiness(service.baseUrl) });
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const startedAt = Date.now();
    const outcomes = await runLoad({ senders: 4, send, stop: () => refusals >= 40, maxPerSender: 300 });
    filling = false;
    await poll;
    const fillMs = Date.now() - startedAt;
    const readyAtEnd = await readiness(service.baseUrl);
    const records = await journalRecords(spoolDir);

    const acknowledged = outcomes.filter(isAcknowledged);
    const refused = outcomes.filter((o) => !isAcknowledged(o));
    const inSpool = new Set(records.map((r) => `${r.vendor} ${r.id}`));
    const acknowledgedNotOnDisk = acknowledged.filter((o) => !inSpool.has(`${o.vendor} ${o.id}`)).map((o) => o.id);
    const firstRefusal = Math.min(...refused.map((o) => o.startedAt + o.latencyMs));
    const firstNotReady = probes.find((p) => p.ready.status === 503)?.at ?? Infinity;
    const acknowledgedAfterFirstRefusal = acknowledged.filter((o) => o.startedAt > firstRefusal).length;

    await proxy.restore();
    const restoredAt = Date.now();
    await waitReplayed(service.baseUrl);
    const replayedMs = Date.now() - restoredAt;
    const after = await sendPatiro(client, service.baseUrl, { event: bigEvent() });

    console.log(
      `[spool full] ${fillMs} ms to fill: sent ${outcomes.length} ${JSON.stringify(summarise(outcomes))}, ${records.length} records and ` +
        `${readyAtEnd.spool?.bytes} bytes in the spool (limit ${MAX_BYTES}); acknowledged after the first refusal: ${acknowledgedAfterFirstRefusal}; ` +
        `/readyz turned 503 ${firstNotReady - firstRefusal} ms relative to the first refusal, at the end ${readyAtEnd.status} ${JSON.stringify(readyAtEnd)}; ` +
        `replayed ${replayedMs} ms after PostgreSQL came back; then a delivery ${after.status}`,
    );

    expect(acknowledged.length).toBeGreaterThanOrEqual(50);
    expect(refused.length).toBeGreaterThanOrEqual(40);
    for (const o of refused) expect({ status: o.status, retryAfter: o.retryAfter }).toEqual({ status: 503, retryAfter: '5' });
    expect(acknowledgedNotOnDisk).toEqual([]);
    expect(readyAtEnd).toMatchObject({ status: 503, database: 'unavailable', spool: { state: 'ok' } });
    expect(firstNotReady).toBeLessThan(Infinity);

    expect((await checkStoredOnce(database.pool, acknowledged)).problems).toEqual([]);
    expect(after.status).toBe(204);
    expect((await readiness(service.baseUrl)).status).toBe(200);
    // Last, so that everything above is checked whatever this says: the bound holds.
    expect(readyAtEnd.spool!.bytes, 'the spool grew past SPOOL_MAX_BYTES').toBeLessThanOrEqual(MAX_BYTES);
  });
});
