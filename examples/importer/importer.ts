// An importer for the receiver's change feed: a complete example for a PMS developer to copy.
//
//   RECEIVER_API_URL=http://receiver:8081 RECEIVER_API_TOKEN=wrc_… \
//   IMPORTER_DATABASE_URL=postgres://pms@localhost/pms node --import tsx examples/importer/importer.ts
//
// It copies the receiver's rows into tables of its own (in a PostgreSQL database of yours), page by
// page of GET /v1/changes:
//   1. read the cursor it stored;
//   2. ask for the changes after it (the receiver holds the request up to 20 s while there are none);
//   3. download the PDFs the page's programs now point at and it does not have yet;
//   4. in ONE transaction: upsert every changed row, apply every erasure, drop the PDFs no program
//      points at any more, and store the page's `next` as the cursor. COMMIT.
// Safe to kill at any point: the rows and the cursor commit together or not at all, and a page
// applied again changes nothing (every change carries its row as it is now, not a difference).
// When the receiver answers 410 (it purged changes not read yet), it copies every row again from
// GET /v1/rows/<kind> and follows the feed from its head.
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

const PAGE_SIZE = 200;
const WAIT_SECONDS = 20;

/** A problem that retrying does not solve: the importer exits with code 2 and says what to do. */
class Fatal extends Error {}

/** 410: the receiver purged changes we had not read yet (older than its RETENTION_DAYS). */
class Purged extends Error {}

function setting(name: string): string {
  const value = process.env[name]?.trim();
  if (!value) throw new Fatal(`set ${name}`);
  return value;
}

const log = (message: string) => console.log(`${new Date().toISOString()} ${message}`);

// Your tables. One per kind of row, keyed as the receiver keys it within a source; `row` is the
// receiver's row as jsonb (the columns of its receiver_v1 views, described in its README).
const SCHEMA = `
CREATE TABLE IF NOT EXISTS imported_patiro_events (source_id text, event_id text, row jsonb NOT NULL, PRIMARY KEY (source_id, event_id));
CREATE TABLE IF NOT EXISTS imported_patiro_patients (source_id text, patient_id text, row jsonb NOT NULL, PRIMARY KEY (source_id, patient_id));
CREATE TABLE IF NOT EXISTS imported_physitrack_deliveries (source_id text, id text, row jsonb NOT NULL, PRIMARY KEY (source_id, id));
CREATE TABLE IF NOT EXISTS imported_physitrack_programs (source_id text, id text, row jsonb NOT NULL, PRIMARY KEY (source_id, id));
CREATE INDEX IF NOT EXISTS imported_physitrack_programs_document_idx ON imported_physitrack_programs ((row->>'current_document_sha256'));
-- The current PDF of each program, stored once per content.
CREATE TABLE IF NOT EXISTS imported_documents (sha256 text PRIMARY KEY, content bytea NOT NULL);
-- Where to continue: one row, changed only in the transaction that imports a page.
CREATE TABLE IF NOT EXISTS importer_cursor (one boolean PRIMARY KEY DEFAULT true CHECK (one), cursor text NOT NULL);
INSERT INTO importer_cursor (cursor) VALUES ('') ON CONFLICT DO NOTHING;
-- How the receiver names an erased patient: sha256 hex of vendor, source id and patient id, split by NUL bytes.
CREATE OR REPLACE FUNCTION importer_patient_hash(vendor text, source_id text, patient_id text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT encode(sha256(convert_to(vendor, 'UTF8') || '\\x00'::bytea || convert_to(source_id, 'UTF8') || '\\x00'::bytea || convert_to(patient_id, 'UTF8')), 'hex')
$$;`;

