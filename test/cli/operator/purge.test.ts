import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../../src/db/client.js';
import { parseDuration, purge } from '../../../src/retention.js';
import { createStorage } from '../../../src/storage/pdf-storage.js';
import { createTestDatabase, type TestDatabase } from '../../helpers/database.js';
import { fakePdf, listFiles, store } from '../../storage/pdf-fixtures.js';
import { ago, cli, count, insertAudit, insertDelivery, insertDocument, insertEvent, insertPatient, spawnCli } from './helpers.js';

let database: TestDatabase;
let db: Database;
let tempDir: string;
let pdfDir: string;
let env: Record<string, string>;

beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 2, connectTimeoutMs: 2000 });
  tempDir = await mkdtemp(path.join(os.tmpdir(), 'cli-purge-test-'));
  pdfDir = path.join(tempDir, 'pdf');
  env = { DATABASE_URL: database.url, PDF_DIR: pdfDir };
});
afterAll(async () => {
  await db.$disconnect();
  await database.drop();
  await rm(tempDir, { recursive: true, force: true });
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE patiro_events, patiro_patients, webhook_audit, physitrack_deliveries, physitrack_programs, documents, document_owners');
  await rm(pdfDir, { recursive: true, force: true });
});

const OLD = ago('100 days');
const TABLES = ['patiro_events', 'patiro_patients', 'webhook_audit', 'physitrack_deliveries', 'documents'];

async function counts(): Promise<Record<string, number>> {
  return Object.fromEntries(await Promise.all(TABLES.map(async (t) => [t, await count(database.pool, t)])));
}

async function idsOf(table: string, key = 'id'): Promise<string[]> {
  const { rows } = await database.pool.query(`SELECT ${key}::text AS k FROM ${table} ORDER BY ${key}`);
  return rows.map((r) => r.k as string).sort();
}

/** A file stored by the real filesystem backend, its row then made old. */
async function storedFile(age = OLD): Promise<{ id: string; file: string }> {
  const { documentId } = await store(createStorage({ kind: 'filesystem', pdfDir }, db), fakePdf(2000));
  await database.pool.query(`UPDATE documents SET created_at = ${age.text} WHERE id = $1`, [documentId]);
  const { rows } = await database.pool.query('SELECT storage_key FROM documents WHERE id = $1', [documentId]);
  return { id: String(documentId), file: path.join(pdfDir, rows[0].storage_key) };
}

/** Old and new rows of every kind; returns what should survive a 90-day purge. */
async function seed() {
  const events = {
    old: [await insertEvent(database.pool, { last_received_at: OLD }), await insertEvent(database.pool, { last_received_at: OLD })],
    // first seen long ago, but delivered again recently: kept
    redelivered: await insertEvent(database.pool, { first_received_at: OLD, last_received_at: ago('1 day') }),
  };
  await insertAudit(database.pool, { received_at: OLD });
  await insertAudit(database.pool, { received_at: OLD });
  await insertAudit(database.pool, { received_at: OLD });
  const recentAudit = await insertAudit(database.pool, { received_at: ago('1 hour') });
  await insertPatient(database.pool, { updated_at: OLD, signed_at: OLD });

  const onlyOld = await storedFile(); // referenced only by an old, finished delivery
  const stillUsed = await storedFile(); // old, but a recent delivery points at it
  const orphan = await insertDocument(database.pool, { sha256: 'e'.repeat(64), size_bytes: 3, content: Buffer.from('pdf'), created_at: OLD });
  const fresh = await insertDocument(database.pool, { sha256: 'f'.repeat(64), size_bytes: 3, content: Buffer.from('pdf') });
  const deliveries = {
    oldFinal: [
      await insertDelivery(database.pool, { received_at: OLD, download_status: 'done', document_id: onlyOld.id }),
      await insertDelivery(database.pool, { received_at: OLD, download_status: 'failed' }),
      await insertDelivery(database.pool, { received_at: OLD, download_status: 'expired' }),
    ],
    oldUnfinished: [
      await insertDelivery(database.pool, { received_at: OLD, download_status: 'pending' }),
      await insertDelivery(database.pool, { received_at: OLD, download_status: 'downloading' }),
    ],
    recent: [
      await insertDelivery(database.pool, { download_status: 'done', document_id: stillUsed.id }),
      await insertDelivery(database.pool, { download_status: 'failed' }),
    ],
  };
  return { events, recentAudit, deliveries, documents: { onlyOld, stillUsed, orphan, fresh } };
}

const EXPECTED = { patiro_events: 2, webhook_audit: 3, physitrack_deliveries: 3, documents: 0, changes: 0 };

