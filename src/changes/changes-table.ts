import type pg from 'pg';

// This module owns the `changes` table: the fragment every write statement appends, the gap-free
// read, the cursor's encoding, and retention's purge. Nothing else writes or reads the table.
//
// A change row is written by the statement that made the change, so it commits (or rolls back) with
// it. Its txid is the writing transaction's. A reader takes only changes of transactions older than
// every transaction still in progress (pg_snapshot_xmin of its own snapshot), in (txid, id) order:
// everything before that point has committed or rolled back for good, so nothing can appear behind
// a cursor later. A transaction that commits late is read late; a long one holds the feed back.

/** The tables whose rows a PMS imports, and the erasures it must apply. */
export type ChangeKind = 'patiro_events' | 'patiro_patients' | 'physitrack_deliveries' | 'physitrack_programs' | 'erasures';

/**
 * The benchmark's switch, a setting of the database (never of the service): `npm run bench` sets it
 * on one database to measure the ack rates without change rows, with the very same statements.
 */
const WRITING = `(SELECT current_setting('webhook_receiver.bench_skip_changes', true)) IS DISTINCT FROM 'on'`;

/** Whether this database has the benchmark's switch on: the service then says so loudly at start. */
export async function changesSkipped(pool: pg.Pool): Promise<boolean> {
  const { rows } = await pool.query<{ skipped: boolean }>(`SELECT NOT (${WRITING}) AS skipped`);
  return rows[0]?.skipped === true;
}

/**
 * The body of a CTE of a write statement that appends its changes: `rows` is an SQL source of rows
 * (vendor, source_id, kind, key), one per row the statement wrote. Data-modifying CTEs always run to
 * completion, so the statement need not read it.
 */
export function changesInsertSql(rows: string): string {
  return `INSERT INTO changes (vendor, source_id, kind, key)
  SELECT c.vendor, c.source_id, c.kind, c.key FROM (${rows}) c (vendor, source_id, kind, key) WHERE ${WRITING}`;
}

/** A position in the feed. Opaque to consumers: `c1.<txid>.<id>`; '' is the start. */
export interface Cursor {
  txid: string;
  id: string;
}

export const START: Cursor = { txid: '0', id: '0' };
const CURSOR = /^c1\.([0-9]{1,20})\.([0-9]{1,19})$/;

export const encodeCursor = ({ txid, id }: Cursor): string => (txid === '0' && id === '0' ? '' : `c1.${txid}.${id}`);

/** undefined when `text` is not a cursor this feed gave out. */
export function decodeCursor(text: string): Cursor | undefined {
  if (text === '') return START;
  const match = CURSOR.exec(text);
  if (!match) return undefined;
  // Beyond bigint / xid8: no cursor of this feed.
  if (BigInt(match[1]!) > 2n ** 64n - 1n || BigInt(match[2]!) > 2n ** 63n - 1n) return undefined;
  return { txid: match[1]!, id: match[2]! };
}

const VISIBLE = 'c.txid < pg_snapshot_xmin(pg_current_snapshot())';

/**
 * One page, in one statement (one snapshot): the purge mark, the visible changes after the cursor
 * (scanning at most $4 of them; those of the consumer's sources, at most $3), and the newest visible
 * position. Rows are built by PostgreSQL as JSON text from the read contract's views, so numbers in
 * jsonb reach the consumer exactly as sent.
 */
const PAGE = `
WITH purged AS (
  SELECT txid, change_id FROM changes_purged
), scanned AS (
  SELECT c.* FROM changes c
  WHERE (c.txid, c.id) > ($1::xid8, $2::bigint) AND ${VISIBLE}
  ORDER BY c.txid, c.id LIMIT $4
), page AS (
  SELECT s.* FROM scanned s WHERE $5::boolean OR s.source_id = ANY ($6::text[])
  ORDER BY s.txid, s.id LIMIT $3
), last_scanned AS (
  SELECT txid, id FROM scanned ORDER BY txid DESC, id DESC LIMIT 1
), last_page AS (
  SELECT txid, id FROM page ORDER BY txid DESC, id DESC LIMIT 1
)
SELECT
  EXISTS (SELECT 1 FROM purged p WHERE ($1::xid8, $2::bigint) < (p.txid, p.change_id)) AS expired,
  (SELECT count(*)::int FROM page) AS n,
  -- A full page ends at its last row; otherwise every scanned row was looked at.
  CASE WHEN (SELECT count(*) FROM page) = $3 THEN (SELECT txid::text FROM last_page) ELSE (SELECT txid::text FROM last_scanned) END AS next_txid,
  CASE WHEN (SELECT count(*) FROM page) = $3 THEN (SELECT id::text FROM last_page) ELSE (SELECT id::text FROM last_scanned) END AS next_id,
  (SELECT COALESCE(json_agg(json_build_object(
     'id', p.id::text, 'cursor', 'c1.' || p.txid::text || '.' || p.id::text, 'kind', p.kind, 'vendor', p.vendor,
     'source_id', p.source_id, 'key', p.key, 'at', p.at,
     'row', CASE p.kind
       WHEN 'patiro_events' THEN (SELECT to_jsonb(v) FROM receiver_v1.patiro_events v WHERE v.source_id = p.source_id AND v.event_id = p.key)
       WHEN 'patiro_patients' THEN (SELECT to_jsonb(v) FROM receiver_v1.patiro_patients v WHERE v.source_id = p.source_id AND v.patient_id = p.key)
       WHEN 'physitrack_deliveries' THEN (SELECT to_jsonb(v) || jsonb_build_object('document_sha256', d.sha256)
         FROM receiver_v1.physitrack_deliveries v LEFT JOIN documents d ON d.id = v.document_id WHERE v.id = p.key::bigint AND v.source_id = p.source_id)
       WHEN 'physitrack_programs' THEN (SELECT to_jsonb(v) || jsonb_build_object('current_document_sha256', d.sha256)
         FROM receiver_v1.physitrack_programs v LEFT JOIN documents d ON d.id = v.current_document_id WHERE v.id = p.key::bigint AND v.source_id = p.source_id)
       WHEN 'erasures' THEN (SELECT to_jsonb(v) FROM receiver_v1.erasures v WHERE v.id = p.key::bigint AND v.source_id = p.source_id)
     END) ORDER BY p.txid, p.id), '[]'::json)::text FROM page p) AS changes`;

