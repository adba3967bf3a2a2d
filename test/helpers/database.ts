import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';

export interface TestDatabase {
  url: string;
  /** A plain pg pool for assertions that read the tables the way the PMS does. */
  pool: pg.Pool;
  drop(): Promise<void>;
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
  const pool = new pg.Pool({ connectionString: url.toString(), max: 4 });
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
