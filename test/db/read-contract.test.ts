import { readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { scramVerifier } from '../../src/cli/commands/db.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { cli } from '../cli/operator/helpers.js';

// The read contract: what a PMS reads are the views of receiver_v1, with stable column names and
// types. The snapshot beside this file is the contract; a migration that changes a view's columns
// (a rename, a type, a removal) fails here and must make receiver_v2 instead. Adding a view is not a
// break: add it to the snapshot.

const SNAPSHOT = path.join(import.meta.dirname, 'receiver_v1.snapshot.json');

let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
// Roles belong to the whole cluster: one name per run, dropped once its database (and grants) are gone.
const ROLE = `pms_reader_${process.pid}`;
const GRANTED = `pms_granted_${process.pid}`;
const SCRAM = `pms_scram_${process.pid}`;
afterAll(async () => {
  await database.drop();
  const admin = new pg.Client({ connectionString: inject('databaseAdminUrl') });
  await admin.connect();
  for (const role of [ROLE, GRANTED, SCRAM]) await admin.query(`DROP ROLE IF EXISTS ${role}`);
  await admin.end();
});

/** Every view of the schema with its columns (name and type), in order. */
export async function contractOf(pool: pg.Pool, schema: string): Promise<Record<string, string[]>> {
  const { rows } = await pool.query<{ table_name: string; column_name: string; type: string }>(
    `SELECT table_name, column_name, format_type(a.atttypid, a.atttypmod) AS type
     FROM information_schema.columns c
     JOIN pg_attribute a ON a.attrelid = format('%I.%I', c.table_schema, c.table_name)::regclass AND a.attname = c.column_name
     WHERE c.table_schema = $1 ORDER BY table_name, ordinal_position`,
    [schema],
  );
  const contract: Record<string, string[]> = {};
  for (const row of rows) (contract[row.table_name] ??= []).push(`${row.column_name} ${row.type}`);
  // Functions too: their arguments and what they return are as much the contract as a view's columns.
  const functions = await pool.query<{ name: string; args: string; result: string }>(
    `SELECT p.proname AS name, pg_get_function_identity_arguments(p.oid) AS args, pg_get_function_result(p.oid) AS result
     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 ORDER BY 1, 2`,
    [schema],
  );
  for (const f of functions.rows) contract[`function ${f.name}(${f.args})`] = [`returns ${f.result}`];
  return contract;
}

describe('the read contract (receiver_v1)', () => {
  it('has exactly the views and columns of its committed snapshot', async () => {
    const snapshot = JSON.parse(await readFile(SNAPSHOT, 'utf8')) as Record<string, string[]>;
    expect(await contractOf(database.pool, 'receiver_v1')).toEqual(snapshot);
  });

  it('fails when a view column is renamed (the check itself)', async () => {
    const snapshot = JSON.parse(await readFile(SNAPSHOT, 'utf8')) as Record<string, string[]>;
    await database.pool.query('BEGIN');
    try {
      await database.pool.query('ALTER VIEW receiver_v1.patiro_patients RENAME COLUMN patient_id TO patient');
      expect(await contractOf(database.pool, 'receiver_v1')).not.toEqual(snapshot);
    } finally {
      await database.pool.query('ROLLBACK');
    }
  });

  it('gives the reader role the views and nothing else: no table, no credentials, no writes', async () => {
    const password = 'reader-password-0123456789';
    const granted = await cli(['db', 'grant-reader', ROLE, '--password-stdin'], { DATABASE_URL: database.url }, { stdin: password });
    expect(granted.code, granted.stderr).toBe(0);
    expect(granted.stdout).toContain(`Created role ${ROLE}`);
    const stored = (await database.pool.query('SELECT rolpassword FROM pg_authid WHERE rolname = $1', [ROLE])).rows[0].rolpassword as string;
    expect(stored).toMatch(/^SCRAM-SHA-256\$4096:/);
    // Again: an update, not an error.
    expect((await cli(['db', 'grant-reader', ROLE], { DATABASE_URL: database.url })).stdout).toMatch(/Updated role/);

    const url = new URL(database.url);
    url.username = ROLE;
    url.password = password;
    const reader = new pg.Client({ connectionString: url.toString() });
    await reader.connect();
    try {
      for (const view of Object.keys(await contractOf(database.pool, 'receiver_v1')).filter((name) => !name.startsWith('function '))) {
        await expect(reader.query(`SELECT * FROM receiver_v1.${view} LIMIT 1`), view).resolves.toBeDefined();
      }
      await expect(reader.query(`SELECT * FROM receiver_v1.changes_after('', 10)`)).resolves.toBeDefined();
      await expect(reader.query('SELECT receiver_v1.changes_head()')).resolves.toBeDefined();
      await expect(reader.query('SELECT * FROM public.changes LIMIT 1')).rejects.toThrow(/permission denied/);
      await expect(reader.query('SELECT credentials FROM public.sources')).rejects.toThrow(/permission denied/);
      await expect(reader.query('SELECT * FROM public.patiro_events LIMIT 1')).rejects.toThrow(/permission denied/);
      await expect(reader.query('SELECT credentials FROM receiver_v1.sources')).rejects.toThrow(/column "credentials" does not exist/);
      await expect(reader.query(`DELETE FROM receiver_v1.patiro_patients`)).rejects.toThrow(/read-only transaction|permission denied/);
    } finally {
      await reader.end();
    }
  });

  it('refuses a role it did not make (views would not limit it): the one it connects as, one granted a column', async () => {
    const env = { DATABASE_URL: database.url };
    const self = (await database.pool.query<{ name: string; is_super: boolean }>('SELECT current_user AS name, rolsuper AS is_super FROM pg_roles WHERE rolname = current_user')).rows[0]!;
    const refusedSelf = await cli(['db', 'grant-reader', self.name], env);
    expect(refusedSelf.code).toBe(2);
    expect(refusedSelf.stderr).toMatch(/the role this command connects as/);
    await database.pool.query(`CREATE ROLE ${GRANTED} LOGIN`);
    await database.pool.query(`GRANT SELECT (credentials) ON public.sources TO ${GRANTED}`);
    const refusedGranted = await cli(['db', 'grant-reader', GRANTED], env);
    expect(refusedGranted.code).toBe(2);
    expect(refusedGranted.stderr).toMatch(/was not made by db grant-reader/);
    // Nothing was changed: it is not made read-only by default.
    const settings = await database.pool.query(`SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = $1`, [GRANTED]);
    expect(settings.rows).toEqual([]);
    const nonAscii = await cli(['db', 'grant-reader', `${ROLE}_x`, '--password-stdin'], env, { stdin: 'pässwörd-0123456789' });
    expect(nonAscii.code).toBe(2);
    expect(nonAscii.stderr).toMatch(/printable ASCII/);
  });

  it('sends the password as the SCRAM-SHA-256 verifier PostgreSQL itself makes of it', async () => {
    const password = 'a password, 0123456789!';
    const client = await database.pool.connect();
    try {
      await client.query(`SET password_encryption = 'scram-sha-256'`);
      await client.query(`CREATE ROLE ${SCRAM} PASSWORD ${client.escapeLiteral(password)}`);
      const [row] = (await client.query<{ verifier: string }>('SELECT rolpassword AS verifier FROM pg_authid WHERE rolname = $1', [SCRAM])).rows;
      const [, iterations, salt] = /^SCRAM-SHA-256\$(\d+):([^$]+)\$/.exec(row!.verifier)!;
      expect(scramVerifier(password, Buffer.from(salt!, 'base64'), Number(iterations))).toBe(row!.verifier);
      expect(scramVerifier(`${password}x`, Buffer.from(salt!, 'base64'), Number(iterations))).not.toBe(row!.verifier);
    } finally {
      client.release();
    }
  });
});
