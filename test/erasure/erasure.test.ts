import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { newReceipt } from '../../src/audit.js';
import { closeDatabase, createDatabase, type Database } from '../../src/db/client.js';
import { insertDeliveries } from '../../src/downloads/intake.js';
import { ERASURE_COVERAGE, erasePatient, eraseSource, OLD_PATIRO_EVENTS_OF_PATIENT, patientHashOf, SourceActiveError } from '../../src/erasure.js';
import { purge } from '../../src/retention.js';
import { setSourceStatus } from '../../src/sources/sources-table.js';
import { addSource } from '../../src/sources/manage.js';
import { createStorage } from '../../src/storage/pdf-storage.js';
import { toPatiroEvent } from '../../src/webhooks/patiro-payload.js';
import { writePatiroBatch, type PatiroDelivery } from '../../src/webhooks/patiro-store.js';
import { TEST_SOURCES_KEY } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { newDelivery } from '../helpers/physitrack.js';
import { fakePdf, listFiles, store } from '../storage/pdf-fixtures.js';
import { samplePdf, servePdfSlowly, startFileHost } from '../helpers/https-file-host.js';
import { captureLogs } from '../helpers/logs.js';
import { createTestWorker } from '../helpers/worker.js';

// A patient's erasure removes their rows in one source and nothing else; offboarding removes a
// source and every row it delivered. Both are checked against whole tables before and after.

let database: TestDatabase;
let db: Database;
let pdfDir: string;
const CLINIC_A = 'aaaaaaaaaaaaaaaaaaaa';
const CLINIC_B = 'bbbbbbbbbbbbbbbbbbbb';

beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 4, connectTimeoutMs: 5000 });
  pdfDir = await mkdtemp(path.join(os.tmpdir(), 'wr-erasure-'));
});
afterAll(async () => {
  await closeDatabase(db);
  await database.drop();
  await rm(pdfDir, { recursive: true, force: true });
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit, physitrack_deliveries, physitrack_programs, documents, document_owners, erasures, sources');
});

let n = 0;
function patiro(sourceId: string, patientId: string, type = 'PatientUpdated'): PatiroDelivery {
  n += 1;
  return {
    receipt: newReceipt(),
    sourceId,
    event: toPatiroEvent({ eventId: `e-${n}`, eventType: type, data: { id: patientId, name: `name of ${patientId}` } }),
    signedAt: new Date(Date.now() + n),
    bodySha256: 'a'.repeat(64),
    sourceAddress: '192.0.2.9',
  };
}

/** A Physitrack delivery downloaded into filesystem storage, and its program's current document. */
async function downloaded(sourceId: string, patientId: string, pdf: Buffer, file = `f-${(n += 1)}`): Promise<string> {
  const [stored] = await insertDeliveries(db, [newDelivery({ patientId, fileUrl: `https://files.physitrack.com/${file}.pdf` }, { sourceId })]);
  const { documentId } = await store(createStorage({ kind: 'filesystem', pdfDir }, db), pdf);
  await database.pool.query(`UPDATE physitrack_deliveries SET download_status = 'done', document_id = $2 WHERE id = $1`, [stored!.id, documentId]);
  await database.pool.query(`UPDATE physitrack_programs SET current_document_id = $2, current_delivery_id = $1 WHERE id = (SELECT program_id FROM physitrack_deliveries WHERE id = $1)`, [stored!.id, documentId]);
  return String(documentId);
}

const TABLES = ['patiro_events', 'patiro_patients', 'physitrack_deliveries', 'physitrack_programs', 'documents', 'document_owners', 'webhook_audit', 'sources'];

async function snapshot(): Promise<Record<string, Record<string, unknown>[]>> {
  const out: Record<string, Record<string, unknown>[]> = {};
  for (const table of TABLES) out[table] = (await database.pool.query(`SELECT to_jsonb(t) AS row FROM ${table} t ORDER BY 1::text`)).rows.map((r) => r.row);
  for (const table of TABLES) out[table]!.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
  return out;
}

