import type pg from 'pg';
import { PAGE_BYTES, type Scope } from '../changes/changes-table.js';

// The current rows, page by page, for a consumer that must copy them whole: a first import, or one
// whose cursor retention purged past (410). Read from the read contract's views, as the feed's rows
// are, and written as JSON by PostgreSQL so numbers in data stay exact. Together with the feed's
// head, taken before the copy, this is how an HTTP consumer resynchronises without SQL access.

export type RowKind = 'patiro_events' | 'patiro_patients' | 'physitrack_deliveries' | 'physitrack_programs';

interface KindSql {
  /** The view and its key within a source, as the feed names rows (`key` of a change). */
  from: string;
  key: string;
  /** The order a page walks, by an index of the table behind the view. */
  order: string;
  /** Rows after the position ($1 source_id, $2 key). Ids are unique across sources: those kinds name $1 only to give it a type. */
  after: string;
  extra?: string;
}

const KINDS: Record<RowKind, KindSql> = {
  patiro_events: {
    from: 'receiver_v1.patiro_events v',
    key: 'v.event_id',
    order: 'v.source_id, v.event_id',
    after: '(v.source_id, v.event_id) > ($1, $2)',
  },
  patiro_patients: {
    from: 'receiver_v1.patiro_patients v',
    key: 'v.patient_id',
    order: 'v.source_id, v.patient_id',
    after: '(v.source_id, v.patient_id) > ($1, $2)',
  },
  physitrack_deliveries: {
    from: 'receiver_v1.physitrack_deliveries v LEFT JOIN documents d ON d.id = v.document_id',
    key: 'v.id::text',
    order: 'v.id',
    after: '$1::text IS NOT NULL AND v.id > $2::bigint',
    extra: "jsonb_build_object('document_sha256', d.sha256)",
  },
  physitrack_programs: {
    from: 'receiver_v1.physitrack_programs v LEFT JOIN documents d ON d.id = v.current_document_id',
    key: 'v.id::text',
    order: 'v.id',
    after: '$1::text IS NOT NULL AND v.id > $2::bigint',
    extra: "jsonb_build_object('current_document_sha256', d.sha256)",
  },
};

export const ROW_KINDS = Object.keys(KINDS) as RowKind[];

/** Where a page ended: the last row's source and key (opaque to consumers). */
export interface RowPosition {
  sourceId: string;
  key: string;
}

export const encodePosition = (p: RowPosition) => Buffer.from(JSON.stringify([p.sourceId, p.key])).toString('base64url');

export function decodePosition(text: string): RowPosition | undefined | null {
  if (text === '') return null;
  try {
    const value: unknown = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
    if (Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && typeof value[1] === 'string') return { sourceId: value[0], key: value[1] };
  } catch {
    // not a position: below
  }
  return undefined;
}

function pageSql(kind: RowKind): string {
  const k = KINDS[kind];
  const row = k.extra ? `to_jsonb(v) || ${k.extra}` : 'to_jsonb(v)';
  // As the feed's pages: at most $6 rows, and ended once the text passes $7 bytes (after one row at least).
  return `WITH page AS (
  SELECT v.source_id, ${k.key} AS key, (${row})::text AS row, row_number() OVER (ORDER BY ${k.order}) AS ord FROM ${k.from}
  WHERE ($3::boolean OR v.source_id = ANY ($4::text[])) AND ($5::boolean OR ${k.after})
  ORDER BY ${k.order} LIMIT $6
), kept AS (
  SELECT * FROM (SELECT p.*, sum(octet_length(p.row)) OVER (ORDER BY p.ord) - octet_length(p.row) AS before FROM page p) s WHERE before < $7
), last AS (
  SELECT source_id, key FROM kept ORDER BY ord DESC LIMIT 1
)
SELECT (SELECT count(*)::int FROM kept) AS n, (SELECT count(*)::int FROM page) AS read, (SELECT source_id FROM last) AS last_source,
       (SELECT key FROM last) AS last_key, '[' || COALESCE((SELECT string_agg(row, ',' ORDER BY ord) FROM kept), '') || ']' AS rows`;
}

export interface RowsPage {
  rowsJson: string;
  /** Undefined when this page was the last. */
  next: RowPosition | undefined;
}

export async function readRows(pool: pg.Pool, kind: RowKind, after: RowPosition | null, limit: number, scope: Scope, maxBytes = PAGE_BYTES): Promise<RowsPage> {
  const { rows } = await pool.query<{ n: number; read: number; last_source: string | null; last_key: string | null; rows: string }>(pageSql(kind), [
    after?.sourceId ?? '',
    // Not read from the start ($5), but a valid bigint for the kinds keyed by id.
    after?.key ?? '0',
    scope.all,
    scope.all ? [] : scope.sourceIds,
    after === null,
    limit,
    maxBytes,
  ]);
  const row = rows[0]!;
  // More may follow when the page was full, or cut short by its size.
  const full = (row.read === limit || row.n < row.read) && row.last_source !== null && row.last_key !== null;
  return { rowsJson: row.rows, next: full ? { sourceId: row.last_source!, key: row.last_key! } : undefined };
}

/** Whether a position's key can be one of the kind's keys (ids are whole numbers). */
export function keyFits(kind: RowKind, key: string): boolean {
  return KINDS[kind].key !== 'v.id::text' || /^(0|[1-9][0-9]{0,17})$/.test(key);
}

/** The consumer's sources, as the read contract shows them: a JSON array, written by PostgreSQL. */
export async function readSources(pool: pg.Pool, scope: Scope): Promise<string> {
  const { rows } = await pool.query<{ sources: string }>(
    `SELECT COALESCE(json_agg(to_jsonb(v) ORDER BY v.vendor, v.id), '[]'::json)::text AS sources
     FROM receiver_v1.sources v WHERE $1::boolean OR v.id = ANY ($2::text[])`,
    [scope.all, scope.all ? [] : scope.sourceIds],
  );
  return rows[0]!.sources;
}
