import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, poolOf, type Database } from '../../src/db/client.js';
import { createDownloadQueue } from '../../src/downloads/queue.js';
import { recordDocument } from '../../src/storage/document-rows.js';
import { toPhysitrackNotice } from '../../src/webhooks/physitrack-payload.js';
import { writePhysitrackBatch } from '../../src/webhooks/physitrack-store.js';
import { physitrackNotice } from '../helpers/physitrack.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

let database: TestDatabase;
let db: Database;

beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 1, connectTimeoutMs: 2000 });
});
afterAll(async () => {
  await db.$disconnect();
  await database.drop();
});

describe('createDatabase', () => {
  it('survives the server closing an idle connection before Prisma ever connected, and reconnects', async () => {
    const pool = poolOf(db);
    const { rows } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const idleError = new Promise((resolve) => pool.once('error', resolve));
    await database.pool.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
    expect(await idleError).toMatchObject({ code: '57P01' });
    // Had nobody listened for 'error', the process would have crashed before this line.
    expect((await pool.query<{ one: number }>('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('commits claims and document rows asynchronously, leaving the connection synchronous for the ack path', async () => {
    const pool = poolOf(db); // one connection, so every statement below runs on the same session
    const notice = toPhysitrackNotice(physitrackNotice());
    await writePhysitrackBatch(db, [{ notice, refusal: null, deadlineHours: 24, bodySha256: 'b'.repeat(64), sourceAddress: null }]);
    expect(await createDownloadQueue(db, 'worker-a', 60).claim(1)).toHaveLength(1);
    expect((await pool.query('SHOW synchronous_commit')).rows).toEqual([{ synchronous_commit: 'on' }]);
    const row = { sha256: 'a'.repeat(64), sizeBytes: 3, contentType: 'application/pdf', storage: 'database' as const, storageKey: null, content: Buffer.from('%PD') };
    expect((await recordDocument(db, row)).deduplicated).toBe(false);
    expect((await pool.query('SHOW synchronous_commit')).rows).toEqual([{ synchronous_commit: 'on' }]);
  });
});

