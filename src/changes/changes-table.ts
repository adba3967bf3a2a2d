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
 * (scanning at most $4 of them; those of the consumer's sources, at most $3), each with its row,
 * and where the next page starts. Rows are built by PostgreSQL as JSON text from the read
 * contract's views, so numbers in jsonb reach the consumer exactly as sent. A page also ends once
 * its text passes $7 bytes (always after at least one change): rows are as large as a vendor's
 * body, and a page of them must fit in memory, here and in the consumer.
 */
const PAGE = `
WITH scanned AS (
  SELECT c.* FROM changes c
  WHERE (c.txid, c.id) > ($1::xid8, $2::bigint) AND ${VISIBLE}
  ORDER BY c.txid, c.id LIMIT $4
), page AS (
  SELECT s.* FROM scanned s WHERE $5::boolean OR s.source_id = ANY ($6::text[])
  ORDER BY s.txid, s.id LIMIT $3
), built AS (
  SELECT p.txid, p.id, json_build_object(
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
     END)::text AS change
  FROM page p
), sized AS (
  SELECT b.*, sum(octet_length(b.change)) OVER (ORDER BY b.txid, b.id) - octet_length(b.change) AS before FROM built b
), kept AS (
  SELECT * FROM sized WHERE before < $7
), last AS (
  -- Cut by size: after the last change kept. A full page: after its last change. Otherwise every
  -- scanned change was looked at, and none after the last is the consumer's.
  SELECT txid, id FROM (
    (SELECT txid, id, 1 AS rule FROM kept WHERE (SELECT count(*) FROM kept) < (SELECT count(*) FROM page) ORDER BY txid DESC, id DESC LIMIT 1)
    UNION ALL (SELECT txid, id, 2 FROM page WHERE (SELECT count(*) FROM page) = $3 ORDER BY txid DESC, id DESC LIMIT 1)
    UNION ALL (SELECT txid, id, 3 FROM scanned ORDER BY txid DESC, id DESC LIMIT 1)
  ) candidates ORDER BY rule LIMIT 1
)
SELECT
  EXISTS (SELECT 1 FROM changes_purged m WHERE ($1::xid8, $2::bigint) < (m.txid, m.change_id)) AS expired,
  -- No transaction of this database has this id yet: a cursor of another database, or of this one
  -- before a restore from backup. Going on from it would skip every change until ids catch up.
  $1::xid8 >= pg_snapshot_xmax(pg_current_snapshot()) AS future,
  (SELECT count(*)::int FROM kept) AS n,
  (SELECT txid::text FROM last) AS next_txid,
  (SELECT id::text FROM last) AS next_id,
  '[' || COALESCE((SELECT string_agg(change, ',' ORDER BY txid, id) FROM kept), '') || ']' AS changes`;

export interface Page {
  /** The JSON array of changes, as PostgreSQL wrote it. */
  changesJson: string;
  count: number;
  next: Cursor;
}

export type Scope = { all: true } | { all: false; sourceIds: readonly string[] };

/**
 * The consumer must resynchronise: its cursor is before what retention has purged, or from no
 * transaction this database has had yet (another database, or this one restored from a backup).
 */
export class CursorExpiredError extends Error {
  override readonly name = 'CursorExpiredError';
}

/** Bytes of rows one page carries at most (and always at least one change, however large). */
export const PAGE_BYTES = 8 * 1024 * 1024;

/** How many changes one request scans at most, whatever its scope matches: a bound on its cost. */
export const SCAN_LIMIT = 10_000;

export async function readPage(pool: pg.Pool | pg.PoolClient, after: Cursor, limit: number, scope: Scope, maxBytes = PAGE_BYTES): Promise<Page> {
  const { rows } = await pool.query<{ expired: boolean; future: boolean; n: number; next_txid: string | null; next_id: string | null; changes: string }>({
    name: 'changes_page',
    text: PAGE,
    // Every change is a consumer's of every source: scanning past the page would read rows for nothing.
    values: [after.txid, after.id, limit, scope.all ? limit : Math.max(limit, SCAN_LIMIT), scope.all, scope.all ? [] : scope.sourceIds, maxBytes],
  });
  const row = rows[0]!;
  if (row.expired) throw new CursorExpiredError('the change feed was purged past this cursor');
  if (row.future) throw new CursorExpiredError('the cursor is of a transaction this database has not had');
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
  -- Only what readers may take already: a change held back behind an open transaction is not
  -- purged, nor is the mark moved past that transaction (whose changes would then be skipped).
  SELECT txid, id FROM changes c WHERE at < $1::timestamptz AND ${VISIBLE} LIMIT $2 FOR UPDATE SKIP LOCKED
), gone AS (
  DELETE FROM changes c USING batch b WHERE (c.txid, c.id) = (b.txid, b.id) RETURNING c.txid, c.id
), top AS (
  SELECT txid, id FROM gone ORDER BY txid DESC, id DESC LIMIT 1
), mark AS (
  INSERT INTO changes_purged AS m (id, txid, change_id, purged_at) SELECT true, txid, id, now() FROM top
  ON CONFLICT (id) DO UPDATE SET txid = EXCLUDED.txid, change_id = EXCLUDED.change_id, purged_at = EXCLUDED.purged_at
  WHERE (EXCLUDED.txid, EXCLUDED.change_id) > (m.txid, m.change_id)
)
SELECT count(*)::int AS n FROM gone`;

/**
 * For a patient's erasure ($1 source, $2 patient id): the changes whose key is the patient's id.
 * The other changes of the erased rows stay: their keys are event, delivery and program ids, which
 * name nothing once the rows are gone (the feed gives them without a row).
 */
export const DELETE_CHANGES_OF_PATIENT = `DELETE FROM changes WHERE kind = 'patiro_patients' AND source_id = $1 AND key = $2`;

/** For an offboarding: every change of the source ($1 vendor, $2 source). Reads the whole table: offboardings are rare. */
export const DELETE_CHANGES_OF_SOURCE = `DELETE FROM changes WHERE source_id = $2 AND vendor = $1`;
