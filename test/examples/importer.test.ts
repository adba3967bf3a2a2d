import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { addConsumer } from '../../src/api/consumers-table.js';
import { closeDatabase, createDatabase, type Database } from '../../src/db/client.js';
import { erasePatient } from '../../src/erasure.js';
import { purge } from '../../src/retention.js';
import { addSource } from '../../src/sources/manage.js';
import { patiroSignature } from '../../src/webhooks/patiro-signature.js';
import { TEST_SOURCES_KEY } from '../helpers/app.js';
import { createTestDatabase, quietPool, type TestDatabase } from '../helpers/database.js';
import { samplePdf, servePdf, startFileHost, type FileHost } from '../helpers/https-file-host.js';
import { PATIRO_SECRET } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice } from '../helpers/physitrack.js';
import { waitFor } from '../helpers/wait.js';
import { waitForDeliveries } from '../faults/deliveries.js';
import { createClient } from '../faults/senders.js';
import { freePort, killAllServiceProcesses, startServiceProcess } from '../faults/service-process.js';

// The example importer (examples/importer/) follows the real receiver's HTTP feed while four
// senders write to it (both vendors, two sources each, redeliveries, newer data), is killed with
// SIGKILL twice mid-run and started again, and sees a patient erased. Once it has caught up, its
// tables hold exactly the receiver's rows (receiver_v1, as jsonb) and the programs' current PDFs.
// Then retention purges changes it has not read: it resynchronises from GET /v1/rows and goes on.

const root = path.resolve(import.meta.dirname, '../..');
const LOAD_MS = 5000;
const ERASED = 'erase-me';
/** A patient id beyond JavaScript's exact integers: only kept if nobody parses the rows with JSON.parse. */
const BIG_ID = '9007199254740993';

let receiver: TestDatabase;
let importerDb: { name: string; url: string; pool: pg.Pool; drop(): Promise<void> };
let db: Database;
let host: FileHost;
let pdfDir: string;
const client = createClient();
const importers = new Set<ChildProcess>();

/** A database of the importer's own on the same server, named so the run's teardown finds a leftover. */
async function createEmptyDatabase(): Promise<typeof importerDb> {
  const adminUrl = inject('databaseAdminUrl');
  const name = `wr_test_${inject('templateDatabase').split('_')[2]}_importer_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`).finally(() => admin.end());
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const pool = quietPool(url.toString());
  return {
    name,
    url: url.toString(),
    pool,
    async drop() {
      await pool.end();
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).finally(() => c.end());
    },
  };
}

beforeAll(async () => {
  receiver = await createTestDatabase();
  importerDb = await createEmptyDatabase();
  db = createDatabase({ url: receiver.url, poolSize: 2, connectTimeoutMs: 5000 });
  host = await startFileHost();
  pdfDir = await mkdtemp(path.join(os.tmpdir(), 'wr-importer-'));
});
afterAll(async () => {
  for (const child of importers) child.kill('SIGKILL');
  await killAllServiceProcesses();
  await client.close();
  await host?.close();
  await closeDatabase(db);
  await receiver?.drop();
  await importerDb?.drop();
  await rm(pdfDir, { recursive: true, force: true });
});

interface Importer {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

function startImporter(env: Record<string, string>): Importer {
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/importer/importer.ts'], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  importers.add(child);
  let output = '';
  child.stdout!.on('data', (c: Buffer) => (output += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (output += c.toString('utf8')));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => {
      importers.delete(child);
      resolve({ code, signal });
    }),
  );
  return { child, exited, output: () => output };
}

