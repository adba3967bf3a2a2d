import { poolOf, type Database } from '../db/client.js';

const DEADLINE_PASSED = 'The download deadline passed before the PDF could be fetched.';

/** A delivery claimed by one worker, leased until it reports back or the lease expires. */
export interface ClaimedDelivery {
  id: bigint;
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
    locked_by       = $2,
    locked_until    = now() + make_interval(secs => $3::int),
    next_attempt_at = now() + make_interval(secs => $3::int)
FROM due WHERE d.id = due.id
RETURNING d.id, d.file_url AS "fileUrl", d.attempts, d.deadline_at AS "deadlineAt"`;

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

/**
 * Runs a row update and, in the same statement (so only once it commits), tells a listening PMS
 * about rows that reached a final state. No patient data in the payload.
 */
export function notifyingFinalStates(update: string): string {
  return `WITH changed AS (${update} RETURNING id, download_status), notified AS (
  SELECT pg_notify('webhook_receiver', json_build_object('vendor', 'physitrack', 'table', 'physitrack_deliveries',
    'id', id::text, 'downloadStatus', download_status)::text)
  FROM changed WHERE download_status IN ('done', 'failed', 'expired')
)
SELECT id FROM changed, (SELECT count(*) FROM notified) AS n`;
}

/** Every report back is guarded by the lease: a worker that lost its row changes nothing. */
const OWNED = `id = $1 AND locked_by = $2 AND download_status = 'downloading'`;

export interface DownloadQueue {
  claim(limit: number): Promise<ClaimedDelivery[]>;
  expireOverdue(): Promise<number>;
  markDone(id: bigint, documentId: bigint): Promise<boolean>;
  markFailed(id: bigint, error: string, httpStatus: number | null): Promise<boolean>;
  /** Schedules the next attempt, or expires the row when that would be past its deadline. */
  retryLater(id: bigint, error: string, httpStatus: number | null, delayMs: number): Promise<boolean>;
  /** Hands a row back untouched (shutdown): due again at once, for this or another replica. */
  release(id: bigint): Promise<boolean>;
}

/**
 * Plain pg rather than Prisma: every PDF costs a claim and a report back, and Prisma's raw queries
 * take measurably more CPU per statement on this path (`npm run bench:ack-path`).
 */
export function createDownloadQueue(db: Database, workerId: string, leaseSeconds: number): DownloadQueue {
  const pool = poolOf(db);
  const update = async (sql: string, ...params: unknown[]) => ((await pool.query(notifyingFinalStates(sql), params)).rowCount ?? 0) > 0;
  return {
    async claim(limit) {
      const { rows } = await pool.query<Omit<ClaimedDelivery, 'id'> & { id: string }>(CLAIM, [limit, workerId, leaseSeconds]);
      return rows.map((r) => ({ ...r, id: BigInt(r.id) }));
    },
    async expireOverdue() {
      return (await pool.query(notifyingFinalStates(EXPIRE))).rowCount ?? 0;
    },
    markDone: (id, documentId) =>
      update(
        `UPDATE physitrack_deliveries SET download_status = 'done', document_id = $3, downloaded_at = now(),
           last_error = NULL, last_http_status = NULL, locked_by = NULL, locked_until = NULL WHERE ${OWNED}`,
        id,
        workerId,
        documentId,
      ),
    markFailed: (id, error, httpStatus) =>
      update(
        `UPDATE physitrack_deliveries SET download_status = 'failed', last_error = $3, last_http_status = $4,
           locked_by = NULL, locked_until = NULL WHERE ${OWNED}`,
        id,
        workerId,
        error,
        httpStatus,
      ),
    retryLater: (id, error, httpStatus, delayMs) =>
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
        workerId,
        error,
        httpStatus,
        delayMs,
      ),
    release: (id) =>
      update(
        `UPDATE physitrack_deliveries SET download_status = 'pending', next_attempt_at = now(), locked_by = NULL, locked_until = NULL
         WHERE ${OWNED}`,
        id,
        workerId,
      ),
  };
}

/** Exponential backoff with jitter, capped: base·2^(attempt−1), then a random 50–100 % of it. */
export function retryDelayMs(attempt: number, baseMs: number, random = Math.random): number {
  const capped = Math.min(baseMs * 2 ** Math.min(attempt - 1, 30), 30 * 60_000);
  return Math.round(capped * (0.5 + random() * 0.5));
}
