import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import { buildTestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { emptyDatabase, type EmptyDatabase } from '../helpers/migrations.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';

const PROGRAMS_MIGRATION = '20261201000100_physitrack_programs';

let base: TestDatabase;
let target: EmptyDatabase;
let url: string;
let pool: pg.Pool;

beforeAll(async () => {
  base = await createTestDatabase();
  target = await emptyDatabase(base, 'programs');
  ({ url, pool } = target);
});
afterAll(async () => {
  await target.drop();
  await base.drop();
});

const FILE = 'https://files.physitrack.com/p';

describe('the programs migration', () => {
  it('keeps every delivery, gives each its program, and makes the newest of a repeated notice the one found again', async () => {
    await target.migrateBefore(PROGRAMS_MIGRATION);
    const insert = (values: string) =>
      pool.query(`INSERT INTO physitrack_deliveries (source_id, practitioner_token, patient_id, file_url, program_name, program_date,
        program_created_at, updated, deadline_at, download_status, document_id) VALUES ${values}`);
    await pool.query(`INSERT INTO documents (sha256, size_bytes, content_type, storage, content) VALUES
      (repeat('1', 64), 4, 'application/pdf', 'database', '\\x25504446'), (repeat('2', 64), 4, 'application/pdf', 'database', '\\x25504446')`);
    const doc = (n: number) => `(SELECT id FROM documents WHERE sha256 = repeat('${n}', 64))`;
    await insert(`
      ('default', 'tok-a', 'P1', '${FILE}/v1.pdf', 'Knee', '2026-11-01', '2026-11-01T08:00:00Z', false, now() + interval '1 day', 'done', ${doc(1)}),
      ('default', 'tok-b', 'P1', '${FILE}/v2.pdf', 'Knee, week 2', '2026-11-01', '2026-11-01T08:00:00Z', true, now() + interval '1 day', 'done', ${doc(2)}),
      ('default', 'tok-b', 'P1', '${FILE}/v3.pdf', 'Knee, week 3', '2026-11-01', '2026-11-01T08:00:00Z', true, now() + interval '1 day', 'pending', NULL),
      ('default', 'tok-a', 'P2', '${FILE}/again.pdf', 'Hip', '2026-11-03', NULL, false, now() + interval '1 day', 'failed', NULL),
      ('default', 'tok-a', 'P2', '${FILE}/again.pdf', 'Hip', '2026-11-03', NULL, false, now() + interval '1 day', 'pending', NULL),
      ('clinicaaaaaaaaaaaaaa', 'tok-c', 'P1', '${FILE}/v1.pdf', 'Knee', '2026-11-01', '2026-11-01T08:00:00Z', false, now() + interval '1 day', 'pending', NULL)`);
    const before = (await pool.query('SELECT id FROM physitrack_deliveries ORDER BY id')).rows.map((r) => r.id);

    expect((await migrate(url)).applied[0]).toBe(PROGRAMS_MIGRATION);

    const rows = (await pool.query('SELECT id, patient_id, source_id, program_id, notice_key, notice_count FROM physitrack_deliveries ORDER BY id')).rows;
    expect(rows.map((r) => r.id)).toEqual(before);
    expect(rows.every((r) => r.program_id !== null && r.notice_count === 1)).toBe(true);
    const programs = (await pool.query('SELECT * FROM physitrack_programs ORDER BY id')).rows;
    expect(programs).toHaveLength(3);
    const knee = programs.find((p) => p.source_id === 'default' && p.patient_id === 'P1')!;
    expect(knee).toMatchObject({ versions: 3, program_name: 'Knee, week 3', practitioner_token: 'tok-b', latest_delivery_id: before[2], current_delivery_id: before[1] });
    expect(knee.current_document_id).toBe((await pool.query("SELECT id FROM documents WHERE sha256 = repeat('2', 64)")).rows[0].id);
    expect(rows.filter((r) => r.patient_id === 'P2').map((r) => r.notice_key === null)).toEqual([true, false]);
    // The same notice stored twice is one version.
    expect(programs.find((p) => p.patient_id === 'P2')).toMatchObject({ versions: 1 });
    expect(new Set(rows.filter((r) => r.patient_id === 'P1').map((r) => r.program_id)).size).toBe(2); // two sources

    // Physitrack sends the repeated notice once more: it is counted on the newest of the two.
    const t = await buildTestApp(url, { PHYSITRACK_API_KEY: PHYSITRACK_KEY });
    try {
      const res = await t.app.inject(physitrackRequest(physitrackNotice({ patient_id: 'P2', file_url: `${FILE}/again.pdf`, name: 'Hip', date: '2026-11-03', date_iso: '' })));
      expect(res.statusCode).toBe(204);
    } finally {
      await t.close();
    }
    const again = (await pool.query("SELECT id, notice_count FROM physitrack_deliveries WHERE patient_id = 'P2' ORDER BY id")).rows;
    expect(again.map((r) => r.notice_count)).toEqual([1, 2]);
  });
});