async function post(url: string, headers: Record<string, string>, body: string): Promise<number> {
  const response = await request(url, { dispatcher: client, method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
  await response.body.dump();
  return response.statusCode;
}

interface Source {
  path: string;
  secret: string;
}

/** A Patiro event body written as text, so its data holds numbers no JavaScript number can. */
function patiroBody(eventId: string, eventType: string, patientId: string, version: number): string {
  const id = patientId === BIG_ID ? BIG_ID : JSON.stringify(patientId);
  const balance = `12345678901234567890.${String(version).padStart(6, '0')}`;
  return `{"eventId":"${eventId}","eventType":"${eventType}","timestamp":"2026-12-04T10:00:00.${version}","data":{"id":${id},"version":${version},"balance":${balance},"name":"Patient ${patientId}"}}`;
}

function sendPatiro(baseUrl: string, source: Source, body: string): Promise<number> {
  const timestamp = String(Date.now());
  return post(`${baseUrl}${source.path}`, { 'x-patiro-timestamp': timestamp, 'x-patiro-hmacsha256': patiroSignature(source.secret, timestamp, Buffer.from(body)) }, body);
}

let pdfs = 0;
/** A new notice for the patient's program (one of two per patient), with a PDF of its own on the file host. */
function physitrackBody(source: Source, patientId: string, program: number): string {
  pdfs += 1;
  const file = `/programs/${pdfs}.pdf`;
  host.route(file, servePdf(samplePdf(1000)));
  return JSON.stringify(
    physitrackNotice({ api_key: source.secret, patient_id: patientId, file_url: host.url(file), date_iso: `2026-11-0${program}T10:00:00Z`, updated: true }),
  );
}

const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]!;

/** One sender: new events for a few patients (newer data each time), redeliveries of earlier ones. */
async function patiroSender(baseUrl: string, source: Source, stop: () => boolean, statuses: number[]): Promise<void> {
  const patients = [BIG_ID, 'p-1', 'p-2', 'p-3', 'p-4'];
  const sent: string[] = [];
  for (let version = 1; !stop(); version++) {
    let body = sent.length > 0 && Math.random() < 0.3 ? pick(sent) : undefined;
    if (body === undefined) {
      body = patiroBody(`event-${randomBytes(6).toString('hex')}`, version < 6 ? 'PatientRevealed' : 'PatientUpdated', pick(patients), version);
      sent.push(body);
    }
    statuses.push(await sendPatiro(baseUrl, source, body));
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** One sender: new program versions for a few patients, and the same notice again. */
async function physitrackSender(baseUrl: string, source: Source, stop: () => boolean, statuses: number[]): Promise<void> {
  const sent: string[] = [];
  while (!stop()) {
    let body = sent.length > 0 && Math.random() < 0.3 ? pick(sent) : undefined;
    if (body === undefined) {
      body = physitrackBody(source, pick(['23-1', '23-2', '23-3']), pick([1, 2]));
      sent.push(body);
    }
    statuses.push(await post(`${baseUrl}${source.path}`, {}, body));
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Each table's rows by source and key, as jsonb text (canonical: equal text is equal jsonb). */
const RECEIVER_ROWS = {
  patiro_events: 'SELECT source_id, event_id AS key, to_jsonb(v)::text AS row FROM receiver_v1.patiro_events v',
  patiro_patients: 'SELECT source_id, patient_id AS key, to_jsonb(v)::text AS row FROM receiver_v1.patiro_patients v',
  physitrack_deliveries: 'SELECT source_id, id::text AS key, to_jsonb(v)::text AS row FROM receiver_v1.physitrack_deliveries v',
  physitrack_programs: 'SELECT source_id, id::text AS key, to_jsonb(v)::text AS row FROM receiver_v1.physitrack_programs v',
};
/** The importer's copies, without the sha256 the feed adds to deliveries and programs. */
const IMPORTED_ROWS = {
  patiro_events: 'SELECT source_id, event_id AS key, row::text AS row FROM imported_patiro_events',
  patiro_patients: 'SELECT source_id, patient_id AS key, row::text AS row FROM imported_patiro_patients',
  physitrack_deliveries: `SELECT source_id, id AS key, (row - 'document_sha256')::text AS row FROM imported_physitrack_deliveries`,
  physitrack_programs: `SELECT source_id, id AS key, (row - 'current_document_sha256')::text AS row FROM imported_physitrack_programs`,
};

type Rows = Map<string, string>;
async function rowsOf(pool: pg.Pool, sql: string): Promise<Rows> {
  const { rows } = await pool.query<{ source_id: string; key: string; row: string }>(sql);
  return new Map(rows.map((r) => [`${r.source_id}/${r.key}`, r.row]));
}

/** What differs, by key (a few of each), so a failure says where the copy went wrong. */
function difference(expected: Rows, actual: Rows): { missing: string[]; extra: string[]; different: string[] } {
  return {
    missing: [...expected.keys()].filter((k) => !actual.has(k)).slice(0, 5),
    extra: [...actual.keys()].filter((k) => !expected.has(k)).slice(0, 5),
    different: [...expected.keys()].filter((k) => actual.has(k) && actual.get(k) !== expected.get(k)).slice(0, 5).map((k) => `${k}: ${expected.get(k)} ≠ ${actual.get(k)}`),
  };
}

describe('the example importer', () => {
  it('under 4 senders, killed twice and restarted, ends with exactly the receiver’s rows and current PDFs, erasure applied', async () => {
    const keys = [Buffer.from(TEST_SOURCES_KEY, 'base64')];
    const clinicA = await addSource(db, keys, { vendor: 'patiro', name: 'Clinic A' });
    const clinicB = await addSource(db, keys, { vendor: 'physitrack', name: 'Clinic B' });
    const patiroSources: Source[] = [
      { path: '/webhooks/patiro', secret: PATIRO_SECRET },
      { path: `/webhooks/patiro/${clinicA.row.id}`, secret: clinicA.secret },
    ];
    const physitrackSources: Source[] = [
      { path: '/webhooks/physitrack', secret: PHYSITRACK_KEY },
      { path: `/webhooks/physitrack/${clinicB.row.id}`, secret: clinicB.secret },
    ];
    const consumer = await addConsumer(db, { name: 'example importer' });
    const apiPort = await freePort();
    const service = await startServiceProcess({
      databaseUrl: receiver.url,
      env: { SOURCES_SECRET_KEY: TEST_SOURCES_KEY, API_PORT: String(apiPort), API_HOST: '127.0.0.1' },
    });
    await service.waitReady();
    const apiUrl = `http://127.0.0.1:${apiPort}`;

    // The patient erased mid-run: data in both vendors' table sources, sent before the load.
    const statuses: number[] = [];
    for (let i = 1; i <= 3; i++) statuses.push(await sendPatiro(service.baseUrl, patiroSources[1]!, patiroBody(`erased-${i}`, 'PatientUpdated', ERASED, i)));
    // Two versions of one program.
    for (let i = 1; i <= 2; i++) statuses.push(await post(`${service.baseUrl}${physitrackSources[1]!.path}`, {}, physitrackBody(physitrackSources[1]!, ERASED, 1)));

    const importerEnv = { RECEIVER_API_URL: apiUrl, RECEIVER_API_TOKEN: consumer.token, IMPORTER_DATABASE_URL: importerDb.url };
    let importer = startImporter(importerEnv);
    const startedAt = Date.now();
    let stopped = false;
    const load = Promise.all([
      ...patiroSources.map((s) => patiroSender(service.baseUrl, s, () => stopped, statuses)),
      ...physitrackSources.map((s) => physitrackSender(service.baseUrl, s, () => stopped, statuses)),
    ]);

    // Two kill -9 during the load, each followed by a restart: the first at a random moment, the
    // second inside a page's transaction (its connection seen idle in transaction, between statements).
    const kills: { atMs: number; inTransaction: boolean; output: string }[] = [];
    const inTransaction = async () =>
      ((await receiver.pool.query(`SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND state = 'idle in transaction'`, [importerDb.name])).rowCount ?? 0) > 0;
    const killAt = async (ms: number, { midTransaction = false } = {}) => {
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, startedAt + ms - Date.now())));
      let caught = false;
      for (const until = Date.now() + 1500; midTransaction && !caught && Date.now() < until; ) caught = await inTransaction();
      importer.child.kill('SIGKILL');
      const exit = await importer.exited;
      expect(exit.signal).toBe('SIGKILL');
      kills.push({ atMs: Date.now() - startedAt, inTransaction: caught, output: importer.output() });
      importer = startImporter(importerEnv);
    };
    const erasedRows = `SELECT (SELECT count(*) FROM imported_patiro_events WHERE source_id = $1 AND row->>'patient_id' = '${ERASED}')
         + (SELECT count(*) FROM imported_patiro_patients WHERE source_id = $1 AND patient_id = '${ERASED}')
         + (SELECT count(*) FROM imported_physitrack_deliveries WHERE source_id = $2 AND row->>'patient_id' = '${ERASED}')
         + (SELECT count(*) FROM imported_physitrack_programs WHERE source_id = $2 AND row->>'patient_id' = '${ERASED}') AS n`;
    const countErased = async () =>
      Number((await importerDb.pool.query<{ n: string }>(erasedRows, [clinicA.row.id, clinicB.row.id]).catch(() => ({ rows: [{ n: '0' }] }))).rows[0]!.n);
    const chaos = (async () => {
      await killAt(1200 + Math.random() * 1000);
      // Erased once the importer holds the patient's rows (3 events, 1 patient, 2 deliveries, 1 program).
      await waitFor(async () => (await countErased()) === 7, 10_000, 50);
      await erasePatient(db, pdfDir, { vendor: 'patiro', sourceId: clinicA.row.id, patientId: ERASED, dryRun: false });
      await erasePatient(db, pdfDir, { vendor: 'physitrack', sourceId: clinicB.row.id, patientId: ERASED, dryRun: false });
      await killAt(2800 + Math.random() * 800, { midTransaction: true });
    })();
    await new Promise((resolve) => setTimeout(resolve, LOAD_MS));
    stopped = true;
    await Promise.all([load, chaos]);
    expect(statuses.filter((s) => s !== 204)).toEqual([]);

    // Every PDF downloaded, then the importer catches up: from its cursor, the feed has nothing more.
    await waitForDeliveries(receiver.pool, (rows) => rows.every((r) => r.download_status === 'done'), 20_000);
    await waitFor(
      async () => {
        const { rows } = await importerDb.pool.query<{ cursor: string }>('SELECT cursor FROM importer_cursor');
        const response = await fetch(`${apiUrl}/v1/changes?limit=1&after=${encodeURIComponent(rows[0]!.cursor)}`, { headers: { authorization: `Bearer ${consumer.token}` } });
        return ((await response.json()) as { changes: unknown[] }).changes.length === 0;
      },
      20_000,
      100,
    );
    const caughtUpMs = Date.now() - startedAt - LOAD_MS;

    // Its tables equal the receiver's, row by row.
    const counts: Record<string, number> = {};
    for (const kind of Object.keys(RECEIVER_ROWS) as (keyof typeof RECEIVER_ROWS)[]) {
      const expected = await rowsOf(receiver.pool, RECEIVER_ROWS[kind]);
      const actual = await rowsOf(importerDb.pool, IMPORTED_ROWS[kind]);
      expect(difference(expected, actual), kind).toEqual({ missing: [], extra: [], different: [] });
      expect(actual.size, kind).toBe(expected.size);
      counts[kind] = actual.size;
    }
    // The current PDFs: the same set, by sha256, and the bytes are the ones named.
    const current = await receiver.pool.query<{ sha256: string }>(
      `SELECT DISTINCT d.sha256 FROM receiver_v1.physitrack_programs p JOIN receiver_v1.documents d ON d.id = p.current_document_id
       WHERE encode(sha256(d.content), 'hex') = d.sha256 ORDER BY 1`,
    );
    const imported = await importerDb.pool.query<{ sha256: string }>(`SELECT sha256 FROM imported_documents WHERE encode(sha256(content), 'hex') = sha256 ORDER BY 1`);
    expect(imported.rows).toEqual(current.rows);
    expect((await importerDb.pool.query('SELECT count(*)::int AS n FROM imported_documents')).rows[0].n).toBe(current.rows.length);

    // What the run went through: the erasure reached the importer, and the load was what it claims.
    expect(await countErased()).toBe(0);
    const receiverHas = await receiver.pool.query<Record<string, number>>(
      `SELECT (SELECT count(*)::int FROM erasures) AS erasures,
              (SELECT count(*)::int FROM patiro_events WHERE delivery_count > 1) AS redelivered_events,
              (SELECT count(*)::int FROM physitrack_deliveries WHERE notice_count > 1) AS redelivered_notices,
              (SELECT count(*)::int FROM physitrack_programs WHERE versions > 1) AS programs_with_versions,
              (SELECT count(DISTINCT source_id)::int FROM patiro_events) AS patiro_sources,
              (SELECT count(DISTINCT source_id)::int FROM physitrack_programs) AS physitrack_sources`,
    );
    const has = receiverHas.rows[0]!;
    expect(has).toMatchObject({ erasures: 2, patiro_sources: 2, physitrack_sources: 2 });
    for (const key of ['redelivered_events', 'redelivered_notices', 'programs_with_versions']) expect(has[key], key).toBeGreaterThan(0);
    const exact = await importerDb.pool.query(`SELECT 1 FROM imported_patiro_patients WHERE patient_id = $1 AND row->'data'->>'id' = $1 AND row->'data'->>'balance' LIKE '12345678901234567890.%'`, [BIG_ID]);
    expect(exact.rowCount).toBe(2); // BIG_ID in both Patiro sources, with its digits intact
    expect(kills.map((k) => k.atMs < LOAD_MS)).toEqual([true, true]);
    expect(kills[1]!.inTransaction).toBe(true);

    // SIGTERM: it stops waiting for changes and exits cleanly.
    importer.child.kill('SIGTERM');
    const exit = await Promise.race([importer.exited, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 5000))]);
    expect(exit, importer.output()).toEqual({ code: 0, signal: null });

    // Retention then purges changes it has not read (new events written while it was stopped): on
    // start it gets 410, copies every row again from GET /v1/rows, and follows the feed from its head.
    for (let i = 1; i <= 3; i++) expect(await sendPatiro(service.baseUrl, patiroSources[0]!, patiroBody(`while-stopped-${i}`, 'PatientUpdated', `p-stopped-${i}`, i))).toBe(204);
    await receiver.pool.query(`UPDATE changes SET at = now() - interval '40 days'`);
    expect((await purge(db, { olderThanMs: 30 * 86_400_000, dryRun: false, includeDocuments: false, pdfDir })).counts.changes).toBeGreaterThan(0);
    importer = startImporter(importerEnv);
    await waitFor(async () => importer.output().includes('resynchronised'), 20_000, 100);
    expect(await sendPatiro(service.baseUrl, patiroSources[1]!, patiroBody('after-resync', 'PatientUpdated', 'p-after', 1))).toBe(204);
    await waitFor(async () => (await importerDb.pool.query(`SELECT 1 FROM imported_patiro_events WHERE event_id = 'after-resync'`)).rowCount === 1, 20_000, 100);
    for (const kind of Object.keys(RECEIVER_ROWS) as (keyof typeof RECEIVER_ROWS)[]) {
      const expected = await rowsOf(receiver.pool, RECEIVER_ROWS[kind]);
      expect(difference(expected, await rowsOf(importerDb.pool, IMPORTED_ROWS[kind])), `${kind} after the resynchronisation`).toEqual({ missing: [], extra: [], different: [] });
    }
    expect((await importerDb.pool.query(`SELECT sha256 FROM imported_documents WHERE encode(sha256(content), 'hex') = sha256 ORDER BY 1`)).rows).toEqual(current.rows);
    importer.child.kill('SIGTERM');
    await importer.exited;

    console.log(
      `[example importer] ${statuses.length} deliveries sent in ${LOAD_MS} ms; importer killed at ${kills.map((k) => `${k.atMs} ms${k.inTransaction ? ' (in a transaction)' : ''}${k.output.includes('imported') ? ' (after importing)' : ''}`).join(' and ')}; ` +
        `caught up ${caughtUpMs} ms after the load; rows ${JSON.stringify(counts)}, current PDFs ${current.rows.length}`,
    );
  }, 60_000);
});
