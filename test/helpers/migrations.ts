import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { DEFAULT_MIGRATIONS_DIR, migrate } from '../../src/db/migrate.js';
import { quietPool, type TestDatabase } from './database.js';

export interface EmptyDatabase {
  url: string;
  pool: pg.Pool;
  /** Applies every migration older than `name`: the schema as it was before that one. */
  migrateBefore(name: string): Promise<void>;
  drop(): Promise<void>;
}

/** An empty database next to `base` (not from the template), for migrating step by step. */
export async function emptyDatabase(base: TestDatabase, label: string): Promise<EmptyDatabase> {
  const name = `wr_mig_${label}_${process.pid}_${Date.now()}`;
  await base.pool.query(`CREATE DATABASE ${name}`);
  const target = new URL(base.url);
  target.pathname = `/${name}`;
  const url = target.toString();
  const pool = quietPool(url);
  return {
    url,
    pool,
    async migrateBefore(migration) {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'wr-migrations-'));
      try {
        for (const entry of await readdir(DEFAULT_MIGRATIONS_DIR)) {
          if (entry < migration) await cp(path.join(DEFAULT_MIGRATIONS_DIR, entry), path.join(dir, entry), { recursive: true });
        }
        await migrate(url, dir);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
    async drop() {
      await pool.end();
      await base.pool.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}