/** Where each kind of change goes, and the column of its key. */
const TABLES: Record<string, { table: string; key: string } | undefined> = {
  patiro_events: { table: 'imported_patiro_events', key: 'event_id' },
  patiro_patients: { table: 'imported_patiro_patients', key: 'patient_id' },
  physitrack_deliveries: { table: 'imported_physitrack_deliveries', key: 'id' },
  physitrack_programs: { table: 'imported_physitrack_programs', key: 'id' },
};
const VENDOR_TABLES = {
  patiro: ['imported_patiro_events', 'imported_patiro_patients'],
  physitrack: ['imported_physitrack_deliveries', 'imported_physitrack_programs'],
};

// The page's text goes to PostgreSQL as it came: Patiro's data may hold numbers that JavaScript
// would round (9007199254740993), and jsonb keeps every digit. JavaScript parses only `next`.
const CHANGES_OF_PAGE = `
SELECT c->>'kind' AS kind, c->>'source_id' AS source_id, c->>'key' AS key,
       CASE WHEN jsonb_typeof(c->'row') = 'object' THEN (c->'row')::text END AS row
FROM jsonb_array_elements($1::jsonb->'changes') WITH ORDINALITY AS page (c, n) ORDER BY n`;

const PDFS_OF_PAGE = `
SELECT DISTINCT c->'row'->>'current_document_id' AS id, c->'row'->>'current_document_sha256' AS sha256
FROM jsonb_array_elements($1::jsonb->'changes') AS c
WHERE c->>'kind' = 'physitrack_programs' AND c->'row'->>'current_document_sha256' IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM imported_documents d WHERE d.sha256 = c->'row'->>'current_document_sha256')`;

const PDFS_OF_PROGRAMS = `
SELECT DISTINCT row->>'current_document_id' AS id, row->>'current_document_sha256' AS sha256
FROM imported_physitrack_programs p
WHERE row->>'current_document_sha256' IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM imported_documents d WHERE d.sha256 = p.row->>'current_document_sha256')`;

const DROP_UNUSED_PDFS = `DELETE FROM imported_documents d WHERE NOT EXISTS (
  SELECT 1 FROM imported_physitrack_programs p WHERE p.row->>'current_document_sha256' = d.sha256)`;

/** A request that hangs (a network that went silent) is given up, and tried again. */
const withTimeout = (signal: AbortSignal, ms = 60_000) => AbortSignal.any([signal, AbortSignal.timeout(ms)]);

interface Config {
  apiUrl: string;
  token: string;
}

/** GET from the receiver's API. Throws Fatal when retrying cannot help, and Error when it may. */
async function get(config: Config, path: string, signal: AbortSignal, { notFound = false } = {}): Promise<Response | null> {
  const response = await fetch(`${config.apiUrl}${path}`, { headers: { authorization: `Bearer ${config.token}` }, signal });
  if (response.ok) return response;
  await response.body?.cancel();
  if (response.status === 404 && notFound) return null;
  if (response.status === 401 || response.status === 403) throw new Fatal(`the receiver refused RECEIVER_API_TOKEN (${response.status})`);
  if (response.status === 410) throw new Purged('the receiver purged its change feed past our cursor (410): resynchronising');
  if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
    throw new Fatal(`GET ${path.split('?')[0]} answered ${response.status}`);
  }
  throw new Error(`GET ${path.split('?')[0]} answered ${response.status}`); // 5xx, 408, 429: try again
}

/**
 * Downloads the current PDFs that `sql` names and we do not have: for a page, before its
 * transaction (which then stays short). Each is stored at once, under its sha256: a PDF stored for a
 * page that never commits is harmless, and dropped by the next page that does.
 */
async function fetchPdfs(config: Config, db: pg.Pool | pg.PoolClient, sql: string, params: unknown[], signal: AbortSignal): Promise<void> {
  const { rows } = await db.query<{ id: string; sha256: string }>(sql, params);
  for (const { id, sha256 } of rows) {
    const response = await get(config, `/v1/documents/${encodeURIComponent(id)}`, withTimeout(signal), { notFound: true });
    if (response === null) continue; // Erased since: the erasure is a later change of the feed.
    const content = Buffer.from(await response.arrayBuffer());
    const actual = createHash('sha256').update(content).digest('hex');
    if (actual !== sha256) throw new Error(`document ${id} has sha256 ${actual}, not ${sha256}`);
    await db.query('INSERT INTO imported_documents (sha256, content) VALUES ($1, $2) ON CONFLICT DO NOTHING', [sha256, content]);
  }
}

