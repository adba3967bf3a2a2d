import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { samplePdf, servePdf, servePdfSlowly, startFileHost, type FileHost } from '../helpers/https-file-host.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';
import { waitFor } from '../helpers/wait.js';
import { createTestWorker } from '../helpers/worker.js';

// Physitrack may send the same notice more than once, and retries a failed call once: one delivery
// per notice (source, file_url), however often it comes. And programs: one row per program of a
// patient, whose current PDF is the newest version's.

let database: TestDatabase;
let host: FileHost;
let t: TestApp;

beforeAll(async () => {
  database = await createTestDatabase();
  host = await startFileHost();
  t = await buildTestApp(database.url, { PHYSITRACK_API_KEY: PHYSITRACK_KEY, PHYSITRACK_FILE_URL_HOSTS: 'localhost', DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true' });
});
afterAll(async () => {
  await t.close();
  await host.close();
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE physitrack_deliveries, physitrack_programs, documents, document_owners, webhook_audit');
});

const send = (notice: Record<string, unknown>) => t.app.inject(physitrackRequest(notice));
const deliveries = async () => (await database.pool.query('SELECT * FROM physitrack_deliveries ORDER BY id')).rows;
const programs = async () => (await database.pool.query('SELECT * FROM physitrack_programs ORDER BY id')).rows;

async function downloadAll(): Promise<void> {
  const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger, concurrency: 4 });
  try {
    await worker.runOnce();
  } finally {
    await close();
  }
}

describe('the same notice again', () => {
  it('10 identical notices at once are one delivery, one GET, counted 10 times, audited 10 times', async () => {
    host.route('/same.pdf', servePdf(samplePdf()));
    const notice = physitrackNotice({ file_url: host.url('/same.pdf') });
    const answers = await Promise.all(Array.from({ length: 10 }, () => send(notice)));
    expect(answers.map((a) => a.statusCode)).toEqual(Array(10).fill(204));
    // A few more, one after another: each finds the delivery in the table rather than in its batch.
    for (let i = 0; i < 3; i++) expect((await send(notice)).statusCode).toBe(204);

    const rows = await deliveries();
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ notice_count: 13, download_status: 'pending' });
    expect(rows[0].last_notice_at.getTime()).toBeGreaterThanOrEqual(rows[0].received_at.getTime());
    const audit = (await database.pool.query('SELECT event_id, status_code FROM webhook_audit')).rows;
    expect(audit).toHaveLength(13);
    expect(new Set(audit.map((a) => a.event_id))).toEqual(new Set([String(rows[0].id)]));
    await downloadAll();
    await downloadAll();
    expect(host.requestCount('/same.pdf')).toBe(1);
    expect((await deliveries())[0].download_status).toBe('done');
    expect(await programs()).toEqual([expect.objectContaining({ versions: 1 })]);
  });

  it('the same new notice to two replicas at once is one delivery and one program, every answer 204', async () => {
    const other = await buildTestApp(database.url, { PHYSITRACK_API_KEY: PHYSITRACK_KEY, PHYSITRACK_FILE_URL_HOSTS: 'localhost', DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true' });
    try {
      for (let round = 0; round < 5; round++) {
        // A new program each round, so that both replicas race to create it.
        const notice = physitrackNotice({ patient_id: `race-${round}`, file_url: host.url(`/race-${round}.pdf`) });
        const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? other.app : t.app).inject(physitrackRequest(notice))));
        expect(answers.map((a) => a.statusCode)).toEqual(Array(10).fill(204));
      }
    } finally {
      await other.close();
    }
    const rows = await deliveries();
    expect(rows.map((r) => r.notice_count)).toEqual(Array(5).fill(10));
    expect((await programs()).map((p) => p.versions)).toEqual(Array(5).fill(1));
  });

  it('puts a failed delivery back in the queue with a new deadline, and downloads it', async () => {
    let fail = true;
    const pdf = samplePdf();
    host.route('/flaky.pdf', (request, response) => {
      if (fail) return void response.writeHead(400, { 'content-type': 'text/plain' }).end('bad request');
      servePdf(pdf)(request, response);
    });
    const notice = physitrackNotice({ file_url: host.url('/flaky.pdf') });
    await send(notice);
    await downloadAll();
    const [failed] = await deliveries();
    expect(failed.download_status).toBe('failed');
    await database.pool.query("UPDATE physitrack_deliveries SET deadline_at = now() + interval '1 hour'");

    fail = false;
    expect((await send(notice)).statusCode).toBe(204);
    const [requeued] = await deliveries();
    expect(requeued).toMatchObject({ id: failed.id, download_status: 'pending', notice_count: 2 });
    expect(requeued.deadline_at.getTime() - Date.now()).toBeGreaterThan(23 * 3600 * 1000);
    await downloadAll();
    expect((await deliveries())[0].download_status).toBe('done');
    expect(host.requestCount('/flaky.pdf')).toBe(2);
  });

  it('puts an expired delivery back in the queue, and downloads it', async () => {
    host.route('/late.pdf', servePdf(samplePdf()));
    const notice = physitrackNotice({ file_url: host.url('/late.pdf') });
    await send(notice);
    await database.pool.query("UPDATE physitrack_deliveries SET download_status = 'expired', deadline_at = now() - interval '1 minute'");
    expect((await send(notice)).statusCode).toBe(204);
    expect((await deliveries())[0]).toMatchObject({ download_status: 'pending', notice_count: 2 });
    await downloadAll();
    expect((await deliveries())[0].download_status).toBe('done');
  });

  it('leaves a done delivery done: no second download', async () => {
    host.route('/once.pdf', servePdf(samplePdf()));
    const notice = physitrackNotice({ file_url: host.url('/once.pdf') });
    await send(notice);
    await downloadAll();
    expect((await send(notice)).statusCode).toBe(204);
    await downloadAll();
    expect((await deliveries())[0]).toMatchObject({ download_status: 'done', notice_count: 2 });
    expect(host.requestCount('/once.pdf')).toBe(1);
  });

  it('answers a refused URL 422 again, and never fetches it', async () => {
    const notice = physitrackNotice({ file_url: `http://localhost:${host.port}/plain-http.pdf` });
    expect((await send(notice)).statusCode).toBe(422);
    expect((await send(notice)).statusCode).toBe(422);
    await downloadAll();
    expect(await deliveries()).toEqual([expect.objectContaining({ download_status: 'failed', notice_count: 2 })]);
    expect(host.requestCount('/plain-http.pdf')).toBe(0);
    const audit = (await database.pool.query('SELECT status_code FROM webhook_audit')).rows;
    expect(audit).toEqual([{ status_code: 422 }, { status_code: 422 }]);
  });
});

