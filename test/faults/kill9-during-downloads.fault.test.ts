import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { samplePdf, startFileHost, type FileHost, servePdfSlowly } from '../helpers/https-file-host.js';
import { waitFor } from '../helpers/wait.js';
import { allDone, deliveryRows, waitForDeliveries } from './deliveries.js';
import { createClient, sendPhysitrackNotice } from './senders.js';
import { killAllServiceProcesses, restartServiceProcess, startServiceProcess } from './service-process.js';

// kill -9 while PDFs are downloading: the rows stay `downloading` with a lease, and after a restart
// they come due again when the lease runs out and end `done`; nobody repairs anything by hand.

const DELIVERIES = 10;
const LEASE_SECONDS = 3;

let database: TestDatabase;
let host: FileHost;
const client = createClient();

beforeAll(async () => {
  database = await createTestDatabase();
  host = await startFileHost();
});
afterAll(async () => {
  await killAllServiceProcesses();
  await client.close();
  await host?.close();
  await database?.drop();
});

describe('kill -9 while PDFs are downloading', () => {
  it('finishes every delivery after a restart, once the leases of the killed worker run out', async () => {
    const env = { DOWNLOAD_CONCURRENCY: String(DELIVERIES), DOWNLOAD_LEASE_SECONDS: String(LEASE_SECONDS) };
    const service = await startServiceProcess({ databaseUrl: database.url, env });
    await service.waitReady();

    const expected = new Map<string, string>(); // file URL → sha256 of its PDF
    for (let i = 1; i <= DELIVERIES; i++) {
      const pdf = samplePdf(20_000);
      host.route(`/slow/${i}.pdf`, servePdfSlowly(pdf, 1000));
      expected.set(host.url(`/slow/${i}.pdf`), createHash('sha256').update(pdf).digest('hex'));
    }
    const answers = await Promise.all([...expected.keys()].map((url) => sendPhysitrackNotice(client, service.baseUrl, url)));
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 204));

    // Every PDF has been asked for and none can have finished: kill now.
    await waitFor(() => host.requestCount() >= DELIVERIES, 10_000);
    const killedAt = Date.now();
    await service.kill9();
    const atKill = await deliveryRows(database.pool);
    const inFlight = atKill.filter((r) => r.download_status === 'downloading');

    const restarted = await restartServiceProcess(service);
    await restarted.waitReady();
    const final = await waitForDeliveries(database.pool, allDone(DELIVERIES), 20_000);
    const finishedMs = Date.now() - killedAt;
    console.log(
      `[kill -9 during downloads] ${inFlight.length}/${DELIVERIES} downloading at the kill; all done ${finishedMs} ms after it ` +
        `(lease ${LEASE_SECONDS} s); file host requests ${host.requestCount()}`,
    );

    expect(inFlight.length).toBe(DELIVERIES);
    expect(final).toHaveLength(DELIVERIES);
    for (const row of final) {
      const before = atKill.find((r) => r.id === row.id)!;
      expect(row.sha256).toBe(expected.get(row.file_url));
      expect(row.attempts).toBe(before.attempts + 1); // claimed once more, by the new process
      // Not taken over before the killed worker's lease ended.
      expect(row.downloaded_at!.getTime()).toBeGreaterThanOrEqual(before.locked_until!.getTime());
    }
  });
});
