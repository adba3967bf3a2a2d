import { createHash } from 'node:crypto';
import pg from 'pg';
import { RECEIPT_CONSTRAINT, receiptsInsertSql, type Receipt } from '../audit.js';
import { erasureLocksSql } from '../erasure.js';
import { poolOf, type Database } from '../db/client.js';
import { changesInsertSql } from '../changes/changes-table.js';
import type { PhysitrackNotice } from '../webhooks/physitrack-payload.js';
import { BUMP_PROGRAMS_CTE, PROGRAM_CTES } from './programs.js';
import { notifyDelivery } from './queue.js';

// The arrival of Physitrack notices: one statement per group-committed batch writes their
// deliveries (each also its download job), their programs and their audit rows. The deliveries'
// download state machine, and the table's NOTIFY payload, are in queue.ts.

export interface NewDelivery {
  receipt: Receipt;
  /** The source (integration) it was sent to. */
  sourceId: string;
  notice: PhysitrackNotice;
  /** Set when the download policy refused file_url: the row is kept as `failed`, never fetched. */
  refusal: string | null;
  deadlineHours: number;
  bodySha256: string;
  sourceAddress: string | null;
}

export interface StoredDelivery {
  /** Null when this delivery's receipt was already recorded: the write ran before, nothing was written again. */
  id: bigint | null;
  /** The same notice (source and file_url) had been received before: this is its delivery. */
  redelivery: boolean;
  /** After this notice: `pending` for a new or requeued delivery, else whatever it was (null with a null id). */
  downloadStatus: string | null;
}

/** sha256 of file_url: the notice's identity within its source (the migration computes the same). */
export const noticeKeyOf = (fileUrl: string) => createHash('sha256').update(fileUrl, 'utf8').digest('hex');

/** A failed download (not a refused URL) or an expired one is tried again when Physitrack sends the notice again. */
const REQUEUE_ON_NOTICE = `d.download_status IN ('failed', 'expired') AND EXCLUDED.download_status = 'pending'`;

/**
 * A batch of notices in one atomic statement: their programs, their delivery rows (each also its
 * download job) and one audit row per notice received. The rows arrive folded to one per notice
 * (source, file_url), since ON CONFLICT may touch a row only once per statement, and the audit rows
 * one per delivery with its receipt. A delivery whose receipt is already recorded (this write ran
 * before) counts nothing again, and a notice none of whose deliveries is new is not touched. The
 * receipts are looked up, not inserted first: an audit row names its delivery's id, known only once
 * the delivery is written. Two writes of one receipt at once meet at the audit's unique index, and
 * the later runs again (insertDeliveries). A notice seen before is its earlier delivery: counted, and
 * requeued with a new deadline if it had failed or expired. Times come from the receipts: a delivery
 * keeps its earliest receive time and deadline whatever order its notices are written in. Ids are
 * drawn in the input CTE, which PostgreSQL evaluates once.
 */
