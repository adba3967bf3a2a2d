import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, poolOf, type Database } from '../../src/db/client.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

let database: TestDatabase;
let db: Database;

beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 2, connectTimeoutMs: 2000 });
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
});
