import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import { buildTestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { emptyDatabase, type EmptyDatabase } from '../helpers/migrations.js';
import { PATIRO_SECRET, signedPatiroRequest } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';

const SOURCES_MIGRATION = '20261201000000_sources';

let base: TestDatabase;
let target: EmptyDatabase;
let url: string;
let pool: pg.Pool;

beforeAll(async () => {
  base = await createTestDatabase();
  target = await emptyDatabase(base, 'sources');
  ({ url, pool } = target);
});
afterAll(async () => {
  await target.drop();
  await base.drop();
});

describe('the sources migration', () => {
  it('gives every existing row source_id default, loses nothing, and the default source keeps working', async () => {
    await target.migrateBefore(SOURCES_MIGRATION);
    await pool.query(`
      INSERT INTO patiro_events (event_id, event_type, data, signed_at) VALUES ('e-1', 'PatientUpdated', '{"id": 4711}', now() - interval '1 day'), ('e-2', 'PatientRevealed', '{"id": 4712}', now());
      INSERT INTO patiro_patients (patient_id, data, signed_at, updated_at, last_event_id) VALUES ('4711', '{"id": 4711}', now() - interval '1 day', now(), 'e-1');
      INSERT INTO documents (sha256, size_bytes, content_type, storage, content) VALUES (repeat('a', 64), 4, 'application/pdf', 'database', '\\x25504446');
      INSERT INTO physitrack_deliveries (practitioner_token, patient_id, file_url, program_name, updated, deadline_at, download_status, document_id)
        VALUES ('tok', '23-4501', 'https://files.physitrack.com/p.pdf', 'Knee', false, now() + interval '1 day', 'done', (SELECT id FROM documents));
      INSERT INTO webhook_audit (vendor, event_id, status_code, body_sha256) VALUES ('patiro', 'e-1', 204, 'x'), ('physitrack', '1', 204, 'y');`);
    const before = await pool.query(`SELECT
      (SELECT count(*)::int FROM patiro_events) AS events, (SELECT count(*)::int FROM patiro_patients) AS patients,
      (SELECT count(*)::int FROM physitrack_deliveries) AS deliveries, (SELECT count(*)::int FROM webhook_audit) AS audit`);

    const result = await migrate(url);
    expect(result.applied[0]).toBe(SOURCES_MIGRATION);

    const after = await pool.query(`SELECT
      (SELECT count(*)::int FROM patiro_events WHERE source_id = 'default') AS events,
      (SELECT count(*)::int FROM patiro_patients WHERE source_id = 'default') AS patients,
      (SELECT count(*)::int FROM physitrack_deliveries WHERE source_id = 'default') AS deliveries,
      (SELECT count(*)::int FROM webhook_audit WHERE source_id = 'default') AS audit`);
    expect(after.rows[0]).toEqual(before.rows[0]);
    const delivery = await pool.query('SELECT download_status, document_id IS NOT NULL AS has_document FROM physitrack_deliveries');
    expect(delivery.rows).toEqual([{ download_status: 'done', has_document: true }]);

    // The old paths still serve the environment's source, and a redelivery finds the migrated row.
    const t = await buildTestApp(url, { PATIRO_SIGNING_SECRET: PATIRO_SECRET, PHYSITRACK_API_KEY: PHYSITRACK_KEY });
    try {
      const redelivery = { eventId: 'e-1', eventType: 'PatientUpdated', timestamp: '2026-03-27T10:04:03.4247725', data: { id: 4711, firstName: 'New' } };
      expect((await t.app.inject(signedPatiroRequest({ body: JSON.stringify(redelivery) }))).statusCode).toBe(204);
      expect((await t.app.inject(physitrackRequest(physitrackNotice()))).statusCode).toBe(204);
    } finally {
      await t.close();
    }
    const event = await pool.query("SELECT source_id, delivery_count, data FROM patiro_events WHERE event_id = 'e-1'");
    expect(event.rows).toEqual([{ source_id: 'default', delivery_count: 2, data: { id: 4711, firstName: 'New' } }]);
    const patient = await pool.query("SELECT source_id, data FROM patiro_patients WHERE patient_id = '4711'");
    expect(patient.rows).toEqual([{ source_id: 'default', data: { id: 4711, firstName: 'New' } }]);
    expect((await pool.query('SELECT count(*)::int AS n FROM physitrack_deliveries')).rows[0].n).toBe(2);
  });
});