const INSERT_BATCH = `
WITH locks AS MATERIALIZED (
  ${erasureLocksSql('physitrack', 'SELECT * FROM jsonb_to_recordset($1::jsonb) AS n(source_id text, patient_id text)')}
), arrival AS (
  -- A scalar subquery, looked up per receipt: EXISTS may be planned as a hash of every receipt.
  SELECT a.*, COALESCE((SELECT true FROM webhook_audit w WHERE w.receipt_id = a.receipt_id), false) AS recorded
  FROM jsonb_to_recordset($2::jsonb) AS a(receipt_id uuid, received_at timestamptz, source_id text, notice_key text, refused boolean,
                                          body_sha256 text, source_address text)
), fresh AS (
  SELECT source_id, notice_key, count(*)::int AS n, min(received_at) AS first_at, max(received_at) AS last_at
  FROM arrival WHERE NOT recorded GROUP BY source_id, notice_key
), input AS (
  SELECT nextval(pg_get_serial_sequence('physitrack_deliveries', 'id')) AS id, t.*, f.n, f.first_at, f.last_at,
         CASE WHEN t.refusal IS NULL THEN 'pending' ELSE 'failed' END AS download_status,
         physitrack_program_key(t.program_created_at, t.program_date, t.program_name) AS program_key
  FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
    source_id text, notice_key text, practitioner_token text, patient_id text, file_url text, program_name text,
    program_date date, program_created_at timestamptz, updated boolean, refusal text, deadline_hours int)) WITH ORDINALITY AS t(
    source_id, notice_key, practitioner_token, patient_id, file_url, program_name, program_date, program_created_at, updated,
    refusal, deadline_hours, ord)
  JOIN fresh f USING (source_id, notice_key)
  -- Every write of the statement derives from input: the erasure locks are taken first.
  CROSS JOIN locks
), ${PROGRAM_CTES}, delivery AS (
  INSERT INTO physitrack_deliveries AS d
    (id, source_id, notice_key, notice_count, program_id, practitioner_token, patient_id, file_url, program_name, program_date,
     program_created_at, updated, download_status, last_error, received_at, last_notice_at, deadline_at, finished_at)
  SELECT i.id, i.source_id, i.notice_key, i.n, COALESCE(i.notice_program_id, p.program_id), i.practitioner_token, i.patient_id,
         i.file_url, i.program_name, i.program_date, i.program_created_at, i.updated, i.download_status, i.refusal,
         i.first_at, i.last_at, i.first_at + make_interval(hours => i.deadline_hours),
         -- A refused URL is failed, and so finished, as it arrives.
         CASE WHEN i.refusal IS NULL THEN NULL ELSE i.first_at END
  FROM keyed i LEFT JOIN program p USING (source_id, patient_id, program_key)
  ON CONFLICT (source_id, notice_key) DO UPDATE SET
    notice_count    = d.notice_count + EXCLUDED.notice_count,
    received_at     = LEAST(d.received_at, EXCLUDED.received_at),
    last_notice_at  = GREATEST(d.last_notice_at, EXCLUDED.last_notice_at),
    download_status = CASE WHEN ${REQUEUE_ON_NOTICE} THEN 'pending' ELSE d.download_status END,
    -- A refused URL finished when its first notice arrived, in whatever order its notices are written.
    finished_at     = CASE WHEN ${REQUEUE_ON_NOTICE} THEN NULL
                           WHEN d.download_status = 'failed' AND EXCLUDED.download_status = 'failed' THEN LEAST(d.finished_at, EXCLUDED.finished_at)
                           ELSE d.finished_at END,
    deadline_at     = CASE WHEN ${REQUEUE_ON_NOTICE} THEN EXCLUDED.deadline_at ELSE LEAST(d.deadline_at, EXCLUDED.deadline_at) END,
    next_attempt_at = CASE WHEN ${REQUEUE_ON_NOTICE} THEN now() ELSE d.next_attempt_at END
  RETURNING d.id, d.source_id, d.notice_key, d.program_id, d.download_status, d.practitioner_token, d.program_name, d.program_date,
            d.document_id, d.received_at, (xmax = 0) AS inserted
), ${BUMP_PROGRAMS_CTE}, audit AS (
  ${receiptsInsertSql(`SELECT a.receipt_id, a.received_at, a.source_id, 'physitrack', dl.id::text, CASE WHEN a.refused THEN 422 ELSE 204 END,
         a.body_sha256, a.source_address
  FROM arrival a JOIN delivery dl ON dl.source_id = a.source_id AND dl.notice_key = a.notice_key
  WHERE NOT a.recorded`)}
), notify AS (
  SELECT ${notifyDelivery('download_status', { redelivery: 'NOT inserted' })} FROM delivery
), change AS (
  -- Programs first: a PMS that imports in feed order has a delivery's program before the delivery.
  ${changesInsertSql(`SELECT 'physitrack', source_id, 'physitrack_programs', program_id::text FROM created
  UNION ALL SELECT 'physitrack', source_id, 'physitrack_programs', id::text FROM bump
  UNION ALL SELECT 'physitrack', source_id, 'physitrack_deliveries', id::text FROM delivery`)}
)
SELECT id, source_id AS "sourceId", notice_key AS "noticeKey", inserted, download_status AS "downloadStatus",
       -- Programs found at the start of the statement and gone by its update (an erasure committed
       -- meanwhile): the statement is rolled back and run again, and then creates them anew.
       (SELECT count(*)::int FROM touched WHERE program_id NOT IN (SELECT id FROM bump)) AS "programsGone"
FROM delivery, (SELECT count(*) FROM notify) AS notified, (SELECT count(*) FROM bump_notified) AS program_notified`;

const keyOf = (sourceId: string, noticeKey: string) => `${sourceId}\u0000${noticeKey}`;

type InsertedRow = { id: string; sourceId: string; noticeKey: string; inserted: boolean; downloadStatus: string; programsGone: number };

/** A program the statement found was erased before it could update it: nothing is committed, and it runs again. */
class ProgramGoneError extends Error {
  override readonly name = 'ProgramGoneError';
}

/**
 * The batch statement is a named one: parsed once per connection, and after five runs planned
 * once, without the batch's values (a generic plan), until the tables' statistics change. Planned
 * so on young tables, its lookups were sequential scans, costing one row more with every notice
 * stored until the next ANALYZE. Its transaction turns them off, so the plan reaches rows only
 * through their indexes. JIT is off as a guard: before PostgreSQL 18, a scan that has no index to
 * use is costed at 10^10 when sequential scans are off, which would start JIT at every batch.
 * Measured: half the PostgreSQL CPU per notice of the statement planned at every batch
 * (docs/performance.md).
 */
