import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDatabase, createDatabase } from '../../src/db/client.js';
import { insertDeliveries, type NewDelivery } from '../../src/downloads/intake.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

// The intake runs in its own transaction (BEGIN, the statement, COMMIT). A statement that outlives
// the pool's query timeout must fail its batch within that timeout, not after a ROLLBACK queued
// behind it has timed out as well, and must leave nothing to commit later.

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database.drop();
});

const notice = (patientId: string): NewDelivery => ({
  sourceId: 'default',
  refusal: null,
  deadlineHours: 24,
  bodySha256: 'ab'.repeat(32),
  sourceAddress: '127.0.0.1',
  notice: {
    practitionerToken: 'practitioner-token',
    patientId,
    fileUrl: `https://files.physitrack.com/transaction-test/${patientId}.pdf`,
    programName: 'Knee Rehab Program',
    programDate: '2026-11-01',
    programCreatedAt: '2026-11-01T10:00:00Z',
    updated: false,
  },
});

describe('the intake transaction', () => {
  it('fails a statement held past the query timeout within that timeout, drops its connection, and commits nothing late', async () => {
    const db = createDatabase({ url: database.url, poolSize: 1, connectTimeoutMs: 5000, queryTimeoutMs: 1000 });
    const locker = await database.pool.connect();
    try {
      await locker.query('BEGIN; LOCK TABLE physitrack_deliveries IN ACCESS EXCLUSIVE MODE');
      const started = performance.now();
      await expect(insertDeliveries(db, [notice('held')])).rejects.toThrow(/timeout/i);
      expect(performance.now() - started).toBeLessThan(1700); // a queued ROLLBACK would add another 1000 ms
      await locker.query('ROLLBACK');
      // The one connection was replaced: the next batch is written.
      await insertDeliveries(db, [notice('after')]);
      await sleep(300); // time for the abandoned statement to run, were it ever to commit
      const { rows } = await database.pool.query<{ patient_id: string }>('SELECT patient_id FROM physitrack_deliveries ORDER BY id');
      expect(rows.map((r) => r.patient_id)).toEqual(['after']);
    } finally {
      locker.release();
      await closeDatabase(db);
    }
  });
});
