import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { crc32 } from 'node:zlib';
import type pg from 'pg';
import type { Agent } from 'undici';
import { closeDatabase, createDatabase } from '../../src/db/client.js';
import { addSource } from '../../src/sources/manage.js';
import { TEST_SOURCES_KEY } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { samplePdf, servePdf, startFileHost, type FileHost } from '../helpers/https-file-host.js';
import { waitFor } from '../helpers/wait.js';
import { createClient, getJson, percentile, type Outcome } from './senders.js';
import { killAllServiceProcesses, startServiceProcess, type ServiceProcess } from './service-process.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

// What the spool fault tests share: the rig they run on (startFaultRig), a spool directory,
// reading what its journal holds (as an operator would, from the files), the clinics' table
// sources, and the check that every acknowledged delivery is in its table exactly once with the
// time it arrived.

export interface FaultRigOptions {
  /** makeSpoolDir's label: the service spools into a directory of its own (`spoolDir`). None: no spool. */
  spool?: string;
  /** Add the clinics' table sources (`sources`, addTableSources) to the database before the service starts. */
  tableSources?: true | { patiroToken: boolean };
  /** The service's environment, besides its DATABASE_URL (through the proxy) and SPOOL_DIR. */
  env?: Record<string, string>;
}

/**
 * What the fault tests that cut PostgreSQL off stand on: a test database, a TCP proxy in front of
 * it (to cut), an HTTPS file host for the PDFs, a client to send with, and a service process,
 * ready, that reaches the database through the proxy.
 */
export interface FaultRig {
  database: TestDatabase;
  proxy: TcpProxy;
  host: FileHost;
  client: Agent;
  service: ServiceProcess;
  /** The service's SPOOL_DIR (only with the `spool` option). */
  readonly spoolDir: string;
  /** The table sources (only with the `tableSources` option). */
  readonly sources: TableSources;
  /** For afterAll: kill -9 every service process (the ones the test started too), then close and remove the rest. */
  close(): Promise<void>;
}

export async function startFaultRig(options: FaultRigOptions = {}): Promise<FaultRig> {
  const client = createClient();
  let database: TestDatabase | undefined;
  let proxy: TcpProxy | undefined;
  let host: FileHost | undefined;
  let spoolDir: string | undefined;
  const close = async () => {
    await killAllServiceProcesses();
    await client.close();
    await proxy?.close();
    await host?.close();
    await database?.drop();
    if (spoolDir) await rm(spoolDir, { recursive: true, force: true });
  };
  try {
    database = await createTestDatabase();
    const target = new URL(database.url);
    proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port) });
    host = await startFileHost();
    const sources = options.tableSources && (await addTableSources(database.url, options.tableSources === true ? {} : options.tableSources));
    if (options.spool !== undefined) spoolDir = await makeSpoolDir(options.spool);
    const service = await startServiceProcess({ databaseUrl: proxy.urlFor(database.url), env: { ...(spoolDir === undefined ? {} : { SPOOL_DIR: spoolDir }), ...options.env } });
    await service.waitReady();
    return {
      database,
      proxy,
      host,
      client,
      service,
      get spoolDir() {
        if (spoolDir === undefined) throw new Error('this rig has no spool (startFaultRig without `spool`)');
        return spoolDir;
      },
      get sources() {
        if (sources === undefined) throw new Error('this rig has no table sources (startFaultRig without `tableSources`)');
        return sources;
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}

export async function makeSpoolDir(label: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `wr-spool-${label}-`));
}

/** Every file under `dir`, recursively (owner.json, sources.json, journal/, rejected/, temp files). */
export async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

export interface JournalRecord {
  vendor: 'patiro' | 'physitrack';
  receiptId: string;
  receivedAt: Date;
  sourceId: string;
  /** The Patiro eventId or the Physitrack file_url: what the senders' outcomes are named by. */
  id: string;
  file: string;
}

const COMPLETE = /^\d{15}-\d{8}-\d+-\d+\.jnl$/;

/** The records of the complete journal files (renamed into place: acknowledged), CRC-checked. */
export async function journalRecords(spoolDir: string): Promise<JournalRecord[]> {
  const dir = path.join(spoolDir, 'journal');
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => COMPLETE.test(n)).sort();
  const records: JournalRecord[] = [];
  for (const name of names) {
    const lines = (await readFile(path.join(dir, name), 'utf8')).split('\n').filter((l) => l !== '' && !/^end \d+$/.test(l));
    for (const line of lines) {
      const space = line.indexOf(' ');
      const json = line.slice(space + 1);
      if (crc32(Buffer.from(json, 'utf8')).toString(16).padStart(8, '0') !== line.slice(0, space)) throw new Error(`a record of ${name} fails its CRC`);
      const r = JSON.parse(json) as { vendor: 'patiro' | 'physitrack'; receiptId: string; receivedAt: string; sourceId: string; event?: { eventId: string }; notice?: { fileUrl: string } };
      records.push({ vendor: r.vendor, receiptId: r.receiptId, receivedAt: new Date(r.receivedAt), sourceId: r.sourceId, id: r.event?.eventId ?? r.notice!.fileUrl, file: name });
    }
  }
  return records;
}