export const INTAKE_PLANNER_SETTINGS = 'SET LOCAL enable_seqscan = off; SET LOCAL jit = off';
export const INTAKE_STATEMENT = { name: 'physitrack_intake', text: INSERT_BATCH } as const;

/**
 * The server gives up a little before the pool's client-side timeout: it cancels its own
 * statement, releases its locks and answers, so the connection is rolled back and kept.
 */
function serverTimeoutOf(pool: pg.Pool): string {
  const clientTimeoutMs = pool.options.query_timeout;
  return clientTimeoutMs ? `; SET LOCAL statement_timeout = ${Math.max(1, Math.floor(clientTimeoutMs * 0.9))}` : '';
}

async function insertInTransaction(pool: pg.Pool, values: [string, string]): Promise<InsertedRow[]> {
  const client = await pool.connect();
  let unusable: Error | undefined;
  try {
    await client.query(`BEGIN; ${INTAKE_PLANNER_SETTINGS}${serverTimeoutOf(pool)}`);
    const { rows } = await client.query<InsertedRow>({ ...INTAKE_STATEMENT, values });
    if ((rows[0]?.programsGone ?? 0) > 0) {
      await client.query('ROLLBACK');
      throw new ProgramGoneError('a program of this batch was erased while it was written');
    }
    await client.query('COMMIT');
    return rows;
  } catch (err) {
    // Only a server that answered is waiting for ROLLBACK. After the client-side timeout or a lost
    // connection, a ROLLBACK would queue behind the statement still running: the connection is
    // dropped instead, and the server aborts its transaction.
    if (err instanceof ProgramGoneError) throw err;
    if (err instanceof pg.DatabaseError) await client.query('ROLLBACK').catch((rollbackErr: Error) => void (unusable = rollbackErr));
    else unusable = err instanceof Error ? err : new Error(String(err));
    throw err;
  } finally {
    client.release(unusable);
  }
}

/**
 * Runs the statement; again if a program it was creating was created by another transaction at
 * the same moment (see programs.ts), or if another write recorded one of its receipts meanwhile:
 * by then that transaction has committed, and the statement finds the program, or the receipt and
 * counts it no more; or if a program it found was erased before it could update it. Plain pg: the
 * error's column and constraint tell these cases from any other.
 */
async function insertOnce(db: Database, rows: string, audit: string): Promise<InsertedRow[]> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await insertInTransaction(poolOf(db), [rows, audit]);
    } catch (err) {
      const { code, column, constraint } = err as { code?: string; column?: string; constraint?: string };
      const raced = err instanceof ProgramGoneError || (code === '23502' && column === 'program_id') || (code === '23505' && constraint === RECEIPT_CONSTRAINT);
      // Each such race needs another transaction to commit in between: a few attempts are plenty.
      if (!raced || attempt === 5) throw err;
    }
  }
}

/** Stores the batch in one statement; resolves with each notice's delivery, in order. */
export async function insertDeliveries(db: Database, batch: NewDelivery[]): Promise<StoredDelivery[]> {
  const folded = new Map<string, { first: NewDelivery; noticeKey: string }>();
  const keys = batch.map((d) => {
    const noticeKey = noticeKeyOf(d.notice.fileUrl);
    const key = keyOf(d.sourceId, noticeKey);
    if (!folded.has(key)) folded.set(key, { first: d, noticeKey });
    return { key, noticeKey };
  });
  const rows = [...folded.values()].map(({ first: { sourceId, notice, refusal, deadlineHours }, noticeKey }) => ({
    source_id: sourceId,
    notice_key: noticeKey,
    practitioner_token: notice.practitionerToken,
    patient_id: notice.patientId,
    file_url: notice.fileUrl,
    program_name: notice.programName,
    program_date: notice.programDate,
    program_created_at: notice.programCreatedAt,
    updated: notice.updated,
    refusal,
    deadline_hours: deadlineHours,
  }));
  const audit = batch.map((d, i) => ({
    receipt_id: d.receipt.id,
    received_at: d.receipt.receivedAt.toISOString(),
    source_id: d.sourceId,
    notice_key: keys[i]!.noticeKey,
    refused: d.refusal !== null,
    body_sha256: d.bodySha256,
    source_address: d.sourceAddress,
  }));
  const stored = await insertOnce(db, JSON.stringify(rows), JSON.stringify(audit));
  // A notice none of whose deliveries is new (every receipt recorded before) is not written again.
  const byKey = new Map(stored.map((r) => [keyOf(r.sourceId, r.noticeKey), r]));
  // The first of several identical notices in a batch is the new one; the others repeat it.
  const answered = new Set<string>();
  return keys.map(({ key }) => {
    const row = byKey.get(key);
    if (!row) return { id: null, redelivery: true, downloadStatus: null };
    const redelivery = !row.inserted || answered.has(key);
    answered.add(key);
    return { id: BigInt(row.id), redelivery, downloadStatus: row.downloadStatus };
  });
}