const without = (tables: Awaited<ReturnType<typeof snapshot>>, drop: (table: string, row: Record<string, unknown>) => boolean) =>
  Object.fromEntries(Object.entries(tables).map(([table, rows]) => [table, rows.filter((row) => !drop(table, row))]));

describe('erasing a patient', () => {
  it('removes their rows in one source only, keeps a document another delivery shares, removes the files, and does nothing more when run again', async () => {
    // The same patient id in two clinics, and another patient in the first.
    await writePatiroBatch(db, [patiro(CLINIC_A, 'p-1', 'PatientRevealed'), patiro(CLINIC_A, 'p-1'), patiro(CLINIC_B, 'p-1'), patiro(CLINIC_A, 'p-2')]);
    const shared = fakePdf(5000);
    const own = fakePdf(6000);
    await downloaded(CLINIC_A, 'p-1', own);
    await downloaded(CLINIC_A, 'p-1', shared);
    await downloaded(CLINIC_B, 'p-1', shared); // the same bytes in another clinic: one document
    await downloaded(CLINIC_A, 'p-2', fakePdf(7000));
    // An event stored before patient_id was kept on events: found by its data.
    await database.pool.query(`UPDATE patiro_events SET patient_id = NULL WHERE source_id = $1 AND event_id = 'e-1'`, [CLINIC_A]);
    const before = await snapshot();
    const files = (await database.pool.query<{ storage_key: string }>('SELECT storage_key FROM documents')).rows.map((r) => path.join(pdfDir, r.storage_key));
    expect(files.every((f) => existsSync(f))).toBe(true);

    const listener = new pg.Client({ connectionString: database.url });
    await listener.connect();
    const heard: string[] = [];
    listener.on('notification', (m) => heard.push(m.payload ?? ''));
    await listener.query('LISTEN webhook_receiver');
    try {
      const dry = await erasePatient(db, pdfDir, { vendor: 'physitrack', sourceId: CLINIC_A, patientId: 'p-1', dryRun: true });
      expect(await snapshot()).toEqual(before);
      const patiroResult = await erasePatient(db, pdfDir, { vendor: 'patiro', sourceId: CLINIC_A, patientId: 'p-1', dryRun: false });
      const physitrackResult = await erasePatient(db, pdfDir, { vendor: 'physitrack', sourceId: CLINIC_A, patientId: 'p-1', dryRun: false });
      expect(dry.counts).toEqual(physitrackResult.counts);
      expect(patiroResult.counts).toEqual({ patiro_events: 2, patiro_patients: 1, changes: 1 });
      expect(physitrackResult.counts).toEqual({ physitrack_deliveries: 2, physitrack_programs: 1, document_owners: 2, documents: 1 });
      expect(physitrackResult.files.removed).toBe(1);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(heard.map((p) => JSON.parse(p)).filter((p) => p.table === 'erasures')).toHaveLength(2);
    } finally {
      await listener.end();
    }

    const after = await snapshot();
    const erasedDocument = before.documents!.find((d) => !after.documents!.some((a) => a.id === d.id))!;
    expect(erasedDocument.size_bytes).toBe(6000);
    expect(after).toEqual(
      without(before, (table, row) => {
        if (table === 'documents') return row.id === erasedDocument.id;
        if (table === 'patiro_events') return row.source_id === CLINIC_A && (row.patient_id === 'p-1' || row.event_id === 'e-1');
        if (table === 'webhook_audit' || table === 'sources') return false;
        return row.source_id === CLINIC_A && row.patient_id === 'p-1';
      }),
    );
    expect(files.filter((f) => !existsSync(f))).toEqual([path.join(pdfDir, erasedDocument.storage_key as string)]);
    const recorded = await database.pool.query('SELECT scope, vendor, source_id, patient_hash, counts FROM erasures ORDER BY id');
    expect(recorded.rows).toEqual([
      { scope: 'patient', vendor: 'patiro', source_id: CLINIC_A, patient_hash: patientHashOf('patiro', CLINIC_A, 'p-1'), counts: { patiro_events: 2, patiro_patients: 1, changes: 1 } },
      { scope: 'patient', vendor: 'physitrack', source_id: CLINIC_A, patient_hash: patientHashOf('physitrack', CLINIC_A, 'p-1'), counts: { physitrack_deliveries: 2, physitrack_programs: 1, document_owners: 2, documents: 1 } },
    ]);
    expect(JSON.stringify(recorded.rows)).not.toContain('p-1');
    // The change feed: no change is keyed by the erased patient's id, each erasure is a change of
    // its own, and the changes left that name a row no longer there name it by an id that says nothing.
    const changes = await database.pool.query<{ kind: string; source_id: string; key: string; present: boolean }>(
      `SELECT kind, source_id, key, CASE kind
         WHEN 'patiro_events' THEN EXISTS (SELECT 1 FROM patiro_events e WHERE e.source_id = c.source_id AND e.event_id = c.key)
         WHEN 'patiro_patients' THEN EXISTS (SELECT 1 FROM patiro_patients p WHERE p.source_id = c.source_id AND p.patient_id = c.key)
         WHEN 'physitrack_deliveries' THEN EXISTS (SELECT 1 FROM physitrack_deliveries d WHERE d.id = c.key::bigint)
         WHEN 'physitrack_programs' THEN EXISTS (SELECT 1 FROM physitrack_programs g WHERE g.id = c.key::bigint)
         WHEN 'erasures' THEN EXISTS (SELECT 1 FROM erasures x WHERE x.id = c.key::bigint) END AS present
       FROM changes c`,
    );
    expect(changes.rows.filter((c) => !c.present).every((c) => c.kind !== 'patiro_patients' && c.key !== 'p-1')).toBe(true);
    expect(changes.rows.filter((c) => !c.present).length).toBeGreaterThan(0);
    expect(changes.rows.filter((c) => c.kind === 'erasures')).toHaveLength(2);
    expect(changes.rows.some((c) => c.key === 'p-1' && c.source_id === CLINIC_A)).toBe(false);

    // Again: nothing left to remove, nothing recorded.
    expect((await erasePatient(db, pdfDir, { vendor: 'physitrack', sourceId: CLINIC_A, patientId: 'p-1', dryRun: false })).erasureId).toBeNull();
    expect(await snapshot()).toEqual(after);
  });

  it('ends consistent when it races four live senders of the same patient', async () => {
    const checkConsistent = async () => {
      const dangling = await database.pool.query(`
        SELECT 'delivery without program' AS problem FROM physitrack_deliveries d WHERE NOT EXISTS (SELECT 1 FROM physitrack_programs p WHERE p.id = d.program_id)
        UNION ALL SELECT 'program without its latest delivery' FROM physitrack_programs p WHERE NOT EXISTS (SELECT 1 FROM physitrack_deliveries d WHERE d.id = p.latest_delivery_id)
        UNION ALL SELECT 'patient without an event' FROM patiro_patients p WHERE NOT EXISTS (SELECT 1 FROM patiro_events e WHERE e.source_id = p.source_id AND e.patient_id = p.patient_id)
        UNION ALL SELECT 'event without its patient' FROM patiro_events e WHERE e.patient_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM patiro_patients p WHERE p.source_id = e.source_id AND p.patient_id = e.patient_id)`);
      expect(dangling.rows).toEqual([]);
    };
    let stop = false;
    const senders = Array.from({ length: 4 }, async (_, i) => {
      let sent = 0;
      while (!stop) {
        if (i % 2) await writePatiroBatch(db, [patiro(CLINIC_A, 'p-race')]);
        else await insertDeliveries(db, [newDelivery({ patientId: 'p-race', fileUrl: `https://files.physitrack.com/race-${i}-${sent}.pdf` }, { sourceId: CLINIC_A })]);
        sent += 1;
      }
      return sent;
    });
    for (let round = 0; round < 10; round++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      await erasePatient(db, pdfDir, { vendor: 'physitrack', sourceId: CLINIC_A, patientId: 'p-race', dryRun: false });
      await erasePatient(db, pdfDir, { vendor: 'patiro', sourceId: CLINIC_A, patientId: 'p-race', dryRun: false });
    }
    stop = true;
    expect((await Promise.all(senders)).every((sent) => sent > 0)).toBe(true);
    await checkConsistent();
  });
});

