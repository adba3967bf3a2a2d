import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';

export interface TestDatabase {
  url: string;
  /** A plain pg pool for assertions that read the tables the way the PMS does. */
  pool: pg.Pool;
  drop(): Promise<void>;
}

/**
 * A pool for assertions. `pool.end()` resolves before its connections have closed, and DROP
 * DATABASE … WITH (FORCE) right after sends them 57P01: a client without an 'error' listener then
 * throws it as an uncaught exception (seen in CI, where vitest fails the run on it).
 */
export function quietPool(url: string, max = 4): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max });
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

/** A fresh, migrated database for one test file, copied from the run's template. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const adminUrl = inject('databaseAdminUrl');
  const template = inject('templateDatabase');
  // The global setup's pid names the run, so its teardown can find leftovers of crashed files.
  const runPid = template.split('_')[2];
  const name = `wr_test_${runPid}_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${template}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const pool = quietPool(url.toString());
  return {
    url: url.toString(),
    pool,
    async drop() {
      await pool.end();
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** A URL where no PostgreSQL listens (a port just freed), for outage tests. */
export async function unreachableDatabaseUrl(): Promise<string> {
  const { freePort } = await import('../../src/db/embedded.js');
  return `postgresql://postgres@127.0.0.1:${await freePort()}/none`;
}
