import { createHash, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';

/** The lock key `prisma migrate deploy` takes, so our migrator and Prisma's never run together. */
const PRISMA_ADVISORY_LOCK = 72707369;

export const DEFAULT_MIGRATIONS_DIR = path.resolve(import.meta.dirname, '../../prisma/migrations');

export interface Migration {
  name: string;
  sql: string;
  checksum: string;
}

export interface MigrationResult {
  applied: string[];
  /** Applied migrations whose file changed since; Prisma warns about these too. */
  modified: string[];
}

export async function readMigrations(dir: string): Promise<Migration[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const names = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  return Promise.all(
    names.map(async (name) => {
      const bytes = await readFile(path.join(dir, name, 'migration.sql'));
      return { name, sql: bytes.toString('utf8'), checksum: createHash('sha256').update(bytes).digest('hex') };
    }),
  );
}

/**
 * Applies pending migrations with `prisma migrate deploy` semantics and records them in
 * `_prisma_migrations` exactly as Prisma does, so the Prisma CLI on a connected machine agrees.
 * Each migration runs in its own transaction: a failure leaves no half-applied schema.
 */
/** Another process holds the migrations' lock (it is migrating); `lock: 'try'` does not wait for it. */
export class MigrationLockBusyError extends Error {
  override readonly name = 'MigrationLockBusyError';
  constructor() {
    super('another process is applying the migrations');
  }
}

export interface MigrateOptions {
  /** A database host that does not answer fails the connection after this, not the kernel's minutes. */
  connectTimeoutMs?: number;
  /** `wait` (the CLI, tests) waits for another migrator; `try` (the service, retrying) does not. */
  lock?: 'wait' | 'try';
}

export async function migrate(databaseUrl: string, dir = DEFAULT_MIGRATIONS_DIR, { connectTimeoutMs = 10_000, lock = 'wait' }: MigrateOptions = {}): Promise<MigrationResult> {
  const migrations = await readMigrations(dir);
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: connectTimeoutMs, keepAlive: true });
  // A connection lost mid-way (a restart, a terminated backend) is an error of the query in
  // flight; unheard, the client's 'error' event would end the process that runs the migrations.
  client.on('error', () => undefined);
  await client.connect();
  try {
    // Polled, never waited for inside a statement: a session waiting in pg_advisory_lock holds a
    // snapshot, and CREATE INDEX CONCURRENTLY in the other session waits for every snapshot to end.
    for (;;) {
      const { rows } = await client.query<{ taken: boolean }>('SELECT pg_try_advisory_lock($1) AS taken', [PRISMA_ADVISORY_LOCK]);
      if (rows[0]?.taken) break;
      if (lock === 'try') throw new MigrationLockBusyError();
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await ensureMigrationsTable(client);
    const recorded = await client.query<{ migration_name: string; checksum: string; finished_at: Date | null; rolled_back_at: Date | null }>(
      'SELECT migration_name, checksum, finished_at, rolled_back_at FROM _prisma_migrations',
    );
    const failed = recorded.rows.find((r) => r.finished_at === null && r.rolled_back_at === null);
    if (failed) {
      throw new Error(`Migration ${failed.migration_name} failed earlier and was not rolled back; resolve it before starting (see README, Operations).`);
    }
    const done = new Map(recorded.rows.filter((r) => r.finished_at !== null).map((r) => [r.migration_name, r.checksum]));
    const result: MigrationResult = { applied: [], modified: [] };
    for (const migration of migrations) {
      const checksum = done.get(migration.name);
      if (checksum === undefined) {
        await applyOne(client, migration);
        result.applied.push(migration.name);
      } else if (checksum !== migration.checksum) {
        result.modified.push(migration.name);
      }
    }
    return result;
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [PRISMA_ADVISORY_LOCK]).catch(() => undefined);
    await client.end();
  }
}

async function ensureMigrationsTable(client: pg.Client): Promise<void> {
  await client.query(`CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum" VARCHAR(64) NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL,
    "logs" TEXT,
    "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0
  )`);
}

/**
 * A migration that must run outside a transaction (CREATE INDEX CONCURRENTLY, which does not block
 * the writes of replicas still running) says so on its first line. Such a file must be safe to run
 * again after a failure half-way (IF EXISTS, IF NOT EXISTS, dropping an invalid index first).
 */
const NO_TRANSACTION = /^-- migrate: no transaction\s*$/m;

async function applyOne(client: pg.Client, migration: Migration): Promise<void> {
  const inTransaction = !NO_TRANSACTION.test(migration.sql.split('\n', 1)[0] ?? '');
  if (inTransaction) await client.query('BEGIN');
  try {
    if (inTransaction) await client.query(migration.sql);
    // One statement at a time: PostgreSQL runs a multi-statement query string in one transaction.
    else for (const statement of statementsOf(migration.sql)) await client.query(statement);
    await client.query(
      `INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, applied_steps_count)
       VALUES ($1, $2, $3, now(), now(), 1)`,
      [randomUUID(), migration.checksum, migration.name],
    );
    if (inTransaction) await client.query('COMMIT');
  } catch (err) {
    if (inTransaction) await client.query('ROLLBACK').catch(() => undefined);
    throw new Error(`Migration ${migration.name} failed: ${(err as Error).message}`, { cause: err });
  }
}

/** The statements of a file without a transaction: split at semicolons ending a line (no bodies with `;` in them). */
function statementsOf(sql: string): string[] {
  return sql
    .split(/;\s*$/m)
    .map((statement) => statement.replace(/^\s*--.*$/gm, '').trim())
    .filter((statement) => statement.length > 0);
}
