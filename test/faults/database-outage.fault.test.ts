import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { samplePdf, servePdf } from '../helpers/https-file-host.js';
import { waitFor } from '../helpers/wait.js';
import { waitForDeliveries } from './deliveries.js';
import { get, isAcknowledged, percentile, runLoad, sendPatiroEvent, sendPhysitrackNotice, summarise, type Outcome } from './senders.js';
import { startFaultRig, type FaultRig } from './spool-helpers.js';

// The database goes away under a running service (through a TCP proxy) and comes back. During the
// outage every delivery gets a fast 503 + Retry-After; afterwards the same process takes deliveries
// and downloads again. One service process lives through both outages: recovery is repeatable.

let rig: FaultRig;

beforeAll(async () => {
  rig = await startFaultRig();
});
afterAll(() => rig?.close());

async function storedEventIds(ids: string[]): Promise<Set<string>> {
  const { rows } = await rig.database.pool.query<{ event_id: string }>('SELECT event_id FROM patiro_events WHERE event_id = ANY($1)', [ids]);
  return new Set(rows.map((r) => r.event_id));
}

let file = 0;
function announceablePdf(): string {
  const path = `/outage/${++file}.pdf`;
  rig.host.route(path, servePdf(samplePdf()));
  return rig.host.url(path);
}

describe.each(['refuse', 'blackhole'] as const)('a database outage (new connections: %s)', (mode) => {
  it('answers 503 + Retry-After within 2 s, keeps /healthz up, and recovers without a restart', async () => {
    const { database, proxy, client, service } = rig;
    const before = await sendPatiroEvent(client, service.baseUrl);
    expect(before.status).toBe(204);

    proxy.cut({ newConnections: mode });
    // /readyz shares one database probe, at most a second old, among all its callers: it turns 503
    // within about a second of the cut (at once, after a write failed for unavailability).
    const cutAt = Date.now();
    await waitFor(async () => (await get(service.baseUrl, '/readyz')).status === 503, 3000, 100);
    const readyTurnedMs = Date.now() - cutAt;
    const readyDuring = await get(service.baseUrl, '/readyz');
    const healthDuring = await get(service.baseUrl, '/healthz');
    const physitrackDuring = await sendPhysitrackNotice(client, service.baseUrl, announceablePdf());
    const loadStarted = Date.now();
    const during = await runLoad({ senders: 4, send: () => sendPatiroEvent(client, service.baseUrl), stop: () => Date.now() - loadStarted > 2500 });
    const healthLate = await get(service.baseUrl, '/healthz');
    const readyLate = await get(service.baseUrl, '/readyz');

    await proxy.restore();
    const restoredAt = Date.now();
    await waitFor(async () => (await get(service.baseUrl, '/readyz')).status === 200, 15_000, 100);
    const readyAfterMs = Date.now() - restoredAt;
    const after = await runLoad({ senders: 4, send: () => sendPatiroEvent(client, service.baseUrl), stop: () => false, maxPerSender: 10 });
    const fileUrl = announceablePdf();
    const physitrackAfter = await sendPhysitrackNotice(client, service.baseUrl, fileUrl);
    expect(physitrackAfter.status).toBe(204);
    await waitForDeliveries(database.pool, (rows) => rows.some((r) => r.file_url === fileUrl && r.download_status === 'done'), 15_000);
    const downloadDoneMs = Date.now() - restoredAt;

    const latencies = during.map((o) => o.latencyMs);
    const answered503 = during.filter((o) => o.status === 503).map((o) => o.id);
    const lateCommits = (await storedEventIds(answered503)).size;
    console.log(
      `[outage ${mode}] during: ${JSON.stringify(summarise(during))}, 503 latency p50 ${percentile(latencies, 50)} ms, ` +
        `p95 ${percentile(latencies, 95)} ms, max ${Math.max(...latencies)} ms; /readyz 503 ${readyTurnedMs} ms after the cut, then ${readyDuring.status} in ${readyDuring.latencyMs} ms, later ${readyLate.status} in ${readyLate.latencyMs} ms; ` +
        `/healthz ${healthDuring.status} in ${healthDuring.latencyMs} ms; physitrack ${physitrackDuring.status} in ${physitrackDuring.latencyMs} ms; ` +
        `503s committed late anyway: ${lateCommits}; ready again ${readyAfterMs} ms after restore; download done ${downloadDoneMs} ms after restore`,
    );

    expect([readyDuring.status, readyLate.status]).toEqual([503, 503]);
    expect(readyLate.latencyMs).toBeLessThan(2000);
    expect(healthDuring.status).toBe(200);
    expect(healthLate.status).toBe(200);
    expect(during.length).toBeGreaterThanOrEqual(8);
    const expect503 = (o: Outcome) => expect({ status: o.status, retryAfter: o.retryAfter, fast: o.latencyMs < 2000 }).toEqual({ status: 503, retryAfter: '5', fast: true });
    for (const outcome of [...during, physitrackDuring]) expect503(outcome);

    expect(after.map((o) => o.status)).toEqual(after.map(() => 204));
    const acknowledged = [before, ...during, ...after].filter(isAcknowledged).map((o) => o.id);
    const stored = await storedEventIds(acknowledged);
    expect(acknowledged.filter((id) => !stored.has(id))).toEqual([]);
  });
});
