import { spawn } from 'node:child_process';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import type pg from 'pg';
import { run } from '../../../src/cli/main.js';

const root = path.resolve(import.meta.dirname, '../../..');

/** A full-length credential-like token and a URL whose path is the secret part. */
export const TOKEN = 'ptk_9f3eA71bC0d4e5F6a7b8';
export const SECRET_PATH = 'programs/secret-path-7f3a9c.pdf';
export const FILE_URL = `https://files.physitrack.com/integrations/your_ehr/${SECRET_PATH}?X-Amz-Signature=deadbeef`;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout as bytes, for a PDF written there. */
  bytes: Buffer;
}

class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  constructor(readonly isTTY?: boolean) {
    super();
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.chunks.push(Buffer.from(chunk));
    callback();
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** The CLI called in-process (fast), with an explicit environment like the child's. */
export async function cli(argv: string[], env: Record<string, string>, options: { tty?: boolean; stdin?: string } = {}): Promise<CliResult> {
  const stdout = new Collector(options.tty);
  const stderr = new Collector();
  const stdin = options.stdin === undefined ? undefined : Readable.from([Buffer.from(options.stdin)]);
  const code = await run(argv, { NODE_ENV: 'test', ...env }, { stdout, stderr, ...(stdin ? { stdin } : {}) });
  return { code, stdout: stdout.bytes.toString(), stderr: stderr.bytes.toString(), bytes: stdout.bytes };
}

/** The CLI as the operator runs it: a real process, from the repository root, with a minimal environment. */
export function spawnCli(argv: string[], env: Record<string, string>): Promise<CliResult> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...argv], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', NODE_ENV: 'test', ...env },
  });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => err.push(c));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      const bytes = Buffer.concat(out);
      resolve({ code, stdout: bytes.toString(), stderr: Buffer.concat(err).toString(), bytes });
    });
  });
}

/** A value written as SQL, for times relative to the database's clock: sql`now() - interval '2 hours'`. */
export class Sql {
  constructor(readonly text: string) {}
}
export const sql = (parts: TemplateStringsArray) => new Sql(parts.join(''));
export const ago = (interval: string) => new Sql(`now() - interval '${interval}'`);
export const fromNow = (interval: string) => new Sql(`now() + interval '${interval}'`);

/** INSERT … RETURNING the first column; `Sql` values are inlined, the rest are parameters. */
async function insert(pool: pg.Pool, table: string, row: Record<string, unknown>, returning: string): Promise<string> {
  const params: unknown[] = [];
  const values = Object.values(row).map((v) => (v instanceof Sql ? v.text : `$${params.push(v)}`));
  const { rows } = await pool.query(
    `INSERT INTO ${table} (${Object.keys(row).join(', ')}) VALUES (${values.join(', ')}) RETURNING ${returning}::text AS key`,
    params,
  );
  return rows[0].key as string;
}

/** A delivery row, with a program of its own unless `program_id` is given. */
export async function insertDelivery(pool: pg.Pool, row: Record<string, unknown> = {}): Promise<string> {
  const programId =
    row.program_id ??
    (
      await pool.query(
        `INSERT INTO physitrack_programs (source_id, patient_id, program_key, practitioner_token, program_name, latest_delivery_id)
         VALUES ($1, $2, md5(random()::text), $3, 'Knee Rehab Program', 0) RETURNING id::text AS id`,
        [row.source_id ?? 'default', row.patient_id ?? '23-4501', TOKEN],
      )
    ).rows[0].id;
  return insert(
    pool,
    'physitrack_deliveries',
    {
      source_id: 'default',
      practitioner_token: TOKEN,
      patient_id: '23-4501',
      file_url: FILE_URL,
      program_name: 'Knee Rehab Program',
      program_date: '2017-02-20',
      updated: false,
      deadline_at: fromNow('24 hours'),
      ...row,
      program_id: programId,
    },
    'id',
  );
}

export function insertEvent(pool: pg.Pool, row: Record<string, unknown> = {}): Promise<string> {
  return insert(
    pool,
    'patiro_events',
    {
      source_id: 'default',
      event_id: `evt-${Math.random().toString(36).slice(2)}`,
      event_type: 'PatientUpdated',
      occurred_at: sql`now()`,
      occurred_at_raw: '2025-01-01T10:00:00.1234567',
      data: JSON.stringify({ id: 4711, firstName: 'Erika', lastName: 'Mustermann' }),
      signed_at: sql`now()`,
      ...row,
    },
    'event_id',
  );
}

export function insertAudit(pool: pg.Pool, row: Record<string, unknown> = {}): Promise<string> {
  return insert(pool, 'webhook_audit', { source_id: 'default', vendor: 'patiro', status_code: 204, body_sha256: 'ab'.repeat(32), ...row }, 'id');
}

export function insertDocument(pool: pg.Pool, row: Record<string, unknown>): Promise<string> {
  return insert(pool, 'documents', { content_type: 'application/pdf', storage: 'database', ...row }, 'id');
}

export function insertPatient(pool: pg.Pool, row: Record<string, unknown> = {}): Promise<string> {
  return insert(
    pool,
    'patiro_patients',
    { source_id: 'default', patient_id: '4711', data: JSON.stringify({ id: 4711, firstName: 'Erika' }), signed_at: sql`now()`, updated_at: sql`now()`, last_event_id: 'evt-1', ...row },
    'patient_id',
  );
}

export async function count(pool: pg.Pool, table: string, where = 'true'): Promise<number> {
  const { rows } = await pool.query(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`);
  return rows[0].n as number;
}
