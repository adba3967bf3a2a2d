import { createHash } from 'node:crypto';
import { auditInsertSql } from '../audit.js';
import { poolOf, reservedPoolOf, type Database } from '../db/client.js';
import { notifySql } from '../db/notify.js';
import type { PhysitrackNotice } from '../webhooks/physitrack-payload.js';
import { BUMP_PROGRAMS_CTE, CURRENT_DOCUMENT_CTES, PROGRAM_CTES } from './programs.js';

// This module owns physitrack_deliveries: its insert, its download state machine (claim, report
// back, expire, requeue) and the NOTIFY each state change sends. Nothing else writes the table.

const DEADLINE_PASSED = 'The download deadline passed before the PDF could be fetched.';

/** What a report back needs: the row, and the token of the claim that leased it. */
export interface Lease {
  id: bigint;
  /** `<workerId>/<random>`, written to locked_by by this claim only: a later claim of the row, even by the same worker, has another. */
  token: string;
}

/** A delivery claimed by one worker, leased until it reports back or the lease expires. */
export interface ClaimedDelivery extends Lease {
  fileUrl: string;
  attempts: number;
  deadlineAt: Date;
}

/**
 * One statement claims due rows: SKIP LOCKED lets replicas claim side by side without waiting or
 * taking the same row; the lease is written as next_attempt_at, so a row whose worker died comes
 * due again by itself when the lease runs out.
 */
const CLAIM = `
WITH due AS (
  SELECT id FROM physitrack_deliveries
  WHERE download_status IN ('pending', 'downloading') AND next_attempt_at <= now() AND deadline_at > now()
  ORDER BY next_attempt_at
  LIMIT $1
  FOR UPDATE SKIP LOCKED
)
UPDATE physitrack_deliveries d
SET download_status = 'downloading',
    attempts        = d.attempts + 1,
    locked_by       = $2::text || '/' || gen_random_uuid()::text,
    locked_until    = now() + make_interval(secs => $3::int),
    next_attempt_at = now() + make_interval(secs => $3::int)
FROM due WHERE d.id = due.id
RETURNING d.id, d.locked_by AS token, d.file_url AS "fileUrl", d.attempts, d.deadline_at AS "deadlineAt"`;

/** Rows whose deadline passed while waiting (or while their worker was gone) will never be fetched. */
const EXPIRE = `
UPDATE physitrack_deliveries
SET download_status = 'expired',
    last_error      = concat_ws(' ', last_error, '${DEADLINE_PASSED}'),
    locked_by       = NULL,
    locked_until    = NULL
WHERE download_status IN ('pending', 'downloading') AND next_attempt_at <= now() AND deadline_at <= now()`;

/**
 * A backoff that would overshoot the deadline is cut short to one last attempt just before it;
 * a row that has had that last attempt expires.
 */
const LAST_CHANCE = "interval '30 seconds'";

/** The one NOTIFY payload of this table: a delivery's id, source and download status. */
function notifyDelivery(status: string): string {
  return notifySql({ vendor: "'physitrack'", table: "'physitrack_deliveries'", id: 'id::text', source: 'source_id', downloadStatus: status });
}

/**
 * Runs a row update and, in the same statement (so only once it commits), tells a listening PMS
 * about rows that reached a final state. No patient data in the payload.
 */
function notifyingFinalStates(update: string): string {
  return `WITH changed AS (${update} RETURNING id, source_id, download_status), notified AS (
  SELECT ${notifyDelivery('download_status')} FROM changed WHERE download_status IN ('done', 'failed', 'expired')
)
SELECT id FROM changed, (SELECT count(*) FROM notified) AS n`;
}

export interface NewDelivery {
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
  id: bigint;
  /** The same notice (source and file_url) had been received before: this is its delivery. */
  redelivery: boolean;
  /** After this notice: `pending` for a new or requeued delivery, else whatever it was. */
  downloadStatus: string;
}

/** sha256 of file_url: the notice's identity within its source (the migration computes the same). */
export const noticeKeyOf = (fileUrl: string) => createHash('sha256').update(fileUrl, 'utf8').digest('hex');

/** A failed download (not a refused URL) or an expired one is tried again when Physitrack sends the notice again. */
const REQUEUE_ON_NOTICE = `d.download_status IN ('failed', 'expired') AND EXCLUDED.download_status = 'pending'`;

/**
 * A batch of notices in one atomic statement: their programs, their delivery rows (each also its
 * download job) and one audit row per notice received. The rows arrive folded to one per notice
 * (source, file_url) with its count n, since ON CONFLICT may touch a row only once per statement.
 * A notice seen before is its earlier delivery: counted, and requeued with a new deadline if it had
 * failed or expired. Ids are drawn in the input CTE, which PostgreSQL evaluates once.
 */