describe('erasing a patient while their PDF is being downloaded', () => {
  it('leaves no PDF behind: the download that finishes after the erasure removes what it stored', async () => {
    const host = await startFileHost();
    // A folder of its own: the other tests leave the files of the documents they keep.
    const ownDir = await mkdtemp(path.join(os.tmpdir(), 'wr-erasure-slow-'));
    const { worker, close } = createTestWorker({ db, log: captureLogs().logger, storage: 'filesystem', pdfDir: ownDir });
    try {
      // The PDF arrives 800 ms after it is asked for; the erasure runs meanwhile.
      host.route('/slow.pdf', servePdfSlowly(samplePdf(9000), 800));
      await insertDeliveries(db, [newDelivery({ patientId: 'p-slow', fileUrl: host.url('/slow.pdf') }, { sourceId: CLINIC_A })]);
      const attempt = worker.runOnce();
      await new Promise((resolve) => setTimeout(resolve, 300));
      const result = await erasePatient(db, ownDir, { vendor: 'physitrack', sourceId: CLINIC_A, patientId: 'p-slow', dryRun: false });
      expect(result.counts).toMatchObject({ physitrack_deliveries: 1 });
      expect(await attempt).toEqual(['lost']);
      expect((await database.pool.query('SELECT count(*)::int AS n FROM documents')).rows[0].n).toBe(0);
      expect(await listFiles(ownDir)).toEqual([]);
    } finally {
      await close();
      await host.close();
      await rm(ownDir, { recursive: true, force: true });
    }
  });
});

