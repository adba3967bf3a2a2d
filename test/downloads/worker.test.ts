import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import nodePath from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { declareOversize, failThenServe, samplePdf, serveHtml, servePdf, slowDrip, startFileHost, streamWithoutLength, type FileHost } from '../helpers/https-file-host.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';
import { createTestWorker } from '../helpers/worker.js';

let database: TestDatabase;
let t: TestApp;
let host: FileHost;
let path = 0;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PHYSITRACK_API_KEY: PHYSITRACK_KEY, PHYSITRACK_FILE_URL_HOSTS: 'localhost', DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true' });
  host = await startFileHost();
});
afterAll(async () => {
  await host.close();
  await t.close();
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE physitrack_deliveries, documents, document_owners, webhook_audit');
});

/** Announces a file on the test host through the real route; returns the delivery id. */
async function announce(route: Parameters<FileHost['route']>[1]): Promise<{ id: string; path: string }> {
  const filePath = `/programs/${++path}.pdf`;
  host.route(filePath, route);
  const res = await t.app.inject(physitrackRequest(physitrackNotice({ file_url: host.url(filePath) })));
  expect(res.statusCode).toBe(204);
  const { rows } = await database.pool.query('SELECT id FROM physitrack_deliveries ORDER BY id DESC LIMIT 1');
  return { id: String(rows[0].id), path: filePath };
}

async function row(id: string) {
  return (await database.pool.query('SELECT * FROM physitrack_deliveries WHERE id = $1', [id])).rows[0];
}

async function makeDue(): Promise<void> {
  await database.pool.query("UPDATE physitrack_deliveries SET next_attempt_at = now() - interval '1 second' WHERE download_status = 'pending'");
}

