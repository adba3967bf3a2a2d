import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type Database } from '../../src/db/client.js';
import { startDailyPurge } from '../../src/retention-schedule.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { captureLogs } from '../helpers/logs.js';
import { waitFor } from '../helpers/wait.js';

let database: TestDatabase;
let db: Database;
beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 2, connectTimeoutMs: 1000 });
});
afterAll(async () => {
  await db.$disconnect();
  await database.drop();
});

describe('RETENTION_DAYS: the daily purge in the service', () => {
  it('deletes rows older than the retention, keeps newer ones, and runs again each interval', async () => {
    await database.pool.query(`INSERT INTO patiro_events (source_id, event_id, event_type, signed_at, first_received_at, last_received_at)
      VALUES ('default', 'old', 'PatientUpdated', now(), now() - interval '40 days', now() - interval '40 days'),
             ('default', 'new', 'PatientUpdated', now(), now() - interval '10 days', now() - interval '10 days')`);
    const logs = captureLogs();
    const schedule = startDailyPurge({ db, retentionDays: 30, pdfDir: '/nonexistent', log: logs.logger, intervalMs: 50, firstRunDelayMs: 0 });
    await waitFor(async () => (await database.pool.query('SELECT event_id FROM patiro_events')).rows.length === 1);
    await database.pool.query(`INSERT INTO patiro_events (source_id, event_id, event_type, signed_at, first_received_at, last_received_at)
      VALUES ('default', 'old-2', 'PatientUpdated', now(), now() - interval '31 days', now() - interval '31 days')`);
    await waitFor(async () => (await database.pool.query("SELECT 1 FROM patiro_events WHERE event_id = 'old-2'")).rows.length === 0);
    await schedule.stop();
    expect((await database.pool.query('SELECT event_id FROM patiro_events')).rows).toEqual([{ event_id: 'new' }]);
    expect(logs.lines.join('\n')).toMatch(/retention purge finished/);
  });
});
