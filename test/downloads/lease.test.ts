import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closeDatabase, createDatabase, poolOf, type Database } from '../../src/db/client.js';
import { PMS_CHANNEL } from '../../src/db/notify.js';
import { createDownloadQueue } from '../../src/downloads/queue.js';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { samplePdf, servePdf, servePdfSlowly, startFileHost, type FileHost } from '../helpers/https-file-host.js';
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
  await closeDatabase(otherDb);
  await t.close();
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE physitrack_deliveries, documents, document_owners, webhook_audit');
});

async function announce(route: Parameters<FileHost['route']>[1]): Promise<{ id: string; path: string }> {
  const filePath = `/lease/${++path}.pdf`;
  host.route(filePath, route);
  expect((await t.app.inject(physitrackRequest(physitrackNotice({ file_url: host.url(filePath) })))).statusCode).toBe(204);
  const { rows } = await database.pool.query('SELECT id FROM physitrack_deliveries ORDER BY id DESC LIMIT 1');
  return { id: String(rows[0].id), path: filePath };
}

async function row(id: string) {
  return (await database.pool.query('SELECT * FROM physitrack_deliveries WHERE id = $1', [id])).rows[0];
}

/** As if the lease ran out while its holder was stalled (a paused process, a slow database). */
async function lapseLeases(): Promise<void> {
  await database.pool.query("UPDATE physitrack_deliveries SET next_attempt_at = now() - interval '1 second', locked_until = now() - interval '1 second' WHERE download_status = 'downloading'");
}

/** Final-state notifications the PMS receives for one delivery, in order. */
async function listenForFinalStates(id: string): Promise<{ states: string[]; close(): Promise<void> }> {
  const client = new pg.Client({ connectionString: database.url });
  await client.connect();
  const states: string[] = [];
  client.on('notification', ({ payload }) => {
    const message = JSON.parse(payload ?? '{}') as { table?: string; id?: string; downloadStatus?: string };
    if (message.table === 'physitrack_deliveries' && message.id === id) states.push(message.downloadStatus ?? '');
  });
  await client.query(`LISTEN ${PMS_CHANNEL}`);
  return { states, close: () => client.end() };
}