export interface TableSources {
  patiro: { id: string; secret: string; token: string | null };
  physitrack: { id: string; apiKey: string };
}

/** One table source per vendor, sealed with TEST_SOURCES_KEY, as `sources add` makes them. */
export async function addTableSources(databaseUrl: string, { patiroToken = false } = {}): Promise<TableSources> {
  const db = createDatabase({ url: databaseUrl, poolSize: 2, connectTimeoutMs: 2000 });
  try {
    const keys = [Buffer.from(TEST_SOURCES_KEY, 'base64')];
    const patiro = await addSource(db, keys, { vendor: 'patiro', name: 'Clinic A', withToken: patiroToken });
    const physitrack = await addSource(db, keys, { vendor: 'physitrack', name: 'Physitrack clinic B' });
    return { patiro: { id: patiro.row.id, secret: patiro.secret, token: patiro.token }, physitrack: { id: physitrack.row.id, apiKey: physitrack.secret } };
  } finally {
    await closeDatabase(db);
  }
}

/** Each call: a new path on the file host serving `pdf`, and its URL (every notice its own file). */
export function pdfUrls(host: FileHost, prefix: string, pdf = samplePdf(1024)): () => string {
  let n = 0;
  return () => {
    const route = `/${prefix}/${++n}.pdf`;
    host.route(route, servePdf(pdf));
    return host.url(route);
  };
}

export interface Readiness {
  /** The HTTP status (the body's own `status` word is in `state`). */
  status: number;
  state?: string;
  database?: string;
  spool?: { records: number; bytes: number; state: string };
}

export async function readiness(baseUrl: string): Promise<Readiness> {
  const { status, body } = await getJson(baseUrl, '/readyz');
  const { status: state, ...rest } = (body ?? {}) as Omit<Readiness, 'status' | 'state'> & { status?: string };
  return { ...rest, status, ...(state === undefined ? {} : { state }) };
}

/** Until the service writes to PostgreSQL again and its spool is empty (everything replayed). */
export async function waitReplayed(baseUrl: string, timeoutMs = 30_000): Promise<void> {
  let last: Readiness | undefined;
  try {
    await waitFor(async () => {
      last = await readiness(baseUrl);
      return last.status === 200 && last.database === 'ok' && last.spool?.records === 0;
    }, timeoutMs, 100);
  } catch {
    throw new Error(`the spool was not replayed within ${timeoutMs} ms: /readyz ${JSON.stringify(last)}`);
  }
}

export interface StoredCheck {
  checked: number;
  /** One line per acknowledged delivery that is not stored exactly once, as it arrived. */
  problems: string[];
}

const DEADLINE_HOURS = 24;

/**
 * Every acknowledged delivery (outcomes of sendPatiro / sendPhysitrack) is in its table exactly
 * once: one row for its source, counted once (delivery_count / notice_count 1), one audit row with
 * a receipt, and the time it arrived (between the request's start and its answer), not the time it
 * was written. Each delivery must have been sent once (unique event ids and file URLs).
 */