export interface Page {
  /** The JSON array of changes, as PostgreSQL wrote it. */
  changesJson: string;
  count: number;
  next: Cursor;
}

export type Scope = { all: true } | { all: false; sourceIds: readonly string[] };

/** The cursor is before what retention has purged: the consumer must resynchronise. */
export class CursorExpiredError extends Error {
  override readonly name = 'CursorExpiredError';
}

/** How many changes one request scans at most, whatever its scope matches: a bound on its cost. */
export const SCAN_LIMIT = 10_000;

export async function readPage(pool: pg.Pool | pg.PoolClient, after: Cursor, limit: number, scope: Scope): Promise<Page> {
  const { rows } = await pool.query<{ expired: boolean; n: number; next_txid: string | null; next_id: string | null; changes: string }>({
    name: 'changes_page',
    text: PAGE,
    // Every change is a consumer's of every source: scanning past the page would read rows for nothing.
    values: [after.txid, after.id, limit, scope.all ? limit : Math.max(limit, SCAN_LIMIT), scope.all, scope.all ? [] : scope.sourceIds],
  });
  const row = rows[0]!;
  if (row.expired) throw new CursorExpiredError('the change feed was purged past this cursor');
  const next = row.next_txid !== null && row.next_id !== null ? { txid: row.next_txid, id: row.next_id } : after;
  return { changesJson: row.changes, count: row.n, next };
}

/** The newest position a reader may take now: where one that has just copied the tables starts. */
export async function readHead(pool: pg.Pool): Promise<Cursor> {
  const { rows } = await pool.query<{ txid: string; id: string }>(
    `SELECT txid::text, id::text FROM (
       (SELECT c.txid, c.id FROM changes c WHERE ${VISIBLE} ORDER BY c.txid DESC, c.id DESC LIMIT 1)
       UNION ALL (SELECT txid, change_id FROM changes_purged)
     ) h ORDER BY txid DESC, id DESC LIMIT 1`,
  );
  return rows[0] ?? START;
}

/**
 * Committed changes a reader cannot take yet, held back by an older transaction still in progress:
 * how many, and the age of the oldest (the feed's lag).
 */
export const HELD_BACK_SQL = `SELECT json_build_object('changes', count(*), 'oldestSeconds', COALESCE(EXTRACT(EPOCH FROM now() - min(at))::float8, 0))
  FROM changes c WHERE c.txid >= pg_snapshot_xmin(pg_current_snapshot())`;

export interface HeldBack {
  changes: number;
  oldestSeconds: number;
}

export async function heldBack(pool: pg.Pool): Promise<HeldBack> {
  const { rows } = await pool.query<{ held: HeldBack }>(`SELECT (${HELD_BACK_SQL}) AS held`);
  return rows[0]!.held;
}

/**
 * Retention: one batch of changes older than the cutoff, and the purge mark moved past them, so a
 * cursor before it is told to resynchronise (410) instead of silently missing them.
 */
export const PURGE_CHANGES = `
WITH batch AS (
  SELECT id FROM changes WHERE at < $1::timestamptz LIMIT $2 FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM changes c USING batch b WHERE c.id = b.id RETURNING c.txid, c.id
), top AS (
  SELECT txid, id FROM gone ORDER BY txid DESC, id DESC LIMIT 1
), mark AS (
  INSERT INTO changes_purged AS m (id, txid, change_id, purged_at) SELECT true, txid, id, now() FROM top
  ON CONFLICT (id) DO UPDATE SET txid = EXCLUDED.txid, change_id = EXCLUDED.change_id, purged_at = EXCLUDED.purged_at
  WHERE (EXCLUDED.txid, EXCLUDED.change_id) > (m.txid, m.change_id)
)
SELECT count(*)::int AS n FROM gone`;

/** For erasure: the changes of the rows it removed ($1 source, $2 kind, $3 keys); they name rows that are gone. */
export const DELETE_CHANGES_OF_ROWS = `DELETE FROM changes WHERE source_id = $1 AND kind = $2 AND key = ANY ($3::text[])`;

/** For an offboarding: every change of the source ($1 vendor, $2 source). */
export const DELETE_CHANGES_OF_SOURCE = `DELETE FROM changes WHERE source_id = $2 AND vendor = $1`;
