import path from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { startEmbeddedPostgres } from './embedded.js';
import { migrate, type MigrateOptions } from './migrate.js';

export interface ResolvedDatabase {
  url: string;
  embedded: boolean;
  /** Stops the embedded server, if one was started; a no-op for an external database. */
  stop(): Promise<void>;
}

const EMBEDDED_DATABASE = 'webhook_receiver';

/** DATABASE_URL when set; otherwise (never in production: config refuses) an embedded PostgreSQL. */
export async function resolveDatabase(config: Config, log: Logger): Promise<ResolvedDatabase> {
  if (config.databaseUrl) return { url: config.databaseUrl, embedded: false, stop: async () => {} };
  const server = await startEmbeddedPostgres({ dir: path.join(config.dataDir, 'postgres'), log });
  try {
    await createDatabaseIfMissing(server.url, EMBEDDED_DATABASE);
  } catch (err) {
    await server.stop();
    throw err;
  }
  const url = new URL(server.url);
  url.pathname = `/${EMBEDDED_DATABASE}`;
  return { url: url.toString(), embedded: true, stop: () => server.stop() };
}

export async function createDatabaseIfMissing(adminUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`);
  } finally {
    await client.end();
  }
}

export async function migrateAndReport(url: string, log: Logger, options?: MigrateOptions): Promise<void> {
  const result = await migrate(url, undefined, options);
  if (result.applied.length > 0) log.info({ migrations: result.applied }, 'applied database migrations');
  else log.info('database schema is up to date');
  for (const name of result.modified) log.warn({ migration: name }, 'an applied migration was modified after it was applied');
}