describe('programs and their versions', () => {
  const CREATED = '2026-11-02T08:15:00Z';

  it("keeps the newest version's PDF current when an older version's download finishes last", async () => {
    const listener = new pg.Client({ connectionString: database.url });
    const notes: Record<string, string>[] = [];
    await listener.connect();
    listener.on('notification', (n) => notes.push(JSON.parse(n.payload!)));
    await listener.query('LISTEN webhook_receiver');
    try {
      const v1 = samplePdf();
      const v2 = samplePdf();
      host.route('/v1.pdf', servePdfSlowly(v1, 800)); // version 1 finishes last
      host.route('/v2.pdf', servePdf(v2));
      const patient = 'patient-versions';
      await send(physitrackNotice({ patient_id: patient, date_iso: CREATED, name: 'Knee', file_url: host.url('/v1.pdf'), updated: false }));
      await send(physitrackNotice({ patient_id: patient, date_iso: CREATED, name: 'Knee, week 2', file_url: host.url('/v2.pdf'), updated: true }));
      await downloadAll();

      const [first, second] = await deliveries();
      const [program] = await programs();
      expect(first.program_id).toBe(program.id);
      expect(second.program_id).toBe(program.id);
      const documentOf = async (bytes: Buffer) => (await database.pool.query('SELECT id FROM documents WHERE content = $1', [bytes])).rows[0].id;
      expect(program).toMatchObject({
        versions: 2,
        program_name: 'Knee, week 2',
        latest_delivery_id: second.id,
        current_delivery_id: second.id,
        current_document_id: await documentOf(v2),
      });
      await waitFor(() => notes.some((n) => n.table === 'physitrack_programs'));
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(notes.filter((n) => n.table === 'physitrack_programs')).toEqual([
        { vendor: 'physitrack', table: 'physitrack_programs', id: String(program.id), source: 'default', currentDocumentId: String(await documentOf(v2)) },
      ]);
    } finally {
      await listener.end();
    }
  });

  it('keeps a notice sent again with other fields on its delivery and program: no second program', async () => {
    const first = physitrackNotice({ patient_id: 'renamed', date_iso: 'unreadable', name: 'Knee' });
    await send(first);
    await send({ ...first, name: 'Knee renamed' }); // the same file_url: the same notice
    expect(await deliveries()).toEqual([expect.objectContaining({ notice_count: 2, program_name: 'Knee' })]);
    const rows = await programs();
    expect(rows).toEqual([expect.objectContaining({ versions: 1, program_name: 'Knee', latest_delivery_id: (await deliveries())[0].id })]);
  });

  it('creates the program from an update whose first notice was missed', async () => {
    await send(physitrackNotice({ patient_id: 'missed-first', date_iso: CREATED, updated: true }));
    expect(await programs()).toEqual([expect.objectContaining({ patient_id: 'missed-first', versions: 1 })]);
  });

  it('keys a program by date and name when date_iso is unreadable', async () => {
    const base = { patient_id: 'no-iso', date_iso: 'not a date', date: '2026-11-02' };
    await send(physitrackNotice({ ...base, name: 'Shoulder' }));
    await send(physitrackNotice({ ...base, name: 'Shoulder', updated: true }));
    await send(physitrackNotice({ ...base, name: 'Hip' }));
    const rows = await programs();
    expect(rows.map((p) => [p.program_name, p.versions, p.program_created_at])).toEqual([
      ['Shoulder', 2, null],
      ['Hip', 1, null],
    ]);
  });

  it('keeps the same patient and date of two sources apart: two programs', async () => {
    const { addSource } = await import('../../src/sources/manage.js');
    const { TEST_SOURCES_KEY } = await import('../helpers/app.js');
    const other = await addSource(t.db, [Buffer.from(TEST_SOURCES_KEY, 'base64')], { vendor: 'physitrack', name: 'Physitrack staging' });
    await t.sources.reload();
    // Even the same file_url: a notice is the same only within its source.
    const notice = { patient_id: 'shared-patient', date_iso: CREATED, file_url: host.url('/shared.pdf') };
    expect((await send(physitrackNotice(notice))).statusCode).toBe(204);
    const res = await t.app.inject(physitrackRequest(physitrackNotice({ ...notice, api_key: other.secret }), {}, `/webhooks/physitrack/${other.row.id}`));
    expect(res.statusCode).toBe(204);
    expect((await programs()).map((p) => p.source_id).sort()).toEqual(['default', other.row.id].sort());
    expect((await deliveries()).map((d) => d.source_id).sort()).toEqual(['default', other.row.id].sort());
  });
});
