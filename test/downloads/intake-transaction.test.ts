import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDatabase, createDatabase, poolOf } from '../../src/db/client.js';
import { insertDeliveries } from '../../src/downloads/intake.js';
import { startTcpProxy } from '../faults/tcp-proxy.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { newDelivery } from '../helpers/physitrack.js';

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

const notice = (patientId: string) => newDelivery({ patientId, fileUrl: `https://files.physitrack.com/transaction-test/${patientId}.pdf` });

describe('the intake transaction', () => {
  it('fails a statement held past the timeout within it, keeps its connection, and commits nothing late', async () => {
    const db = createDatabase({ url: database.url, poolSize: 1, connectTimeoutMs: 5000, queryTimeoutMs: 1500 });
    const locker = await database.pool.connect();
    try {
      await poolOf(db).query('SELECT 1'); // the connection is open before the clock starts
      await locker.query('BEGIN; LOCK TABLE physitrack_deliveries IN ACCESS EXCLUSIVE MODE');
      const started = performance.now();
      // The server cancels its own statement (statement_timeout, 90 % of the client's): 57014.
      await expect(insertDeliveries(db, [notice('held')])).rejects.toMatchObject({ code: '57014' });
      expect(performance.now() - started).toBeLessThan(2600); // a ROLLBACK queued behind it would add 1.5 s more
      await locker.query('ROLLBACK');
      const { rows: [backend] } = await poolOf(db).query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      await insertDeliveries(db, [notice('after')]);
      // Rolled back and kept: the same backend answers.
      expect((await poolOf(db).query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]).toEqual(backend);
      await sleep(300); // time for the cancelled statement to run, were it ever to commit
      const { rows } = await database.pool.query<{ patient_id: string }>('SELECT patient_id FROM physitrack_deliveries ORDER BY id');
      expect(rows.map((r) => r.patient_id)).toEqual(['after']);
    } finally {
      await locker.query('ROLLBACK'); // a no-op unless an assertion failed while the lock was held
      locker.release();
      await closeDatabase(db);
    }
  });

  it('fails within the client-side timeout when the server goes silent, without waiting for a ROLLBACK, and recovers', async () => {
    const proxy = await startTcpProxy({ host: new URL(database.url).hostname, port: Number(new URL(database.url).port) });
    const db = createDatabase({ url: proxy.urlFor(database.url), poolSize: 1, connectTimeoutMs: 1000, queryTimeoutMs: 1500 });
    try {
      await poolOf(db).query('SELECT 1');
      proxy.cut({ newConnections: 'blackhole', currentConnections: 'freeze' });
      const started = performance.now();
      await expect(insertDeliveries(db, [notice('silent')])).rejects.toThrow(/timeout/i);
      expect(performance.now() - started).toBeLessThan(2600); // a ROLLBACK queued behind it would add 1.5 s more
      await proxy.restore();
      // The silent connection was dropped: a new one writes the next batch.
      await insertDeliveries(db, [notice('recovered')]);
      const { rows } = await database.pool.query<{ patient_id: string }>('SELECT patient_id FROM physitrack_deliveries ORDER BY id');
      expect(rows.map((r) => r.patient_id)).toContain('recovered');
    } finally {
      await closeDatabase(db);
      await proxy.close();
    }
  });
});