describe('download worker', () => {
  it('downloads and stores the PDF; the stored bytes hash to the served file', async () => {
    const pdf = samplePdf(50_000);
    const { id } = await announce(servePdf(pdf));
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger });
    expect(await worker.runOnce()).toEqual(['done']);
    await close();
    const delivery = await row(id);
    expect(delivery).toMatchObject({ download_status: 'done', attempts: 1, last_error: null, locked_by: null });
    expect(delivery.downloaded_at).toBeInstanceOf(Date);
    const doc = (await database.pool.query('SELECT * FROM documents WHERE id = $1', [delivery.document_id])).rows[0];
    const expected = createHash('sha256').update(pdf).digest('hex');
    expect(doc.sha256).toBe(expected);
    expect(createHash('sha256').update(doc.content).digest('hex')).toBe(expected);
    expect(Number(doc.size_bytes)).toBe(pdf.length);
  });

  it('retries a file that is not ready yet (404 twice) until it is done', async () => {
    const { id } = await announce(failThenServe(2, 404, samplePdf()));
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger });
    expect(await worker.runOnce()).toEqual(['retry']);
    const waiting = await row(id);
    expect(waiting).toMatchObject({ download_status: 'pending', attempts: 1, last_http_status: 404 });
    expect(waiting.last_error).toMatch(/404/);
    expect(waiting.next_attempt_at.getTime()).toBeGreaterThan(Date.now() + 300);
    expect(await worker.runOnce()).toEqual([]); // not due yet
    await makeDue();
    expect(await worker.runOnce()).toEqual(['retry']);
    await makeDue();
    expect(await worker.runOnce()).toEqual(['done']);
    await close();
    expect(await row(id)).toMatchObject({ download_status: 'done', attempts: 3, last_error: null, last_http_status: null });
  });

  it('retries when the host serves HTML instead of a PDF', async () => {
    const { id } = await announce(serveHtml());
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger });
    expect(await worker.runOnce()).toEqual(['retry']);
    await close();
    expect((await row(id)).last_error).toMatch(/PDF/);
    expect((await database.pool.query('SELECT 1 FROM documents')).rowCount).toBe(0);
  });

  it('fails at once, without retrying, a file declared larger than the limit', async () => {
    const { id } = await announce(declareOversize(10 * 1024 * 1024));
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger, maxBytes: 1024 * 1024 });
    expect(await worker.runOnce()).toEqual(['failed']);
    await close();
    expect(await row(id)).toMatchObject({ download_status: 'failed', attempts: 1 });
  });

  it('fails a stream that grows past the limit, storing nothing', async () => {
    const { id } = await announce(streamWithoutLength(3 * 1024 * 1024));
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger, maxBytes: 1024 * 1024 });
    expect(await worker.runOnce()).toEqual(['failed']);
    await close();
    expect((await row(id)).last_error).toMatch(/larger|limit/i);
    expect((await database.pool.query('SELECT 1 FROM documents')).rowCount).toBe(0);
  });

  it('times out a slow server and retries later', async () => {
    const { id } = await announce(slowDrip(200));
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger, timeoutMs: 1000 });
    const started = Date.now();
    expect(await worker.runOnce()).toEqual(['retry']);
    expect(Date.now() - started).toBeLessThan(3000);
    await close();
    expect((await row(id)).last_error).toMatch(/took longer/i);
  });

  it('marks a delivery expired once its deadline has passed', async () => {
    const { id } = await announce(failThenServe(100, 503, samplePdf()));
    await database.pool.query("UPDATE physitrack_deliveries SET deadline_at = now() - interval '1 second'");
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger });
    expect(await worker.runOnce()).toEqual([]);
    await close();
    const expired = await row(id);
    expect(expired).toMatchObject({ download_status: 'expired', attempts: 0 });
    expect(expired.last_error).toMatch(/deadline passed/);
  });

  it('gives a failing download one last attempt before the deadline, then expires it', async () => {
    const { id } = await announce(failThenServe(100, 503, samplePdf()));
    await database.pool.query("UPDATE physitrack_deliveries SET deadline_at = now() + interval '10 minutes'");
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger, retryBaseMs: 60 * 60_000 });
    expect(await worker.runOnce()).toEqual(['retry']);
    const waiting = await row(id);
    expect(waiting.download_status).toBe('pending');
    expect(waiting.deadline_at.getTime() - waiting.next_attempt_at.getTime()).toBe(30_000);
    // The last attempt, 30 s before the deadline, fails too: nothing is left to wait for.
    await database.pool.query("UPDATE physitrack_deliveries SET next_attempt_at = now() - interval '1 second', deadline_at = now() + interval '30 seconds'");
    expect(await worker.runOnce()).toEqual(['retry']);
    await close();
    const expired = await row(id);
    expect(expired).toMatchObject({ download_status: 'expired', attempts: 2, last_http_status: 503 });
    expect(expired.last_error).toMatch(/503.*deadline passed/s);
  });

  it('stores identical bytes once, and both deliveries point at that document', async () => {
    const pdf = samplePdf();
    const first = await announce(servePdf(pdf));
    const second = await announce(servePdf(pdf));
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger });
    expect((await worker.runOnce()).sort()).toEqual(['done', 'done']);
    await close();
    expect((await database.pool.query('SELECT 1 FROM documents')).rowCount).toBe(1);
    expect((await row(first.id)).document_id).toEqual((await row(second.id)).document_id);
  });

  it('stores the PDF as a file under PDF_DIR with filesystem storage', async () => {
    const pdfDir = await mkdtemp(nodePath.join(os.tmpdir(), 'wr-pdf-'));
    const pdf = samplePdf();
    const { id } = await announce(servePdf(pdf));
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger, storage: 'filesystem', pdfDir });
    expect(await worker.runOnce()).toEqual(['done']);
    await close();
    const doc = (await database.pool.query('SELECT d.* FROM documents d JOIN physitrack_deliveries p ON p.document_id = d.id WHERE p.id = $1', [id])).rows[0];
    expect(doc).toMatchObject({ storage: 'filesystem', content: null, storage_key: `${doc.sha256.slice(0, 2)}/${doc.sha256}.pdf` });
    expect((await readFile(nodePath.join(pdfDir, doc.storage_key))).equals(pdf)).toBe(true);
    await rm(pdfDir, { recursive: true, force: true });
  });

  it('refuses a host name that resolves to a loopback address unless private addresses are allowed', async () => {
    const { id, path: filePath } = await announce(servePdf(samplePdf()));
    const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger, allowPrivateAddresses: false });
    expect(await worker.runOnce()).toEqual(['failed']);
    await close();
    expect(host.requestCount(filePath)).toBe(0);
    expect((await row(id)).last_error).toMatch(/refused|loopback/i);
  });
});