const INSERT_BATCH = `
WITH input AS (
  SELECT nextval(pg_get_serial_sequence('physitrack_deliveries', 'id')) AS id, t.*,
         CASE WHEN t.refusal IS NULL THEN 'pending' ELSE 'failed' END AS download_status,
         physitrack_program_key(t.program_created_at, t.program_date, t.program_name) AS program_key
  FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
    source_id text, notice_key text, n int, practitioner_token text, patient_id text, file_url text, program_name text,
    program_date date, program_created_at timestamptz, updated boolean, refusal text, deadline_hours int)) WITH ORDINALITY AS t(
    source_id, notice_key, n, practitioner_token, patient_id, file_url, program_name, program_date, program_created_at, updated,
    refusal, deadline_hours, ord)
), ${PROGRAM_CTES}, delivery AS (
  INSERT INTO physitrack_deliveries AS d
    (id, source_id, notice_key, notice_count, program_id, practitioner_token, patient_id, file_url, program_name, program_date,
     program_created_at, updated, download_status, last_error, deadline_at)
  SELECT i.id, i.source_id, i.notice_key, i.n, COALESCE(i.notice_program_id, p.program_id), i.practitioner_token, i.patient_id,
         i.file_url, i.program_name, i.program_date, i.program_created_at, i.updated, i.download_status, i.refusal,
         now() + make_interval(hours => i.deadline_hours)
  FROM keyed i LEFT JOIN program p USING (source_id, patient_id, program_key)
  ON CONFLICT (source_id, notice_key) DO UPDATE SET
    notice_count    = d.notice_count + EXCLUDED.notice_count,
    last_notice_at  = now(),
    download_status = CASE WHEN ${REQUEUE_ON_NOTICE} THEN 'pending' ELSE d.download_status END,
    deadline_at     = CASE WHEN ${REQUEUE_ON_NOTICE} THEN EXCLUDED.deadline_at ELSE d.deadline_at END,
    next_attempt_at = CASE WHEN ${REQUEUE_ON_NOTICE} THEN now() ELSE d.next_attempt_at END
  RETURNING d.id, d.source_id, d.notice_key, d.program_id, d.download_status, d.practitioner_token, d.program_name, (xmax = 0) AS inserted
), ${BUMP_PROGRAMS_CTE}, audit AS (
  ${auditInsertSql(`SELECT a.source_id, 'physitrack', dl.id::text, CASE WHEN a.refused THEN 422 ELSE 204 END, a.body_sha256, a.source_address
  FROM jsonb_to_recordset($2::jsonb) AS a(source_id text, notice_key text, refused boolean, body_sha256 text, source_address text)
  JOIN delivery dl ON dl.source_id = a.source_id AND dl.notice_key = a.notice_key`)}
), notify AS (
  SELECT ${notifySql({ vendor: "'physitrack'", table: "'physitrack_deliveries'", id: 'id::text', source: 'source_id', downloadStatus: 'download_status', redelivery: 'NOT inserted' })}
  FROM delivery
)
SELECT id, source_id AS "sourceId", notice_key AS "noticeKey", inserted, download_status AS "downloadStatus"
FROM delivery, (SELECT count(*) FROM notify) AS notified`;

const keyOf = (sourceId: string, noticeKey: string) => `${sourceId}\u0000${noticeKey}`;

type InsertedRow = { id: string; sourceId: string; noticeKey: string; inserted: boolean; downloadStatus: string };

/**
 * Runs the statement; again if a program it was creating was created by another transaction at
 * the same moment (see programs.ts): by then that transaction has committed, and the statement
 * finds the program. Plain pg: the error's column tells this case from any other.
 */
async function insertOnce(db: Database, rows: string, audit: string): Promise<InsertedRow[]> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      // Unnamed, so planned each time (about 1–2 ms a batch): its UPDATE of known programs joins a
      // table, and a named statement's plan, cached while the tables were young, would scan them
      // whole for good (measured: 10 ms a batch at 12,800 rows, growing; docs/performance.md).
      return (await poolOf(db).query<InsertedRow>(INSERT_BATCH, [rows, audit])).rows;
    } catch (err) {
      const { code, column } = err as { code?: string; column?: string };
      if (code !== '23502' || column !== 'program_id' || attempt === 3) throw err;
    }
  }
}