describe('purge', () => {
  it('counts in a dry run exactly what the real run deletes, and deletes nothing', async () => {
    await seed();
    const before = await counts();
    const dry = await cli(['purge', '--older-than', '90d', '--dry-run', '--json'], env);
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, olderThan: '90d', counts: EXPECTED });
    expect(await counts()).toEqual(before);

    const real = await cli(['purge', '--older-than', '90d', '--json'], env);
    expect(real.code).toBe(0);
    expect(JSON.parse(real.stdout)).toMatchObject({ dryRun: false, counts: EXPECTED });
  });

  it('deletes exactly the old events, audit rows and finished deliveries; keeps unfinished ones, patients and documents', async () => {
    const s = await seed();
    const documentsBefore = await idsOf('documents');
    const result = await cli(['purge', '--older-than', '90d'], env);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^physitrack_deliveries\s+3$/m);
    expect(result.stdout).toMatch(/Documents kept/);
    expect(await idsOf('patiro_events', 'event_id')).toEqual([s.events.redelivered]);
    expect(await idsOf('webhook_audit')).toEqual([s.recentAudit]);
    expect(await idsOf('physitrack_deliveries')).toEqual([...s.deliveries.oldUnfinished, ...s.deliveries.recent].sort());
    expect(await count(database.pool, 'patiro_patients')).toBe(1);
    expect(await idsOf('documents')).toEqual(documentsBefore);
    await stat(s.documents.onlyOld.file);
  });

  it("deletes a source's old event without touching another source's recent event with the same eventId", async () => {
    await insertEvent(database.pool, { event_id: 'same-id', last_received_at: OLD });
    await insertEvent(database.pool, { event_id: 'same-id', source_id: 'clinicaaaaaaaaaaaaaa', last_received_at: ago('1 hour') });
    const result = await purge(db, { olderThanMs: parseDuration('90d'), dryRun: false, includeDocuments: false, pdfDir });
    expect(result.counts.patiro_events).toBe(1);
    const { rows } = await database.pool.query('SELECT source_id, event_id FROM patiro_events');
    expect(rows).toEqual([{ source_id: 'clinicaaaaaaaaaaaaaa', event_id: 'same-id' }]);
  });

  it('deletes nothing on a second run', async () => {
    await seed();
    await cli(['purge', '--older-than', '90d', '--include-documents'], env);
    const before = await counts();
    const again = await cli(['purge', '--older-than', '90d', '--include-documents', '--json'], env);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ counts: { patiro_events: 0, webhook_audit: 0, physitrack_deliveries: 0, documents: 0 }, files: { removed: 0 } });
    expect(await counts()).toEqual(before);
  });

  it("keeps a program's current PDF with --include-documents, after its deliveries are purged", async () => {
    const current = await insertDocument(database.pool, { sha256: 'c'.repeat(64), size_bytes: 3, content: Buffer.from('pdf'), created_at: OLD });
    await insertDelivery(database.pool, { received_at: OLD, download_status: 'done', document_id: current });
    await database.pool.query('UPDATE physitrack_programs SET current_document_id = $1', [current]);
    const result = await purge(db, { olderThanMs: parseDuration('90d'), dryRun: false, includeDocuments: true, pdfDir });
    expect(result.counts).toMatchObject({ physitrack_deliveries: 1, documents: 0 });
    expect(await count(database.pool, 'documents')).toBe(1);
    expect(await count(database.pool, 'physitrack_programs')).toBe(1);
  });

  it('with --include-documents also deletes old documents nothing references any more, and their files', async () => {
    const s = await seed();
    const dry = await cli(['purge', '--older-than', '90d', '--include-documents', '--dry-run', '--json'], env);
    expect(JSON.parse(dry.stdout)).toMatchObject({ counts: { ...EXPECTED, documents: 2 }, files: { removed: 1 } });
    await stat(s.documents.onlyOld.file);

    const real = await cli(['purge', '--older-than', '90d', '--include-documents', '--json'], env);
    expect(JSON.parse(real.stdout)).toMatchObject({ counts: { ...EXPECTED, documents: 2 }, files: { removed: 1, missing: 0, refused: 0 } });
    expect(await idsOf('documents')).toEqual([s.documents.stillUsed.id, s.documents.fresh].sort());
    await expect(stat(s.documents.onlyOld.file)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await listFiles(pdfDir)).toEqual([path.relative(pdfDir, s.documents.stillUsed.file)]);
  });

  it('never unlinks a path that is not a stored PDF name, whatever storage_key says', async () => {
    const decoy = path.join(tempDir, 'decoy.pdf');
    await writeFile(decoy, 'not yours');
    await insertDocument(database.pool, { sha256: '1'.repeat(64), size_bytes: 9, storage: 'filesystem', storage_key: '../decoy.pdf', created_at: OLD });
    const result = await cli(['purge', '--older-than', '90d', '--include-documents', '--json'], env);
    expect(JSON.parse(result.stdout)).toMatchObject({ counts: { documents: 1 }, files: { removed: 0, refused: 1 } });
    await stat(decoy);
  });

  it('works through more rows than one batch', async () => {
    for (let i = 0; i < 7; i += 1) await insertAudit(database.pool, { received_at: OLD });
    const result = await purge(db, { olderThanMs: parseDuration('90d'), dryRun: false, includeDocuments: false, pdfDir, batchSize: 2 });
    expect(result.counts.webhook_audit).toBe(7);
    expect(await count(database.pool, 'webhook_audit')).toBe(0);
  });

  it('deletes each row once when two purges run at the same time', async () => {
    await database.pool.query(`INSERT INTO webhook_audit (source_id, vendor, status_code, body_sha256, received_at)
      SELECT 'default', 'patiro', 204, 'x', now() - interval '100 days' FROM generate_series(1, 3000)`);
    await database.pool.query(`INSERT INTO patiro_events (source_id, event_id, event_type, signed_at, last_received_at)
      SELECT 'default', 'e' || g, 'PatientUpdated', now(), now() - interval '100 days' FROM generate_series(1, 2000) g`);
    const other = createDatabase({ url: database.url, poolSize: 1, connectTimeoutMs: 2000 });
    try {
      const options = { olderThanMs: parseDuration('90d'), dryRun: false, includeDocuments: true, pdfDir, batchSize: 50 };
      const [a, b] = await Promise.all([purge(db, options), purge(other, options)]);
      expect(a.counts.webhook_audit + b.counts.webhook_audit).toBe(3000);
      expect(a.counts.patiro_events + b.counts.patiro_events).toBe(2000);
      expect(await count(database.pool, 'webhook_audit')).toBe(0);
      expect(await count(database.pool, 'patiro_events')).toBe(0);
    } finally {
      await other.$disconnect();
    }
  });

  it('skips rows another transaction holds instead of waiting for them; the next run takes them', async () => {
    for (let i = 0; i < 6; i += 1) await insertAudit(database.pool, { received_at: OLD });
    const holder = await database.pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT id FROM webhook_audit ORDER BY id LIMIT 2 FOR UPDATE');
      const options = { olderThanMs: parseDuration('90d'), dryRun: false, includeDocuments: false, pdfDir, batchSize: 2 };
      expect((await purge(db, options)).counts.webhook_audit).toBe(4);
      await holder.query('COMMIT');
      expect((await purge(db, options)).counts.webhook_audit).toBe(2);
    } finally {
      holder.release();
    }
  });

  it('refuses a retention under 1 hour or an unreadable one with exit 2', async () => {
    await insertAudit(database.pool, { received_at: ago('2 hours') });
    for (const args of [['--older-than', '30m'], ['--older-than', '59m'], ['--older-than', '90'], ['--older-than', '1w'], [], ['--batch-size', '0', '--older-than', '1d']]) {
      const result = await cli(['purge', ...args], env);
      expect(result.code, args.join(' ')).toBe(2);
    }
    expect((await cli(['purge', '--older-than', '30m'], env)).stderr).toMatch(/under 1 hour: refused/);
    await expect(purge(db, { olderThanMs: 59 * 60_000, dryRun: false, includeDocuments: false, pdfDir })).rejects.toThrow(RangeError);
    expect(await count(database.pool, 'webhook_audit')).toBe(1);
    expect((await cli(['purge', '--older-than', '1h'], env)).code).toBe(0);
    expect(await count(database.pool, 'webhook_audit')).toBe(0);
  });

  it('runs as a real process', async () => {
    await seed();
    const dry = await spawnCli(['purge', '--older-than', '90d', '--dry-run'], env);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/Dry run: nothing was deleted/);
    const real = await spawnCli(['purge', '--older-than', '90d', '--json'], env);
    expect(real.code).toBe(0);
    expect(JSON.parse(real.stdout).counts).toEqual(EXPECTED);
    expect(await readdir(pdfDir)).not.toHaveLength(0);
  });
});

describe('parseDuration', () => {
  it('reads days, hours and minutes', () => {
    expect(parseDuration('90d')).toBe(90 * 86_400_000);
    expect(parseDuration('12h')).toBe(12 * 3_600_000);
    expect(parseDuration('30m')).toBe(30 * 60_000);
  });

  it('refuses anything else', () => {
    for (const text of ['', '0d', '-1h', '1.5h', '90', 'd', '1w', '10 d', '1h30m']) expect(() => parseDuration(text), text).toThrow(RangeError);
  });
});