describe('download leases', () => {
  it('gives every claim its own token, so a late report of an earlier claim by the same worker changes nothing', async () => {
    const { id } = await announce(servePdf(samplePdf()));
    const queue = createDownloadQueue(t.db, 'same-worker', 60);
    const [first] = await queue.claim(1);
    await lapseLeases();
    const [second] = await queue.claim(1);
    expect(second!.id).toBe(first!.id);
    expect(first!.token).toMatch(/^same-worker\//);
    expect(second!.token).toMatch(/^same-worker\//);
    expect(second!.token).not.toBe(first!.token);
    expect(await queue.heartbeat(first!)).toBe(false);
    expect(await queue.markFailed(first!, 'late result of the first claim', 404)).toBe(false);
    expect(await queue.retryLater(first!, 'late result of the first claim', 503, 1000)).toBe(false);
    expect(await queue.release(first!)).toBe(false);
    expect(await row(id)).toMatchObject({ download_status: 'downloading', locked_by: second!.token, attempts: 2, last_error: null });
    expect(await queue.markFailed(second!, 'the second claim failed it', 404)).toBe(true);
    expect(await row(id)).toMatchObject({ download_status: 'failed', locked_by: null, last_error: 'the second claim failed it' });
  });

  it('extends the lease by its length from now on a heartbeat of the claim that holds it', async () => {
    const { id } = await announce(servePdf(samplePdf()));
    const queue = createDownloadQueue(t.db, 'beating', 30);
    const [claimed] = await queue.claim(1);
    await database.pool.query("UPDATE physitrack_deliveries SET next_attempt_at = now() + interval '1 second', locked_until = now() + interval '1 second'");
    expect(await queue.heartbeat(claimed!)).toBe(true);
    const { rows } = await database.pool.query<{ left: number; same: boolean }>(
      'SELECT extract(epoch FROM locked_until - now())::float8 AS left, locked_until = next_attempt_at AS same FROM physitrack_deliveries WHERE id = $1',
      [id],
    );
    expect(rows[0]!.left).toBeGreaterThan(28);
    expect(rows[0]!.same).toBe(true);
  });

  it('fetches and reports once a download slower than the lease, while another worker claims nothing', async () => {
    const pdf = samplePdf(20_000);
    // A 2 s lease, renewed every 667 ms: an event loop stalled by parallel test files for over a
    // second still keeps it. The file takes twice the lease.
    const { id, path: filePath } = await announce(servePdfSlowly(pdf, 4000));
    const notified = await listenForFinalStates(id);
    const slow = createTestWorker({ db: t.db, log: t.logs.logger, workerId: 'slow', leaseSeconds: 2, timeoutMs: 10_000 });
    const other = createTestWorker({ db: otherDb, log: t.logs.logger, workerId: 'other', leaseSeconds: 2 });
    try {
      let finished = false;
      const downloading = slow.worker.runOnce().finally(() => (finished = true));
      const started = Date.now();
      // The other worker keeps asking for due rows, through and past the slow worker's first lease.
      while (!finished) {
        expect(await other.worker.runOnce()).toEqual([]);
        await new Promise((resolve) => setTimeout(resolve, 150));
      }
      expect(await downloading).toEqual(['done']);
      expect(Date.now() - started).toBeGreaterThan(3500);
    } finally {
      await Promise.all([slow.close(), other.close()]);
    }
    expect(host.requestCount(filePath)).toBe(1);
    expect(await row(id)).toMatchObject({ download_status: 'done', attempts: 1, locked_by: null });
    await waitFor(() => notified.states.length > 0);
    await notified.close();
    expect(notified.states).toEqual(['done']);
  });

  it('stops a download whose lease was lost to another claim, and reports nothing', async () => {
    const { id, path: filePath } = await announce(servePdfSlowly(samplePdf(), 6000));
    const stalled = createTestWorker({ db: t.db, log: t.logs.logger, workerId: 'stalled', leaseSeconds: 1, timeoutMs: 10_000 });
    const other = createDownloadQueue(otherDb, 'other', 60);
    try {
      const started = Date.now();
      const attempt = stalled.worker.runOnce();
      await waitFor(() => host.requestCount(filePath) === 1);
      // The lease lapses and another replica claims the row (retried if a heartbeat renewed it first).
      let taken: Awaited<ReturnType<typeof other.claim>> = [];
      await waitFor(async () => {
        await lapseLeases();
        taken = await other.claim(1);
        return taken.length === 1;
      });
      expect(await attempt).toEqual(['lost']);
      expect(Date.now() - started).toBeLessThan(3000);
      expect(await row(id)).toMatchObject({ download_status: 'downloading', locked_by: taken[0]!.token, attempts: 2 });
      expect((await database.pool.query('SELECT 1 FROM documents')).rowCount).toBe(0);
      expect(await other.markFailed(taken[0]!, 'the new claim still reports', null)).toBe(true);
    } finally {
      await stalled.close();
    }
  });

  it('claims, renews and reports while every connection of the main pool is taken', async () => {
    const { id } = await announce(servePdf(samplePdf()));
    const main = poolOf(t.db);
    const held = await Promise.all(Array.from({ length: main.options.max }, () => main.connect()));
    try {
      const queue = createDownloadQueue(t.db, 'starved', 60);
      const [claimed] = await queue.claim(1);
      expect(claimed!.id).toBe(BigInt(id));
      expect(await queue.heartbeat(claimed!)).toBe(true);
      expect(await queue.release(claimed!)).toBe(true);
    } finally {
      held.forEach((client) => client.release());
    }
  });
});