describe('a document another delivery is being given meanwhile', () => {
  // The same PDF (one document, by sha256) downloaded for p-2 while p-1, the only one pointing at it
  // so far, is erased: the transaction giving it to p-2 holds the row's KEY SHARE lock (its foreign
  // key), the erasure waits for it, and must then see p-2's pointer and keep the document.
  it.each(['erasure', 'retention purge'])('stays with that delivery after %s', async (remover) => {
    const pdf = fakePdf(5200);
    const documentId = await downloaded(CLINIC_A, 'p-1', pdf);
    const [other] = await insertDeliveries(db, [newDelivery({ patientId: 'p-2', fileUrl: 'https://files.physitrack.com/other.pdf' }, { sourceId: CLINIC_A })]);
    const giving = new pg.Client({ connectionString: database.url });
    await giving.connect();
    try {
      await giving.query('BEGIN');
      await giving.query(`UPDATE physitrack_deliveries SET download_status = 'done', document_id = $2 WHERE id = $1`, [other!.id, documentId]);
      let removing: Promise<unknown>;
      if (remover === 'erasure') {
        removing = erasePatient(db, pdfDir, { vendor: 'physitrack', sourceId: CLINIC_A, patientId: 'p-1', dryRun: false });
      } else {
        // p-1's delivery and program are gone; the document is old and, as far as the purge can see, unreferenced.
        await database.pool.query(`DELETE FROM physitrack_deliveries WHERE patient_id = 'p-1'`);
        await database.pool.query(`DELETE FROM physitrack_programs WHERE patient_id = 'p-1'`);
        await database.pool.query(`UPDATE documents SET created_at = now() - interval '30 days'`);
        removing = purge(db, { olderThanMs: 7 * 24 * 3_600_000, dryRun: false, includeDocuments: true, pdfDir });
      }
      // The remover is waiting for the row lock (or, for the purge, skipped it); give it time to get there.
      await new Promise((resolve) => setTimeout(resolve, 300));
      await giving.query('COMMIT');
      await removing;
    } finally {
      await giving.end();
    }
    const { rows } = await database.pool.query('SELECT document_id::text AS id FROM physitrack_deliveries WHERE id = $1', [other!.id]);
    expect(rows[0].id).toBe(documentId);
    expect((await database.pool.query('SELECT count(*)::int AS n FROM documents WHERE id = $1', [documentId])).rows[0].n).toBe(1);
    const [key] = (await database.pool.query<{ storage_key: string }>('SELECT storage_key FROM documents WHERE id = $1', [documentId])).rows;
    expect(existsSync(path.join(pdfDir, key!.storage_key))).toBe(true);
  });
});

