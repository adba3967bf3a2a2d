import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeDatabase, createDatabase, poolOf, RESERVED_POOL_SIZE, reservedPoolOf } from '../../src/db/client.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database.drop();
});

describe('the reserved pool', () => {
  it('answers while the main pool is exhausted, holds at most RESERVED_POOL_SIZE connections, and closes with the database', async () => {
    const db = createDatabase({ url: database.url, poolSize: 1, connectTimeoutMs: 1000 });
    const held = await poolOf(db).connect();
    const reserved = reservedPoolOf(db);
    try {
      const answers = await Promise.all(Array.from({ length: 6 }, () => reserved.query<{ one: number }>('SELECT 1 AS one')));
      expect(answers.map((a) => a.rows[0]!.one)).toEqual(Array(6).fill(1));
      expect(reserved.totalCount).toBeLessThanOrEqual(RESERVED_POOL_SIZE);
    } finally {
      held.release();
    }
    await closeDatabase(db);
    expect(reserved.ended).toBe(true);
    expect(poolOf(db).ended).toBe(true);
  });
});