interface Erasure {
  scope: 'patient' | 'source';
  vendor: 'patiro' | 'physitrack';
  source_id: string;
  patient_hash: string | null;
}

/** Deletes our copies of what the receiver erased: a patient's rows in one source, or a whole source. */
async function applyErasure(client: pg.PoolClient, erasure: Erasure): Promise<void> {
  for (const table of VENDOR_TABLES[erasure.vendor] ?? []) {
    if (erasure.scope === 'source') {
      await client.query(`DELETE FROM ${table} WHERE source_id = $1`, [erasure.source_id]);
    } else {
      await client.query(`DELETE FROM ${table} WHERE source_id = $1 AND importer_patient_hash($2, source_id, row->>'patient_id') = $3`, [
        erasure.source_id,
        erasure.vendor,
        erasure.patient_hash,
      ]);
    }
  }
}

/** Applies the page's changes in the feed's order: of two changes to one row, the later wins. */
async function applyChanges(client: pg.PoolClient, pageText: string): Promise<void> {
  const { rows } = await client.query<{ kind: string; source_id: string; key: string; row: string | null }>(CHANGES_OF_PAGE, [pageText]);
  for (const change of rows) {
    // No row: erased (an erasure is in the feed too) or purged by the receiver's retention since.
    // Either way there is nothing newer to copy; our copy stays until an erasure says otherwise.
    if (change.row === null) continue;
    if (change.kind === 'erasures') {
      await applyErasure(client, JSON.parse(change.row) as Erasure);
      continue;
    }
    const target = TABLES[change.kind];
    if (target === undefined) continue; // A kind a newer receiver added: this importer does not copy it.
    await client.query(
      `INSERT INTO ${target.table} (source_id, ${target.key}, row) VALUES ($1, $2, $3::jsonb)
       ON CONFLICT (source_id, ${target.key}) DO UPDATE SET row = EXCLUDED.row`,
      [change.source_id, change.key, change.row],
    );
  }
}

/** Runs `work` in one transaction: all of it commits, or none. */
async function inTransaction(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<void>): Promise<void> {
  const client = await pool.connect();
  let failed = false;
  try {
    await client.query('BEGIN');
    await work(client);
    await client.query('COMMIT');
  } catch (err) {
    failed = true;
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release(failed); // A connection that failed is closed, not reused.
  }
}

/** One page: fetch, download its PDFs, then apply it and store its cursor in one transaction. */
async function importPage(config: Config, pool: pg.Pool, stop: AbortSignal): Promise<void> {
  const { rows } = await pool.query<{ cursor: string }>('SELECT cursor FROM importer_cursor');
  const after = rows[0]!.cursor;
  const query = `after=${encodeURIComponent(after)}&limit=${PAGE_SIZE}&wait=${WAIT_SECONDS}`;
  const response = await get(config, `/v1/changes?${query}`, withTimeout(stop, (WAIT_SECONDS + 30) * 1000));
  const pageText = await response!.text();
  const page = JSON.parse(pageText) as { changes: unknown[]; next: string };
  if (page.changes.length === 0 && page.next === after) return;

  await fetchPdfs(config, pool, PDFS_OF_PAGE, [pageText], stop);

  await inTransaction(pool, async (client) => {
    // Locked, and checked: if another importer ran by mistake and took this page, leave it be.
    const stored = await client.query<{ cursor: string }>('SELECT cursor FROM importer_cursor FOR UPDATE');
    if (stored.rows[0]!.cursor !== after) throw new Error('the cursor moved meanwhile: is another importer running?');
    await applyChanges(client, pageText);
    await client.query(DROP_UNUSED_PDFS);
    await client.query('UPDATE importer_cursor SET cursor = $1', [page.next]);
  });
  if (page.changes.length > 0) log(`imported ${page.changes.length} changes`);
}

