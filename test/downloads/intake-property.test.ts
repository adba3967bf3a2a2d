import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDatabase, createDatabase, type Database } from '../../src/db/client.js';
import { insertDeliveries, type NewDelivery } from '../../src/downloads/intake.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { newDelivery } from '../helpers/physitrack.js';

// Group commit must not change what the tables say: notices written in any batches end as they
// would one by one (deliveries and their counts, programs and their versions, the audit). Ids and
// times differ between two runs, so rows are compared by their keys.

let database: TestDatabase;
let db: Database;
beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 2, connectTimeoutMs: 5000 });
});
afterAll(async () => {
  await closeDatabase(db);
  await database.drop();
});

const CREATED_AT = ['2026-11-01T10:00:00Z', '2026-11-02T10:00:00Z', null] as const; // null: keyed by date and name

const arbitraryNotice = fc.record({
  source: fc.constantFrom('default', 'clinicaaaaaaaaaaaaaa'),
  patient: fc.constantFrom('p1', 'p1', 'p2'), // mostly one patient, so that batches meet known programs
  program: fc.constantFrom(0, 1, 2),
  file: fc.constantFrom('f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'refused'),
  token: fc.constantFrom('t1', 't2'),
  name: fc.constantFrom('Knee', 'Hip'),
  updated: fc.boolean(),
});

type NoticeFields = typeof arbitraryNotice extends fc.Arbitrary<infer T> ? T : never;

function toDelivery(n: NoticeFields): NewDelivery {
  return newDelivery(
    { practitionerToken: n.token, patientId: n.patient, fileUrl: `https://files.physitrack.com/property/${n.file}.pdf`, programName: n.name, programCreatedAt: CREATED_AT[n.program]!, updated: n.updated },
    { sourceId: n.source, refusal: n.file === 'refused' ? 'file_url host is not allowed' : null },
  );
}

/** The three tables, with every id replaced by the key of the row it names. */
async function tables() {
  const deliveries = await database.pool.query(
    `SELECT d.source_id, d.notice_key, d.notice_count, d.download_status, d.last_error, d.practitioner_token, d.patient_id, d.program_name,
            d.updated, p.patient_id AS program_patient, p.program_key
     FROM physitrack_deliveries d LEFT JOIN physitrack_programs p ON p.id = d.program_id ORDER BY d.source_id, d.notice_key`,
  );
  const programs = await database.pool.query(
    `SELECT p.source_id, p.patient_id, p.program_key, p.versions, p.practitioner_token, p.program_name, latest.notice_key AS latest_notice
     FROM physitrack_programs p LEFT JOIN physitrack_deliveries latest ON latest.id = p.latest_delivery_id ORDER BY p.source_id, p.patient_id, p.program_key`,
  );
  const audit = await database.pool.query(
    `SELECT a.source_id, a.status_code, d.notice_key, count(*)::int AS n
     FROM webhook_audit a LEFT JOIN physitrack_deliveries d ON d.id::text = a.event_id
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
  );
  return { deliveries: deliveries.rows, programs: programs.rows, audit: audit.rows };
}

const emptyTables = () => database.pool.query('TRUNCATE physitrack_deliveries, physitrack_programs, webhook_audit');

describe('the Physitrack intake', () => {
  it('ends in the same tables whether notices are written one by one or in any batches', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(arbitraryNotice, { minLength: 1, maxLength: 12 }), fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 12, maxLength: 12 }), async (notices, cuts) => {
        const deliveries = notices.map(toDelivery);
        await emptyTables();
        for (const d of deliveries) await insertDeliveries(db, [d]);
        const oneByOne = await tables();

        await emptyTables();
        for (let start = 0, i = 0; start < deliveries.length; start += cuts[i++]!) await insertDeliveries(db, deliveries.slice(start, start + cuts[i]!));
        expect(await tables()).toEqual(oneByOne);
      }),
      { numRuns: 60 },
    );
  });
});
