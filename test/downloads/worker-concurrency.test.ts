import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/db/client.js';
import { createDownloadQueue } from '../../src/downloads/queue.js';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { samplePdf, servePdf, slowDrip, startFileHost, type FileHost } from '../helpers/https-file-host.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';
import { waitFor } from '../helpers/wait.js';
import { createTestWorker } from '../helpers/worker.js';

let database: TestDatabase;
let t: TestApp;
let host: FileHost;
let otherDb: Database;
let path = 0;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PHYSITRACK_API_KEY: PHYSITRACK_KEY, PHYSITRACK_FILE_URL_HOSTS: 'localhost', DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true' });
  otherDb = createDatabase({ url: database.url, poolSize: 4, connectTimeoutMs: 1000 });
  host = await startFileHost();
});
afterAll(async () => {
  await host.close();
  await otherDb.$disconnect();
  await t.close();
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE physitrack_deliveries, documents, document_owners, webhook_audit');
});

async function announce(route: Parameters<FileHost['route']>[1]): Promise<string> {
  const filePath = `/c/${++path}.pdf`;
  host.route(filePath, route);
  expect((await t.app.inject(physitrackRequest(physitrackNotice({ file_url: host.url(filePath) })))).statusCode).toBe(204);
  return filePath;
}

async function statuses(): Promise<Record<string, number>> {
  const { rows } = await database.pool.query('SELECT download_status AS s, count(*)::int AS n FROM physitrack_deliveries GROUP BY 1');
  return Object.fromEntries(rows.map((r) => [r.s, r.n]));
}

describe('download worker: several workers, crashes and shutdown', () => {
  it('two workers on one database download each of 40 rows exactly once', async () => {
    const paths: string[] = [];
    for (let i = 0; i < 40; i++) paths.push(await announce(servePdf(samplePdf(1000))));
    const a = createTestWorker({ db: t.db, log: t.logs.logger, workerId: 'replica-a', concurrency: 3 });
    const b = createTestWorker({ db: otherDb, log: t.logs.logger, workerId: 'replica-b', concurrency: 3 });
    a.worker.start();
    b.worker.start();
    await waitFor(async () => (await statuses()).done === 40);
    await Promise.all([a.close(), b.close()]);
    expect(paths.map((p) => host.requestCount(p))).toEqual(Array(40).fill(1));
    const { rows } = await database.pool.query('SELECT max(attempts) AS m FROM physitrack_deliveries');
    expect(rows[0].m).toBe(1);
  });

  it('takes over the row of a worker that died mid-download once its lease expires', async () => {
    const filePath = await announce(servePdf(samplePdf()));
    // A worker claims the row, then "dies": it never reports back.
    const dead = createDownloadQueue(otherDb, 'dead-worker', 1);
    const claimed = await dead.claim(5);
    expect(claimed).toHaveLength(1);
    const survivor = createTestWorker({ db: t.db, log: t.logs.logger, workerId: 'survivor' });
    expect(await survivor.worker.runOnce()).toEqual([]); // still leased
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(await survivor.worker.runOnce()).toEqual(['done']);
    await survivor.close();
    expect(host.requestCount(filePath)).toBe(1);
    const { rows } = await database.pool.query('SELECT download_status, attempts FROM physitrack_deliveries');
    expect(rows).toEqual([{ download_status: 'done', attempts: 2 }]);
    // The dead worker's late report is ignored: it no longer holds the lease.
    expect(await dead.markFailed(claimed[0]!, 'late', null)).toBe(false);
  });

  it('wakes at once for a delivery stored in its own process', async () => {
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger });
    worker.start();
    await new Promise((resolve) => setTimeout(resolve, 100)); // the loop is now asleep
    await announce(servePdf(samplePdf()));
    worker.wake();
    await waitFor(async () => (await statuses()).done === 1, 2000);
    await close();
  });

  it('on stop, aborts downloads that outlast the grace period and hands them back as pending', async () => {
    await announce(slowDrip(100));
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger, timeoutMs: 30_000 });
    worker.start();
    await waitFor(async () => (await statuses()).downloading === 1);
    const started = Date.now();
    await worker.stop(300);
    expect(Date.now() - started).toBeLessThan(2000);
    await close();
    const { rows } = await database.pool.query('SELECT download_status, locked_by, next_attempt_at <= now() AS due FROM physitrack_deliveries');
    expect(rows).toEqual([{ download_status: 'pending', locked_by: null, due: true }]);
  });

  it('keeps running when the database fails a claim, and recovers', async () => {
    const broken = createDatabase({ url: database.url.replace(/\/[^/]+$/, '/no_such_database'), poolSize: 1, connectTimeoutMs: 500 });
    const { worker, close } = createTestWorker({ db: broken, log: t.logs.logger });
    await expect(worker.runOnce()).rejects.toThrow();
    worker.start();
    await new Promise((resolve) => setTimeout(resolve, 200));
    await close(); // stops cleanly although every claim failed
    await broken.$disconnect();
  });
});
