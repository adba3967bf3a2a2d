import { poolOf, reservedPoolOf, type Database } from '../db/client.js';
import { notifySql } from '../db/notify.js';
import { changesInsertSql } from '../changes/changes-table.js';
import { CURRENT_DOCUMENT_CTES } from './programs.js';

// physitrack_deliveries' SQL lives here and in intake.ts, nothing else writes the table: here the
// download state machine (claim, renew, report back, expire, requeue) and the table's one NOTIFY
// payload; in intake.ts the arrival of notices.

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
    finished_at     = now(),
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
export function notifyDelivery(status: string, extra: Record<string, string> = {}): string {
  return notifySql({ vendor: "'physitrack'", table: "'physitrack_deliveries'", id: 'id::text', source: 'source_id', downloadStatus: status, ...extra });
}

/**
 * Runs a row update and, in the same statement (so only once it commits), tells a listening PMS
 * about rows that reached a final state. No patient data in the payload.
 */
function notifyingFinalStates(update: string): string {
  return `WITH changed AS (${update} RETURNING id, source_id, download_status), notified AS (
  SELECT ${notifyDelivery('download_status')} FROM changed WHERE download_status IN ('done', 'failed', 'expired')
), change AS (
  ${deliveryChanges("FROM changed WHERE download_status IN ('done', 'failed', 'expired')")}
)
SELECT id FROM changed, (SELECT count(*) FROM notified) AS n`;
}

/** The change feed's rows for deliveries: `from` yields rows with id and source_id. */
const deliveryChanges = (from: string) => changesInsertSql(`SELECT 'physitrack', source_id, 'physitrack_deliveries', id::text ${from}`);

/**
 * Every report back is guarded by the claim's token: an attempt whose lease ran out, and whose row
 * was claimed again (by another replica or by this one), changes nothing.
 */
const OWNED = `id = $1 AND locked_by = $2 AND download_status = 'downloading'`;

/** Done, and in the same statement the program's current document (see programs.ts) and the NOTIFYs. */
const MARK_DONE = `
WITH changed AS (
  UPDATE physitrack_deliveries SET download_status = 'done', document_id = $3, downloaded_at = now(), finished_at = now(),
    last_error = NULL, last_http_status = NULL, locked_by = NULL, locked_until = NULL
  WHERE ${OWNED}
  RETURNING id, source_id, download_status, program_id, document_id, received_at
), ${CURRENT_DOCUMENT_CTES}, notified AS (
  SELECT ${notifyDelivery('download_status')} FROM changed
), change AS (
  ${changesInsertSql(`SELECT 'physitrack', source_id, 'physitrack_deliveries', id::text FROM changed
  UNION ALL SELECT 'physitrack', source_id, 'physitrack_programs', id::text FROM current`)}
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
  /** Whether the delivery's row is still there (an erasure may have removed it). */
  exists(lease: Lease): Promise<boolean>;
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
        `UPDATE physitrack_deliveries SET download_status = 'failed', finished_at = now(), last_error = $3, last_http_status = $4,
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
             finished_at      = CASE WHEN n.at > now() THEN NULL ELSE now() END,
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
    async exists({ id }) {
      return ((await pool.query('SELECT 1 FROM physitrack_deliveries WHERE id = $1', [id])).rowCount ?? 0) > 0;
    },
    release: ({ id, token }) =>
      update(
        `UPDATE physitrack_deliveries SET download_status = 'pending', next_attempt_at = now(), locked_by = NULL, locked_until = NULL
         WHERE ${OWNED}`,
        id,
        token,
      ),
  };
}

const REQUEUE = `SET download_status = 'pending', finished_at = NULL, next_attempt_at = now(), locked_by = NULL, locked_until = NULL`;
const REQUEUEABLE = `download_status IN ('failed', 'expired') AND deadline_at > now()`;

export type RequeueOutcome = { requeued: true } | { requeued: false; reason: string };

/** Whether a file URL may be fetched now (the download policy): undefined, or why not. */
export type UrlCheck = (fileUrl: string) => string | undefined;

/**
 * An operator's retry: a failed or expired delivery whose deadline has not passed is due again now,
 * unless the download policy refuses its URL (it would fail again at once, and fetching it is what
 * the policy forbids).
 */
export async function requeueDelivery(db: Database, id: bigint, refusal: UrlCheck): Promise<RequeueOutcome> {
  const pool = poolOf(db);
  const { rows } = await pool.query<{ status: string; past: boolean; fileUrl: string }>(
    'SELECT download_status AS status, deadline_at <= now() AS past, file_url AS "fileUrl" FROM physitrack_deliveries WHERE id = $1',
    [id],
  );
  const row = rows[0];
  if (!row) return { requeued: false, reason: 'not found' };
  const refused = refusal(row.fileUrl);
  if (refused && (row.status === 'failed' || row.status === 'expired')) return { requeued: false, reason: `its file URL is refused by the download policy (${refused})` };
  const { rowCount } = await pool.query(
    `WITH requeued AS (UPDATE physitrack_deliveries ${REQUEUE} WHERE id = $1 AND ${REQUEUEABLE} RETURNING id, source_id), change AS (
       ${deliveryChanges('FROM requeued')}
     ) SELECT id FROM requeued`,
    [id],
  );
  if (rowCount) return { requeued: true };
  const finished = row.status === 'failed' || row.status === 'expired';
  return { requeued: false, reason: finished && row.past ? 'its deadline has passed' : `it is ${row.status}` };
}

/**
 * Every delivery in `status` (failed or expired) whose deadline has not passed and whose URL the
 * policy allows; counts those past it and those refused.
 */
export async function requeueByStatus(db: Database, status: 'failed' | 'expired', refusal: UrlCheck): Promise<{ ids: string[]; skippedPastDeadline: number; skippedRefused: number }> {
  const pool = poolOf(db);
  const { rows: candidates } = await pool.query<{ id: string; fileUrl: string }>(
    `SELECT id::text AS id, file_url AS "fileUrl" FROM physitrack_deliveries WHERE download_status = $1 AND ${REQUEUEABLE}`,
    [status],
  );
  const allowed = candidates.filter((c) => refusal(c.fileUrl) === undefined).map((c) => c.id);
  const { rows } = await pool.query<{ ids: string[] | null; skipped: number }>(
    `WITH requeued AS (
       UPDATE physitrack_deliveries ${REQUEUE} WHERE id = ANY ($2::bigint[]) AND download_status = $1 AND ${REQUEUEABLE} RETURNING id, source_id
     ), change AS (
       ${deliveryChanges('FROM requeued')}
     )
     SELECT (SELECT array_agg(id::text ORDER BY id) FROM requeued) AS ids,
            (SELECT count(*)::int FROM physitrack_deliveries WHERE download_status = $1 AND deadline_at <= now()) AS skipped`,
    [status, allowed],
  );
  return { ids: rows[0]?.ids ?? [], skippedPastDeadline: rows[0]?.skipped ?? 0, skippedRefused: candidates.length - allowed.length };
}

/** Exponential backoff with jitter, capped: base·2^(attempt−1), then a random 50–100 % of it. */
export function retryDelayMs(attempt: number, baseMs: number, random = Math.random): number {
  const capped = Math.min(baseMs * 2 ** Math.min(attempt - 1, 30), 30 * 60_000);
  return Math.round(capped * (0.5 + random() * 0.5));
}
