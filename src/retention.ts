import { unlink } from 'node:fs/promises';
import path from 'node:path';
import { inTransaction, type Database } from './db/client.js';
import { deleteUnreferencedDocuments, type DeletedDocument } from './storage/document-rows.js';
import { PURGE_CHANGES } from './changes/changes-table.js';

/** Shorter retention is refused: it is almost certainly a typo (30m for 30d), and data is lost. */
export const MIN_RETENTION_MS = 3_600_000;

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** "90d", "12h", "30m" → milliseconds. Throws a RangeError naming the accepted forms otherwise. */
export function parseDuration(text: string): number {
  const match = /^([1-9][0-9]{0,5})([dhm])$/.exec(text.trim());
  if (!match) throw new RangeError(`"${text}" is not a duration: use a whole number and d, h or m (90d, 12h, 30m)`);
  return Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
}

export interface PurgeOptions {
  olderThanMs: number;
  /** Count what would be deleted, delete nothing. */
  dryRun: boolean;
  /** Also delete documents no delivery references any more (and, for filesystem storage, their files). */
  includeDocuments: boolean;
  /** Where filesystem storage keeps the files (`config.storage.pdfDir`). */
  pdfDir: string;
  /** Rows per DELETE statement; each statement is its own short transaction. Default 1000. */
  batchSize?: number;
}

export type PurgedTable = 'patiro_events' | 'webhook_audit' | 'physitrack_deliveries' | 'documents' | 'changes';

export interface PurgeResult {
  dryRun: boolean;
  /** Rows older than this were (or would be) deleted; the database's clock. */
  cutoff: Date;
  /** Rows deleted per table, or in a dry run the rows that would be. */
  counts: Record<PurgedTable, number>;
  files: {
    /** PDF files removed (dry run: filesystem documents whose files would be). */
    removed: number;
    /** Files already gone. */
    missing: number;
    /** Rows whose storage_key is not of the form xx/<sha256>.pdf: their path was not touched. */
    refused: number;
  };
}

/** Downloads still in progress are never purged, however old; only finished rows are. */
const FINAL = `t.download_status IN ('done', 'failed', 'expired')`;
/** A program's current PDF is kept as long as the program is, like the deliveries' ones. */
const NOT_CURRENT = `NOT EXISTS (SELECT 1 FROM physitrack_programs g WHERE g.current_document_id = t.id)`;
const UNREFERENCED = `NOT EXISTS (SELECT 1 FROM physitrack_deliveries p WHERE p.document_id = t.id) AND ${NOT_CURRENT}`;
/** For the dry run: referenced only by deliveries this purge deletes first. */
const UNREFERENCED_AFTER_PURGE = `NOT EXISTS (SELECT 1 FROM physitrack_deliveries p WHERE p.document_id = t.id
  AND NOT (p.received_at < $1::timestamptz AND p.download_status IN ('done', 'failed', 'expired'))) AND ${NOT_CURRENT}`;

interface TableRule {
  table: PurgedTable;
  /** The primary key's columns: a batch deletes exactly the rows it locked. */
  key: string[];
  where: string;
}

/** In this order: deliveries before documents, so documents they alone referenced go in the same run. */
const RULES: TableRule[] = [
  { table: 'patiro_events', key: ['source_id', 'event_id'], where: 't.last_received_at < $1::timestamptz' },
  { table: 'webhook_audit', key: ['id'], where: 't.received_at < $1::timestamptz' },
  { table: 'physitrack_deliveries', key: ['id'], where: `t.received_at < $1::timestamptz AND ${FINAL}` },
  { table: 'documents', key: ['id'], where: `t.created_at < $1::timestamptz AND ${UNREFERENCED}` },
];

/**
 * One batch: locks up to $2 matching rows, skipping rows another purge (or a worker) holds, and
 * deletes them. A concurrent run therefore deletes other rows, never the same ones, and nothing
 * waits on a long lock. The CTE with FOR UPDATE is evaluated exactly once.
 */
function batchDelete({ table, key, where }: TableRule): string {
  const columns = (alias: string) => `(${key.map((column) => `${alias}.${column}`).join(', ')})`;
  return `WITH batch AS (
  SELECT ${key.map((column) => `t.${column}`).join(', ')} FROM ${table} t WHERE ${where} LIMIT $2 FOR UPDATE OF t SKIP LOCKED
)
DELETE FROM ${table} x USING batch WHERE ${columns('x')} = ${columns('batch')}`;
}

const STORAGE_KEY = /^([0-9a-f]{2})\/([0-9a-f]{64})\.pdf$/;

/**
 * Removes the files of deleted filesystem documents, unless the same content was stored again
 * since (files are named by sha256). Also used by erasure (erasure.ts), after its COMMIT.
 */