describe('a patient erased while their source is offboarded', () => {
  it('waits for the offboarding, and both end consistent', async () => {
    const source = await addSource(db, [Buffer.from(TEST_SOURCES_KEY, 'base64')], { vendor: 'patiro', name: 'Clinic D' });
    await writePatiroBatch(db, [patiro(source.row.id, 'p-1', 'PatientRevealed'), patiro(source.row.id, 'p-1'), patiro(source.row.id, 'p-2')]);
    await setSourceStatus(db, source.row.id, 'disabled');
    const both = await Promise.all([
      eraseSource(db, pdfDir, { vendor: 'patiro', sourceId: source.row.id, dryRun: false }),
      erasePatient(db, pdfDir, { vendor: 'patiro', sourceId: source.row.id, patientId: 'p-1', dryRun: false }),
    ]);
    const erased = both.reduce((sum, r) => sum + (r.counts.patiro_events ?? 0), 0);
    expect(erased).toBe(3);
    expect((await database.pool.query('SELECT count(*)::int AS n FROM patiro_events WHERE source_id = $1', [source.row.id])).rows[0].n).toBe(0);
  });
});

describe('events stored before patient_id was written with them', () => {
  it('are found by a string or number id in their data, never by an object id', async () => {
    const events = [
      { ...patiro(CLINIC_A, 'p-old', 'PatientRevealed') },
      { ...patiro(CLINIC_A, 'x', 'PatientUpdated'), event: toPatiroEvent({ eventId: 'e-num', eventType: 'PatientUpdated', data: { id: 42, name: 'n' } }) },
      { ...patiro(CLINIC_A, 'x', 'PatientUpdated'), event: toPatiroEvent({ eventId: 'e-obj', eventType: 'PatientUpdated', data: { id: { value: '42' }, name: 'n' } }) },
    ];
    await writePatiroBatch(db, events);
    await database.pool.query(`UPDATE patiro_events SET patient_id = NULL WHERE source_id = $1`, [CLINIC_A]);
    // Found through an index of their own, not by reading every patient event of every source.
    const client = await database.pool.connect();
    try {
      await client.query('BEGIN; SET LOCAL enable_seqscan = off');
      const plan = await client.query(`EXPLAIN DELETE FROM patiro_events WHERE ${OLD_PATIRO_EVENTS_OF_PATIENT}`, [CLINIC_A, 'p-old']);
      expect(plan.rows.map((r) => r['QUERY PLAN']).join('\n')).toContain('patiro_events_old_patient_idx');
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
    const view = await database.pool.query(`SELECT event_id, patient_id FROM receiver_v1.patiro_events WHERE source_id = $1 ORDER BY event_id`, [CLINIC_A]);
    expect(view.rows.find((r) => r.event_id === 'e-obj').patient_id).toBeNull();
    expect(view.rows.find((r) => r.event_id === 'e-num').patient_id).toBe('42');

    expect((await erasePatient(db, pdfDir, { vendor: 'patiro', sourceId: CLINIC_A, patientId: 'p-old', dryRun: false })).counts.patiro_events).toBe(1);
    expect((await erasePatient(db, pdfDir, { vendor: 'patiro', sourceId: CLINIC_A, patientId: '42', dryRun: false })).counts.patiro_events).toBe(1);
    // The event with an object id stays: its data's text is no patient's id.
    const left = await database.pool.query(`SELECT event_id FROM patiro_events WHERE source_id = $1`, [CLINIC_A]);
    expect(left.rows).toEqual([{ event_id: 'e-obj' }]);
  });
});

describe('erasing a patient whose older deliveries retention purged', () => {
  it('still finds their PDFs (document_owners), keeps what another patient owns, and removes the files', async () => {
    // p-1 in clinic A: four versions of one program, the last the same bytes as p-9's PDF in clinic B.
    await downloaded(CLINIC_A, 'p-1', fakePdf(5100), 'version-1');
    await downloaded(CLINIC_A, 'p-1', fakePdf(5200), 'version-2');
    await downloaded(CLINIC_A, 'p-1', fakePdf(5300), 'version-3');
    const shared = fakePdf(5400);
    await downloaded(CLINIC_A, 'p-1', shared, 'version-4');
    await downloaded(CLINIC_B, 'p-9', shared, 'p-9-version-1');
    // Retention purges every finished delivery (the documents are kept: clinical records); the
    // programs stay, each with its current PDF, and the older versions' PDFs have nothing pointing
    // at them: without document_owners the erasure found none of them.
    await database.pool.query(`UPDATE physitrack_deliveries SET received_at = now() - interval '400 days'`);
    await purge(db, { olderThanMs: 30 * 86_400_000, dryRun: false, includeDocuments: false, pdfDir });
    expect((await database.pool.query('SELECT count(*)::int AS n FROM physitrack_deliveries')).rows[0].n).toBe(0);
    // p-9's program no longer shows the shared PDF: p-9's ownership alone must keep it.
    await database.pool.query(`UPDATE physitrack_programs SET current_document_id = NULL, current_delivery_id = NULL WHERE patient_id = 'p-9'`);
    const sizes = async () => new Set((await database.pool.query<{ size_bytes: string }>('SELECT size_bytes FROM documents')).rows.map((r) => Number(r.size_bytes)));
    expect(await sizes()).toEqual(new Set([5100, 5200, 5300, 5400]));
    const paths = (await database.pool.query<{ storage_key: string; size_bytes: string }>('SELECT storage_key, size_bytes FROM documents')).rows
      .map((r) => ({ size: Number(r.size_bytes), file: path.join(pdfDir, r.storage_key) }));

    const dry = await erasePatient(db, pdfDir, { vendor: 'physitrack', sourceId: CLINIC_A, patientId: 'p-1', dryRun: true });
    const result = await erasePatient(db, pdfDir, { vendor: 'physitrack', sourceId: CLINIC_A, patientId: 'p-1', dryRun: false });
    expect(result.counts).toEqual({ physitrack_deliveries: 0, physitrack_programs: 1, document_owners: 4, documents: 3 });
    expect(dry.counts).toEqual(result.counts);
    expect(result.files.removed).toBe(3);
    // Only the PDF p-9 owns is left, with its file and its owner.
    expect(await sizes()).toEqual(new Set([5400]));
    expect(paths.filter((p) => existsSync(p.file)).map((p) => p.size)).toEqual([5400]);
    expect((await database.pool.query('SELECT source_id, patient_id FROM document_owners')).rows).toEqual([{ source_id: CLINIC_B, patient_id: 'p-9' }]);
    // Erased in turn, p-9 takes it.
    expect((await erasePatient(db, pdfDir, { vendor: 'physitrack', sourceId: CLINIC_B, patientId: 'p-9', dryRun: false })).counts).toMatchObject({ document_owners: 1, documents: 1 });
    expect(await sizes()).toEqual(new Set());
    expect(paths.filter((p) => existsSync(p.file))).toEqual([]);
  });
});

describe('erasing a patient while retention purges their old PDF', () => {
  it('waits for the purge and ends without a deadlock', async () => {
    const documentId = await downloaded(CLINIC_A, 'p-1', fakePdf(5500), 'old-version');
    await downloaded(CLINIC_A, 'p-1', fakePdf(5600), 'new-version');
    await database.pool.query(`UPDATE physitrack_deliveries SET received_at = now() - interval '400 days' WHERE document_id = $1`, [documentId]);
    await purge(db, { olderThanMs: 30 * 86_400_000, dryRun: false, includeDocuments: false, pdfDir });
    // purge --include-documents, held between its two steps: the old PDF locked, not yet deleted.
    const purger = new pg.Client({ connectionString: database.url });
    await purger.connect();
    try {
      await purger.query('BEGIN');
      await purger.query('SELECT id FROM documents WHERE id = $1 FOR UPDATE', [documentId]);
      const erasure = erasePatient(db, pdfDir, { vendor: 'physitrack', sourceId: CLINIC_A, patientId: 'p-1', dryRun: false });
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Its delete takes the owners with it (the cascade): the erasure must not hold one of them.
      await purger.query('DELETE FROM documents WHERE id = $1', [documentId]);
      await purger.query('COMMIT');
      const result = await erasure;
      expect(result.counts).toMatchObject({ physitrack_deliveries: 1, physitrack_programs: 1, documents: 1 });
      expect((await database.pool.query('SELECT count(*)::int AS n FROM documents')).rows[0].n).toBe(0);
      expect((await database.pool.query('SELECT count(*)::int AS n FROM document_owners')).rows[0].n).toBe(0);
    } finally {
      await purger.end();
    }
  });
});

describe('offboarding a source', () => {
  it('removes the source and every row it delivered, and nothing of the others', async () => {
    const a = await addSource(db, [Buffer.from(TEST_SOURCES_KEY, 'base64')], { vendor: 'physitrack', name: 'Clinic A' });
    const b = await addSource(db, [Buffer.from(TEST_SOURCES_KEY, 'base64')], { vendor: 'physitrack', name: 'Clinic B' });
    const shared = fakePdf(4000);
    await downloaded(a.row.id, 'p-1', shared);
    await downloaded(a.row.id, 'p-2', fakePdf(4100));
    await downloaded(b.row.id, 'p-1', shared);
    await database.pool.query(`INSERT INTO webhook_audit (source_id, vendor, event_id, status_code, body_sha256, receipt_id) VALUES ($1, 'physitrack', '1', 204, 'x', gen_random_uuid())`, [a.row.id]);
    await database.pool.query(`INSERT INTO source_failures (vendor, source_id, at, reason) VALUES ('physitrack', $1, now(), 'bad_api_key')`, [a.row.id]);
    const before = await snapshot();

    // Active, it is refused and nothing is removed; a dry run still counts.
    await expect(eraseSource(db, pdfDir, { vendor: 'physitrack', sourceId: a.row.id, dryRun: false })).rejects.toBeInstanceOf(SourceActiveError);
    expect(await snapshot()).toEqual(before);
    expect((await eraseSource(db, pdfDir, { vendor: 'physitrack', sourceId: a.row.id, dryRun: true })).counts).toMatchObject({ physitrack_deliveries: 2, sources: 1 });
    await setSourceStatus(db, a.row.id, 'disabled');
    const disabled = await snapshot();

    const result = await eraseSource(db, pdfDir, { vendor: 'physitrack', sourceId: a.row.id, dryRun: false });
    expect(result.counts).toMatchObject({ physitrack_deliveries: 2, physitrack_programs: 2, documents: 1, sources: 1, source_failures: 1 });

    // No row with its source_id is left in any table the erasure covers (every one with such a column).
    const { rows: tables } = await database.pool.query<{ table_name: string }>(
      `SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'source_id' ORDER BY 1`,
    );
    for (const { table_name: table } of tables) {
      if (ERASURE_COVERAGE[table]?.source !== 'erased') continue;
      const left = await database.pool.query(`SELECT count(*)::int AS n FROM ${table} WHERE ${table === 'sources' ? 'id' : 'source_id'} = $1`, [a.row.id]);
      expect(left.rows[0].n, table).toBe(0);
    }
    expect(await snapshot()).toEqual(
      without(disabled, (table, row) => {
        if (table === 'documents') return row.size_bytes === 4100;
        if (table === 'sources') return row.id === a.row.id;
        return row.source_id === a.row.id;
      }),
    );
  });
});

describe('the erasure module', () => {
  it('covers every table with a source_id column, for a patient and for a source', async () => {
    const { rows } = await database.pool.query<{ table_name: string }>(
      `SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name IN ('source_id') ORDER BY 1`,
    );
    const tables = [...rows.map((r) => r.table_name), 'sources'].sort();
    // A new table holding what a source delivered must say what erasure does with it.
    expect(tables.filter((t) => !(t in ERASURE_COVERAGE))).toEqual([]);
  });
});