export async function checkStoredOnce(pool: pg.Pool, acknowledged: Outcome[]): Promise<StoredCheck> {
  const problems: string[] = [];
  const patiro = acknowledged.filter((o) => o.vendor === 'patiro');
  const physitrack = acknowledged.filter((o) => o.vendor === 'physitrack');
  const events = await pool.query<{ source_id: string; event_id: string; delivery_count: number; first_received_at: Date; audits: number; audit_at: Date | null }>(
    `WITH audits AS (
       SELECT source_id, event_id, count(*)::int AS n, min(received_at) AS at FROM webhook_audit
       WHERE vendor = 'patiro' AND receipt_id IS NOT NULL AND event_id = ANY($1) GROUP BY 1, 2)
     SELECT e.source_id, e.event_id, e.delivery_count, e.first_received_at, COALESCE(a.n, 0) AS audits, a.at AS audit_at
     FROM patiro_events e LEFT JOIN audits a USING (source_id, event_id) WHERE e.event_id = ANY($1)`,
    [patiro.map((o) => o.id)],
  );
  const deliveries = await pool.query<{ id: string; source_id: string; file_url: string; notice_count: number; received_at: Date; deadline_at: Date; audits: number; audit_at: Date | null }>(
    `WITH d AS (SELECT * FROM physitrack_deliveries WHERE file_url = ANY($1)),
     audits AS (
       SELECT event_id, count(*)::int AS n, min(received_at) AS at FROM webhook_audit
       WHERE vendor = 'physitrack' AND receipt_id IS NOT NULL AND event_id IN (SELECT id::text FROM d) GROUP BY 1)
     SELECT d.id::text, d.source_id, d.file_url, d.notice_count, d.received_at, d.deadline_at, COALESCE(a.n, 0) AS audits, a.at AS audit_at
     FROM d LEFT JOIN audits a ON a.event_id = d.id::text`,
    [physitrack.map((o) => o.id)],
  );
  const rows = new Map<string, { sourceId: string; count: number; receivedAt: Date; audits: number; auditAt: Date | null; deadlineAt?: Date }[]>();
  const add = (key: string, row: { sourceId: string; count: number; receivedAt: Date; audits: number; auditAt: Date | null; deadlineAt?: Date }) =>
    rows.set(key, [...(rows.get(key) ?? []), row]);
  for (const e of events.rows) add(`patiro ${e.event_id}`, { sourceId: e.source_id, count: e.delivery_count, receivedAt: e.first_received_at, audits: e.audits, auditAt: e.audit_at });
  for (const d of deliveries.rows) {
    add(`physitrack ${d.file_url}`, { sourceId: d.source_id, count: d.notice_count, receivedAt: d.received_at, audits: d.audits, auditAt: d.audit_at, deadlineAt: d.deadline_at });
  }
  for (const o of acknowledged) {
    const key = `${o.vendor} ${o.id}`;
    const found = rows.get(key) ?? [];
    const say = (what: string) => problems.push(`${key} (source ${o.sourceId}): ${what}`);
    if (found.length !== 1) {
      say(`${found.length} rows`);
      continue;
    }
    const row = found[0]!;
    if (row.sourceId !== o.sourceId) say(`stored for source ${row.sourceId}`);
    if (row.count !== 1) say(`counted ${row.count} times`);
    if (row.audits !== 1) say(`${row.audits} audit rows with a receipt`);
    // The service's clock is this machine's; PostgreSQL keeps microseconds.
    const at = row.receivedAt.getTime();
    if (at < o.startedAt - 2 || at > o.startedAt + o.latencyMs + 2) say(`received at ${row.receivedAt.toISOString()}, but sent at ${new Date(o.startedAt).toISOString()} and answered ${o.latencyMs} ms later`);
    if (row.auditAt && row.auditAt.getTime() !== at) say(`audit time ${row.auditAt.toISOString()} is not the receive time ${row.receivedAt.toISOString()}`);
    if (row.deadlineAt && row.deadlineAt.getTime() - at !== DEADLINE_HOURS * 3600_000) say(`deadline ${row.deadlineAt.toISOString()} is not ${DEADLINE_HOURS} h after it arrived`);
  }
  return { checked: acknowledged.length, problems: problems.slice(0, 20).concat(problems.length > 20 ? [`… and ${problems.length - 20} more`] : []) };
}

/** Nothing counted that has no audit row, anywhere: the sums of the counters equal the receipts. */
export async function countersMatchReceipts(pool: pg.Pool): Promise<{ patiro: [number, number]; physitrack: [number, number] }> {
  const { rows } = await pool.query<{ events: number; patiro_receipts: number; notices: number; physitrack_receipts: number }>(
    `SELECT (SELECT COALESCE(sum(delivery_count), 0)::int FROM patiro_events) AS events,
            (SELECT count(*)::int FROM webhook_audit WHERE vendor = 'patiro' AND receipt_id IS NOT NULL) AS patiro_receipts,
            (SELECT COALESCE(sum(notice_count), 0)::int FROM physitrack_deliveries) AS notices,
            (SELECT count(*)::int FROM webhook_audit WHERE vendor = 'physitrack' AND receipt_id IS NOT NULL) AS physitrack_receipts`,
  );
  const r = rows[0]!;
  return { patiro: [r.events, r.patiro_receipts], physitrack: [r.notices, r.physitrack_receipts] };
}

/** Latencies for the printed figures. */
export function latencyFigures(outcomes: Outcome[]): string {
  const values = outcomes.map((o) => o.latencyMs);
  return `p50 ${percentile(values, 50)} ms, p95 ${percentile(values, 95)} ms, max ${percentile(values, 100)} ms`;
}