export async function removeFiles(db: Database, pdfDir: string, rows: DeletedDocument[], files: PurgeResult['files']): Promise<void> {
  for (const row of rows) {
    if (row.storage !== 'filesystem') continue;
    const match = STORAGE_KEY.exec(row.storage_key ?? '');
    if (!match || match[2]!.slice(0, 2) !== match[1]) {
      files.refused += 1;
      continue;
    }
    // The same content may have been stored again since (files are named by sha256): then it stays.
    const again = await db.$queryRawUnsafe<unknown[]>('SELECT 1 FROM documents WHERE sha256 = $1', match[2]);
    if (again.length > 0) continue;
    try {
      await unlink(path.join(pdfDir, row.storage_key!));
      files.removed += 1;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      files.missing += 1;
    }
  }
}

export type { DeletedDocument };

async function countOnly(db: Database, cutoff: string, includeDocuments: boolean, result: PurgeResult): Promise<void> {
  for (const rule of RULES) {
    if (rule.table === 'documents' && !includeDocuments) continue;
    const where = rule.table === 'documents' ? `t.created_at < $1::timestamptz AND ${UNREFERENCED_AFTER_PURGE}` : rule.where;
    const [row] = await db.$queryRawUnsafe<{ n: number; files: number }[]>(
      `SELECT count(*)::int AS n, ${rule.table === 'documents' ? "count(*) FILTER (WHERE t.storage = 'filesystem')::int" : '0'} AS files
       FROM ${rule.table} t WHERE ${where}`,
      cutoff,
    );
    result.counts[rule.table] = row!.n;
    result.files.removed += row!.files;
  }
  const [changes] = await db.$queryRawUnsafe<{ n: number }[]>('SELECT count(*)::int AS n FROM changes WHERE at < $1::timestamptz', cutoff);
  result.counts.changes = changes!.n;
}

/**
 * Deletes what is older than the retention period: Patiro events by last delivery, audit rows,
 * finished Physitrack deliveries, and with `includeDocuments` the documents nothing references
 * any more. Current patients (patiro_patients) are kept: they are state, not history.
 * Idempotent, and safe to run from several replicas at once.
 */
export async function purge(db: Database, options: PurgeOptions): Promise<PurgeResult> {
  const { olderThanMs, dryRun, includeDocuments, pdfDir, batchSize = 1000 } = options;
  if (!Number.isFinite(olderThanMs) || olderThanMs < MIN_RETENTION_MS) throw new RangeError('Refusing to purge data younger than 1 hour.');
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError('batchSize must be a positive whole number.');
  // One cutoff from the database's clock for every table and batch, kept as text to keep microseconds.
  const [clock] = await db.$queryRawUnsafe<{ text: string; at: Date }[]>(
    `SELECT c::text AS text, c AS at FROM (SELECT now() - $1::bigint * interval '1 millisecond' AS c) s`,
    String(Math.floor(olderThanMs)),
  );
  const result: PurgeResult = {
    dryRun,
    cutoff: clock!.at,
    counts: { patiro_events: 0, webhook_audit: 0, physitrack_deliveries: 0, documents: 0, changes: 0 },
    files: { removed: 0, missing: 0, refused: 0 },
  };
  if (dryRun) {
    await countOnly(db, clock!.text, includeDocuments, result);
    return result;
  }
  for (const rule of RULES) {
    if (rule.table === 'documents' && !includeDocuments) continue;
    for (;;) {
      if (rule.table === 'documents') {
        // Candidates first, then deleteUnreferencedDocuments judges them again on a new snapshot:
        // a delivery given one of them meanwhile (the same PDF downloaded again) keeps it.
        const { candidates, rows } = await inTransaction(db, async (client) => {
          const locked = await client.query<{ id: string }>(`SELECT t.id FROM documents t WHERE ${rule.where} LIMIT $2 FOR UPDATE OF t SKIP LOCKED`, [clock!.text, batchSize]);
          const ids = locked.rows.map((row) => row.id);
          // Whose PDF each was does not keep it here: the clinic's retention decides (the owners go with it).
          return { candidates: ids.length, rows: await deleteUnreferencedDocuments(client, ids, { evenIfOwned: true }) };
        });
        await removeFiles(db, pdfDir, rows, result.files);
        result.counts.documents += rows.length;
        if (candidates === 0) break;
      } else {
        const deleted = await db.$executeRawUnsafe(batchDelete(rule), clock!.text, batchSize);
        result.counts[rule.table] += deleted;
        if (deleted === 0) break;
      }
    }
  }
  // The change feed's old rows, and its purge mark: a consumer whose cursor is before it gets 410.
  for (;;) {
    const [row] = await db.$queryRawUnsafe<{ n: number }[]>(PURGE_CHANGES, clock!.text, batchSize);
    result.counts.changes += row!.n;
    if (row!.n === 0) break;
  }
  return result;
}
