import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MIGRATIONS_DIR, migrate, readMigrations } from '../../src/db/migrate.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/** An empty database (not from the template), so the migrator starts from nothing. */
async function emptyDatabase(base: TestDatabase, name: string): Promise<string> {
  await base.pool.query(`CREATE DATABASE ${name}`);
  const url = new URL(base.url);
  url.pathname = `/${name}`;
  return url.toString();
}

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

let base: TestDatabase;
const created: string[] = [];
beforeAll(async () => {
  base = await createTestDatabase();
});
afterAll(async () => {
  for (const name of created) await base.pool.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await base.drop();
});

function uniqueName(label: string): string {
  const name = `wr_mig_${label}_${process.pid}_${Date.now()}`;
  created.push(name);
  return name;
}

describe('migrate', () => {
  it('applies every migration once and records it as Prisma does', async () => {
    const url = await emptyDatabase(base, uniqueName('fresh'));
    const files = await readMigrations(DEFAULT_MIGRATIONS_DIR);
    const first = await migrate(url);
    expect(first.applied).toEqual(files.map((f) => f.name));

    const rows = await query<{ migration_name: string; checksum: string; finished_at: Date | null; applied_steps_count: number; rolled_back_at: Date | null }>(
      url,
      'SELECT migration_name, checksum, finished_at, applied_steps_count, rolled_back_at FROM _prisma_migrations ORDER BY migration_name',
    );
    expect(rows).toHaveLength(files.length);
    for (const row of rows) {
      const bytes = await readFile(path.join(DEFAULT_MIGRATIONS_DIR, row.migration_name, 'migration.sql'));
      expect(row.checksum).toBe(createHash('sha256').update(bytes).digest('hex'));
      expect(row.finished_at).toBeInstanceOf(Date);
      expect(row.rolled_back_at).toBeNull();
      expect(row.applied_steps_count).toBe(1);
    }
    expect((await migrate(url)).applied).toEqual([]);
  });

  it('applies each migration once when several replicas start together', async () => {
    const url = await emptyDatabase(base, uniqueName('race'));
    const results = await Promise.all([migrate(url), migrate(url), migrate(url)]);
    const applied = results.flatMap((r) => r.applied);
    const files = await readMigrations(DEFAULT_MIGRATIONS_DIR);
    expect(applied.sort()).toEqual(files.map((f) => f.name).sort());
    const rows = await query(url, 'SELECT 1 FROM _prisma_migrations');
    expect(rows).toHaveLength(files.length);
  });

  it('rolls a failing migration back entirely and records nothing for it', async () => {
    const url = await emptyDatabase(base, uniqueName('fail'));
    const dir = await mkdtemp(path.join(os.tmpdir(), 'wr-migrations-'));
    await mkdir(path.join(dir, '20260101000000_good'));
    await writeFile(path.join(dir, '20260101000000_good', 'migration.sql'), 'CREATE TABLE good (id int);');
    await mkdir(path.join(dir, '20260102000000_bad'));
    await writeFile(path.join(dir, '20260102000000_bad', 'migration.sql'), 'CREATE TABLE half (id int);\nSELECT no_such_function();');
    await expect(migrate(url, dir)).rejects.toThrow(/20260102000000_bad failed/);
    const tables = await query<{ table_name: string }>(url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1");
    expect(tables.map((t) => t.table_name)).toEqual(['_prisma_migrations', 'good']);
    const recorded = await query<{ migration_name: string }>(url, 'SELECT migration_name FROM _prisma_migrations');
    expect(recorded.map((r) => r.migration_name)).toEqual(['20260101000000_good']);
  });

  it('runs a "no transaction" migration statement by statement, records it only once it is through, and runs it again after a failure', async () => {
    const url = await emptyDatabase(base, uniqueName('notx'));
    const dir = await mkdtemp(path.join(os.tmpdir(), 'wr-migrations-'));
    await mkdir(path.join(dir, '20260101000000_table'));
    await writeFile(path.join(dir, '20260101000000_table', 'migration.sql'), 'CREATE TABLE t (id int);');
    await mkdir(path.join(dir, '20260102000000_index'));
    const file = path.join(dir, '20260102000000_index', 'migration.sql');
    // CONCURRENTLY fails inside a transaction block: it runs only if the statements run one by one.
    await writeFile(file, '-- migrate: no transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\nSELECT no_such_function();\n');
    await expect(migrate(url, dir)).rejects.toThrow(/20260102000000_index failed/);
    expect(await query(url, "SELECT 1 FROM pg_indexes WHERE indexname = 't_id'")).toHaveLength(1);
    expect(await query(url, "SELECT 1 FROM _prisma_migrations WHERE migration_name = '20260102000000_index'")).toHaveLength(0);
    await writeFile(file, '-- migrate: no transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t_id ON t (id);\n');
    expect((await migrate(url, dir)).applied).toEqual(['20260102000000_index']);
  });

  it('reports an applied migration whose file changed since', async () => {
    const url = await emptyDatabase(base, uniqueName('modified'));
    const dir = await mkdtemp(path.join(os.tmpdir(), 'wr-migrations-'));
    await mkdir(path.join(dir, '20260101000000_one'));
    await writeFile(path.join(dir, '20260101000000_one', 'migration.sql'), 'CREATE TABLE one (id int);');
    await migrate(url, dir);
    await writeFile(path.join(dir, '20260101000000_one', 'migration.sql'), 'CREATE TABLE one (id bigint);');
    expect(await migrate(url, dir)).toEqual({ applied: [], modified: ['20260101000000_one'] });
  });
});
