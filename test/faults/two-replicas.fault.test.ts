import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { samplePdf, startFileHost, type FileHost, type Route } from '../helpers/https-file-host.js';
import { waitFor } from '../helpers/wait.js';
import { allDone, waitForDeliveries } from './deliveries.js';
import { createClient, runLoad, sendPhysitrackNotice, summarise, type Outcome } from './senders.js';
import { killAllServiceProcesses, startServiceProcess, type ServiceProcess } from './service-process.js';

// Two replicas on one database share the queue: every delivery is downloaded exactly once, by
// one of them, whichever process received the notice.

const DELIVERIES = 100;

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

/** A PDF answered after a short pause, so both replicas' downloads overlap in time. */
function pdfAfter(bytes: Buffer, delayMs: number): Route {
  return (_request, response) => {
    const timer = setTimeout(() => response.writeHead(200, { 'content-type': 'application/pdf', 'content-length': bytes.length }).end(bytes), delayMs);
    response.on('close', () => clearTimeout(timer));
  };
}

/** Delivery ids a replica logged with `msg`: received ('physitrack delivery stored') or downloaded. */
function loggedIds(service: ServiceProcess, msg: string): string[] {
  return service.logEntries().filter((e) => e.msg === msg).map((e) => String(e.deliveryId));
}

describe('two replicas on one database', () => {
  it('download each of 100 deliveries exactly once between them', async () => {
    const replicas = await Promise.all([startServiceProcess({ databaseUrl: database.url }), startServiceProcess({ databaseUrl: database.url })]);
    await Promise.all(replicas.map((r) => r.waitReady()));

    const expected = new Map<string, string>(); // file URL → sha256
    const paths: string[] = [];
    for (let i = 1; i <= DELIVERIES; i++) {
      const pdf = samplePdf(4096);
      const path = `/replicas/${i}.pdf`;
      host.route(path, pdfAfter(pdf, 50));
      paths.push(path);
      expected.set(host.url(path), createHash('sha256').update(pdf).digest('hex'));
    }
    // Half of the notices to each replica, sent concurrently.
    const urls = [...expected.keys()];
    let next = 0;
    const sendNext = (): Promise<Outcome> => {
      const index = next++;
      return sendPhysitrackNotice(client, replicas[index % 2]!.baseUrl, urls[index]!);
    };
    const answers = await runLoad({ senders: 8, send: sendNext, stop: () => next >= DELIVERIES });
    expect(summarise(answers)).toEqual({ 204: DELIVERIES });

    const rows = await waitForDeliveries(database.pool, allDone(DELIVERIES), 60_000);
    // The rows are done; the replicas' last log lines may still be on their way through the pipe.
    const downloaded = () => replicas.map((r) => loggedIds(r, 'pdf downloaded and stored')) as [string[], string[]];
    await waitFor(() => downloaded().flat().length >= DELIVERIES, 5000);
    const [a, b] = downloaded();
    const receivedByA = new Set(loggedIds(replicas[0]!, 'physitrack delivery stored'));
    const crossed = b.filter((id) => receivedByA.has(id)).length + a.filter((id) => !receivedByA.has(id)).length;
    console.log(
      `[two replicas] downloads by replica A: ${a.length}, by replica B: ${b.length} ` +
        `(${crossed} downloaded by the replica that did not receive them); file host requests ${host.requestCount()}`,
    );

    expect(rows).toHaveLength(DELIVERIES);
    for (const row of rows) expect({ sha256: row.sha256, attempts: row.attempts }).toEqual({ sha256: expected.get(row.file_url), attempts: 1 });
    for (const path of paths) expect(host.requestCount(path), path).toBe(1);
    expect(host.requestCount()).toBe(DELIVERIES);
    // Each delivery stored by exactly one replica.
    expect([...a, ...b].sort()).toEqual(rows.map((r) => r.id).sort());
  });
});