/**
 * After a 410, when changes we had not read are gone: copy every row again and go on from the
 * feed's head. The head is taken first, so whatever changes during the copy comes again in the
 * feed and is applied again. One transaction: killed half-way, the next start begins it anew (the
 * stored cursor still gets 410).
 */
async function resynchronise(config: Config, pool: pg.Pool, stop: AbortSignal): Promise<void> {
  const { cursor: head } = (await (await get(config, '/v1/changes/head', withTimeout(stop)))!.json()) as { cursor: string };
  await inTransaction(pool, async (client) => {
    for (const [kind, target] of Object.entries(TABLES)) {
      await client.query(`DELETE FROM ${target!.table}`);
      for (let after = ''; ; ) {
        const response = await get(config, `/v1/rows/${kind}?limit=${PAGE_SIZE}&after=${encodeURIComponent(after)}`, withTimeout(stop));
        const pageText = await response!.text();
        // As for the feed's pages: PostgreSQL reads the rows, so their numbers stay exact.
        await client.query(
          `INSERT INTO ${target!.table} (source_id, ${target!.key}, row)
           SELECT r->>'source_id', r->>'${target!.key}', r FROM jsonb_array_elements($1::jsonb->'rows') AS r`,
          [pageText],
        );
        const next = (JSON.parse(pageText) as { next: string | null }).next;
        if (next === null) break;
        after = next;
      }
    }
    await fetchPdfs(config, client, PDFS_OF_PROGRAMS, [], stop);
    await client.query(DROP_UNUSED_PDFS);
    await client.query('UPDATE importer_cursor SET cursor = $1', [head]);
  });
  log('resynchronised: every row copied again; following the feed from its head');
}

async function main(): Promise<void> {
  const config = { apiUrl: setting('RECEIVER_API_URL').replace(/\/+$/, ''), token: setting('RECEIVER_API_TOKEN') };
  const pool = new pg.Pool({ connectionString: setting('IMPORTER_DATABASE_URL'), max: 2 });
  pool.on('error', () => undefined); // An idle connection dropped by the server: the next query opens another.

  // SIGTERM / SIGINT: stop waiting for changes, let a page being applied finish, then exit.
  const stop = new AbortController();
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      log(`${signal}: stopping`);
      stop.abort();
    });
  }

  await pool.query(SCHEMA); // One simple query: these statements run as one transaction.
  log('importing');
  let failures = 0;
  while (!stop.signal.aborted) {
    try {
      await importPage(config, pool, stop.signal);
      failures = 0;
    } catch (caught) {
      let err = caught;
      if (err instanceof Purged && !stop.signal.aborted) {
        log(err.message);
        try {
          await resynchronise(config, pool, stop.signal);
          failures = 0;
          continue;
        } catch (resyncErr) {
          err = resyncErr; // and try again, after the wait below
        }
      }
      if (err instanceof Fatal) throw err;
      if (stop.signal.aborted) break;
      // The receiver or our database is away, a network error, a 5xx: try again, waiting longer each time.
      failures += 1;
      const delayMs = Math.min(30_000, 250 * 2 ** failures) * (0.5 + Math.random() / 2);
      const { message, cause } = err as Error & { cause?: { code?: string } };
      log(`${message}${cause?.code ? ` (${cause.code})` : ''}; trying again in ${Math.round(delayMs)} ms`);
      await sleep(delayMs, undefined, { signal: stop.signal }).catch(() => undefined);
    }
  }
  await pool.end();
  log('stopped');
}

main().catch((err: unknown) => {
  log(err instanceof Fatal ? err.message : `failed: ${(err as Error).stack ?? String(err)}`);
  process.exit(err instanceof Fatal ? 2 : 1);
});