/** Stores the batch in one statement; resolves with each notice's delivery, in order. */
export async function insertDeliveries(db: Database, batch: NewDelivery[]): Promise<StoredDelivery[]> {
  const folded = new Map<string, { first: NewDelivery; noticeKey: string; n: number }>();
  const keys = batch.map((d) => {
    const noticeKey = noticeKeyOf(d.notice.fileUrl);
    const key = keyOf(d.sourceId, noticeKey);
    const seen = folded.get(key);
    if (seen) seen.n += 1;
    else folded.set(key, { first: d, noticeKey, n: 1 });
    return { key, noticeKey };
  });
  const rows = [...folded.values()].map(({ first: { sourceId, notice, refusal, deadlineHours }, noticeKey, n }) => ({
    source_id: sourceId,
    notice_key: noticeKey,
    n,
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
  const audit = batch.map((d, i) => ({ source_id: d.sourceId, notice_key: keys[i]!.noticeKey, refused: d.refusal !== null, body_sha256: d.bodySha256, source_address: d.sourceAddress }));
  const stored = await insertOnce(db, JSON.stringify(rows), JSON.stringify(audit));
  if (stored.length !== rows.length) throw new Error(`the batch insert returned ${stored.length} rows for ${rows.length} notices`);
  const byKey = new Map(stored.map((r) => [keyOf(r.sourceId, r.noticeKey), r]));
  // The first of several identical notices in a batch is the new one; the others repeat it.
  const answered = new Set<string>();
  return keys.map(({ key }) => {
    const row = byKey.get(key)!;
    const redelivery = !row.inserted || answered.has(key);
    answered.add(key);
    return { id: BigInt(row.id), redelivery, downloadStatus: row.downloadStatus };
  });
}

/**
 * Every report back is guarded by the claim's token: an attempt whose lease ran out, and whose row
 * was claimed again (by another replica or by this one), changes nothing.
 */
const OWNED = `id = $1 AND locked_by = $2 AND download_status = 'downloading'`;

/** Done, and in the same statement the program's current document (see programs.ts) and the NOTIFYs. */
const MARK_DONE = `
WITH changed AS (
  UPDATE physitrack_deliveries SET download_status = 'done', document_id = $3, downloaded_at = now(),
    last_error = NULL, last_http_status = NULL, locked_by = NULL, locked_until = NULL
  WHERE ${OWNED}
  RETURNING id, source_id, download_status, program_id, document_id
), ${CURRENT_DOCUMENT_CTES}, notified AS (
  SELECT ${notifyDelivery('download_status')} FROM changed
)
SELECT id FROM changed, (SELECT count(*) FROM notified) AS n, (SELECT count(*) FROM program_notified) AS pn`;

export interface DownloadQueue {
  /** How long a claim holds its rows; a running attempt renews it with heartbeat(). */
  readonly leaseSeconds: number;
  claim(limit: number): Promise<ClaimedDelivery[]>;
  expireOverdue(): Promise<number>;
  /** Extends the lease by leaseSeconds from now; false when the lease is lost (the token is gone). */
  heartbeat(lease: Lease): Promise<boolean>;
  markDone(lease: Lease, documentId: bigint): Promise<boolean>;
  markFailed(lease: Lease, error: string, httpStatus: number | null): Promise<boolean>;
  /** Schedules the next attempt, or expires the row when that would be past its deadline. */
  retryLater(lease: Lease, error: string, httpStatus: number | null, delayMs: number): Promise<boolean>;
  /** Hands a row back untouched (shutdown): due again at once, for this or another replica. */
  release(lease: Lease): Promise<boolean>;
}

/**
 * Plain pg rather than Prisma: every PDF costs a claim and a report back, and Prisma's raw queries
 * take measurably more CPU per statement on this path (`npm run bench:ack-path`). The reserved pool:
 * claims, heartbeats and reports are short, and must not wait behind a main pool full of writes.
 */
export function createDownloadQueue(db: Database, workerId: string, leaseSeconds: number): DownloadQueue {
  const pool = reservedPoolOf(db);
  const update = async (sql: string, ...params: unknown[]) => ((await pool.query(notifyingFinalStates(sql), params)).rowCount ?? 0) > 0;
  return {
    leaseSeconds,
    async claim(limit) {
      // Unnamed, so planned each time: a plan cached on a young table would scan the whole table later.
      const { rows } = await pool.query<Omit<ClaimedDelivery, 'id'> & { id: string }>(CLAIM, [limit, workerId, leaseSeconds]);
      return rows.map((r) => ({ ...r, id: BigInt(r.id) }));
    },
    async expireOverdue() {
      return (await pool.query(notifyingFinalStates(EXPIRE))).rowCount ?? 0;
    },
    async heartbeat({ id, token }) {
      const { rowCount } = await pool.query(
        `UPDATE physitrack_deliveries SET locked_until = now() + make_interval(secs => $3::int), next_attempt_at = now() + make_interval(secs => $3::int)
         WHERE ${OWNED}`,
        [id, token, leaseSeconds],
      );
      return (rowCount ?? 0) > 0;
    },
    async markDone({ id, token }, documentId) {
      return ((await pool.query(MARK_DONE, [id, token, documentId])).rowCount ?? 0) > 0;
    },
    markFailed: ({ id, token }, error, httpStatus) =>
      update(
        `UPDATE physitrack_deliveries SET download_status = 'failed', last_error = $3, last_http_status = $4,
           locked_by = NULL, locked_until = NULL WHERE ${OWNED}`,
        id,
        token,
        error,
        httpStatus,
      ),
    retryLater: ({ id, token }, error, httpStatus, delayMs) =>
      update(
        `UPDATE physitrack_deliveries d
         SET download_status  = CASE WHEN n.at > now() THEN 'pending' ELSE 'expired' END,
             last_error       = CASE WHEN n.at > now() THEN $3::text ELSE concat_ws(' ', $3::text, '${DEADLINE_PASSED}') END,
             last_http_status = $4,
             next_attempt_at  = GREATEST(n.at, now()),
             locked_by = NULL, locked_until = NULL
         FROM (SELECT id AS target, LEAST(now() + make_interval(secs => $5::float8 / 1000), deadline_at - ${LAST_CHANCE}) AS at
               FROM physitrack_deliveries WHERE id = $1) n
         WHERE d.id = n.target AND d.${OWNED}`,
        id,
        token,
        error,
        httpStatus,
        delayMs,
      ),
    release: ({ id, token }) =>
      update(
        `UPDATE physitrack_deliveries SET download_status = 'pending', next_attempt_at = now(), locked_by = NULL, locked_until = NULL
         WHERE ${OWNED}`,
        id,
        token,
      ),
  };
}

const REQUEUE = `SET download_status = 'pending', next_attempt_at = now(), locked_by = NULL, locked_until = NULL`;
const REQUEUEABLE = `download_status IN ('failed', 'expired') AND deadline_at > now()`;

export type RequeueOutcome = { requeued: true } | { requeued: false; reason: string };

/** An operator's retry: a failed or expired delivery whose deadline has not passed is due again now. */
export async function requeueDelivery(db: Database, id: bigint): Promise<RequeueOutcome> {
  const pool = poolOf(db);
  const { rowCount } = await pool.query(`UPDATE physitrack_deliveries ${REQUEUE} WHERE id = $1 AND ${REQUEUEABLE}`, [id]);
  if (rowCount) return { requeued: true };
  const { rows } = await pool.query<{ status: string; past: boolean }>(
    'SELECT download_status AS status, deadline_at <= now() AS past FROM physitrack_deliveries WHERE id = $1',
    [id],
  );
  const row = rows[0];
  if (!row) return { requeued: false, reason: 'not found' };
  const finished = row.status === 'failed' || row.status === 'expired';
  return { requeued: false, reason: finished && row.past ? 'its deadline has passed' : `it is ${row.status}` };
}

/** Every delivery in `status` (failed or expired) whose deadline has not passed; counts those past it. */
export async function requeueByStatus(db: Database, status: 'failed' | 'expired'): Promise<{ ids: string[]; skippedPastDeadline: number }> {
  const { rows } = await poolOf(db).query<{ ids: string[] | null; skipped: number }>(
    `WITH requeued AS (
       UPDATE physitrack_deliveries ${REQUEUE} WHERE download_status = $1 AND ${REQUEUEABLE} RETURNING id
     )
     SELECT (SELECT array_agg(id::text ORDER BY id) FROM requeued) AS ids,
            (SELECT count(*)::int FROM physitrack_deliveries WHERE download_status = $1 AND deadline_at <= now()) AS skipped`,
    [status],
  );
  return { ids: rows[0]?.ids ?? [], skippedPastDeadline: rows[0]?.skipped ?? 0 };
}

/** Exponential backoff with jitter, capped: base·2^(attempt−1), then a random 50–100 % of it. */
export function retryDelayMs(attempt: number, baseMs: number, random = Math.random): number {
  const capped = Math.min(baseMs * 2 ** Math.min(attempt - 1, 30), 30 * 60_000);
  return Math.round(capped * (0.5 + random() * 0.5));
}
