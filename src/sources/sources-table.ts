import type { Database } from '../db/client.js';
import type { Vendor } from '../metrics.js';
import type { Fingerprint } from './credentials.js';

// This module owns the `sources` table: every statement that reads or writes it. Each change to a
// source tells every replica on the control channel, in the same statement, so that it reloads.

/** Not the PMS's channel: replicas listen here for source changes made by the CLI. */
export const SOURCES_CHANNEL = 'webhook_receiver_sources';

export type SourceStatus = 'active' | 'disabled';

export interface SourceRow {
  vendor: Vendor;
  id: string;
  name: string;
  tenantRef: string | null;
  status: SourceStatus;
  /** Sealed credentials; null for `default`. */
  credentials: string | null;
  credentialFingerprints: Fingerprint[];
  createdAt: Date;
  updatedAt: Date;
  lastSuccessAt: Date | null;
  lastFailureAt: Date | null;
  lastFailureReason: string | null;
  failuresSinceSuccess: number;
}

const COLUMNS = `vendor, id, name, tenant_ref AS "tenantRef", status, credentials, credential_fingerprints AS "credentialFingerprints",
  created_at AS "createdAt", updated_at AS "updatedAt", last_success_at AS "lastSuccessAt", last_failure_at AS "lastFailureAt",
  last_failure_reason AS "lastFailureReason", failures_since_success AS "failuresSinceSuccess"`;

/** Runs a change and, in the same statement (so only once it commits), tells the replicas. */
function notifyingReplicas(change: string): string {
  return `WITH changed AS (${change} RETURNING ${COLUMNS}), told AS (
  SELECT pg_notify('${SOURCES_CHANNEL}', json_build_object('vendor', vendor, 'id', id)::text) FROM changed
)
SELECT changed.* FROM changed, (SELECT count(*) FROM told) AS n`;
}

export async function readAllSources(db: Database): Promise<SourceRow[]> {
  return db.$queryRawUnsafe<SourceRow[]>(`SELECT ${COLUMNS} FROM sources ORDER BY created_at, vendor, id`);
}

export async function listSources(db: Database, vendor?: Vendor): Promise<SourceRow[]> {
  if (vendor === undefined) return readAllSources(db);
  return db.$queryRawUnsafe<SourceRow[]>(`SELECT ${COLUMNS} FROM sources WHERE vendor = $1 ORDER BY created_at, id`, vendor);
}

/** One row, or for `default` one per vendor. */
export async function findSources(db: Database, id: string): Promise<SourceRow[]> {
  return db.$queryRawUnsafe<SourceRow[]>(`SELECT ${COLUMNS} FROM sources WHERE id = $1 ORDER BY vendor`, id);
}

/** The ids of the keys that sealed the credentials in the table (see sealed.ts for the format). */
export async function sealingKeyIds(db: Database): Promise<string[]> {
  const rows = await db.$queryRawUnsafe<{ keyId: string }[]>(
    `SELECT DISTINCT split_part(credentials, '.', 2) AS "keyId" FROM sources WHERE credentials IS NOT NULL ORDER BY 1`,
  );
  return rows.map((r) => r.keyId);
}

export interface NewSource {
  vendor: Vendor;
  id: string;
  name: string;
  tenantRef: string | null;
  credentials: string;
  fingerprints: Fingerprint[];
}

export async function insertSource(db: Database, source: NewSource): Promise<SourceRow> {
  const [row] = await db.$queryRawUnsafe<SourceRow[]>(
    notifyingReplicas(`INSERT INTO sources AS s (vendor, id, name, tenant_ref, credentials, credential_fingerprints)
      VALUES ($1, $2, $3, $4, $5, $6::jsonb)`),
    source.vendor,
    source.id,
    source.name,
    source.tenantRef,
    source.credentials,
    JSON.stringify(source.fingerprints),
  );
  return row!;
}

/**
 * Replaces a source's credentials, but only if they are still the ones the caller read: two
 * rotations at once must not lose one's secret. Resolves undefined when they changed meanwhile.
 */
export async function replaceCredentials(db: Database, id: string, expected: string, sealed: string, fingerprints: Fingerprint[]): Promise<SourceRow | undefined> {
  const [row] = await db.$queryRawUnsafe<SourceRow[]>(
    notifyingReplicas(`UPDATE sources s SET credentials = $3, credential_fingerprints = $4::jsonb, updated_at = now()
      WHERE id = $1 AND credentials = $2`),
    id,
    expected,
    sealed,
    JSON.stringify(fingerprints),
  );
  return row;
}

/** Sets a database source's status; `default` is configured by the environment, not here. */
export async function setSourceStatus(db: Database, id: string, status: SourceStatus): Promise<SourceRow | undefined> {
  const [row] = await db.$queryRawUnsafe<SourceRow[]>(
    notifyingReplicas(`UPDATE sources s SET status = $2, updated_at = CASE WHEN s.status = $2 THEN s.updated_at ELSE now() END
      WHERE id = $1 AND credentials IS NOT NULL`),
    id,
    status,
  );
  return row;
}

/**
 * The environment's source gets one row per vendor, for its status and health only: `active`
 * while the environment configures it, else `disabled`. No credentials are ever stored for it.
 */
export async function recordDefaultSources(db: Database, configured: Record<Vendor, boolean>): Promise<void> {
  await db.$executeRawUnsafe(
    `INSERT INTO sources AS s (vendor, id, name, status)
     SELECT vendor, 'default', 'default (environment variables)', CASE WHEN configured THEN 'active' ELSE 'disabled' END
     FROM jsonb_to_recordset($1::jsonb) AS t(vendor text, configured boolean)
     ON CONFLICT (vendor, id) DO UPDATE SET status = EXCLUDED.status, updated_at = now() WHERE s.status <> EXCLUDED.status`,
    JSON.stringify(Object.entries(configured).map(([vendor, isConfigured]) => ({ vendor, configured: isConfigured }))),
  );
}

/** How many of a source's failures `sources show` lists. */
export const RECENT_FAILURES = 10;

export interface RecentFailure {
  at: Date;
  reason: string;
  hint: string | null;
}

/** A source's latest failures, newest first. */
export async function recentFailures(db: Database, vendor: Vendor, id: string): Promise<RecentFailure[]> {
  return db.$queryRawUnsafe<RecentFailure[]>(
    `SELECT at, reason, hint FROM source_failures WHERE vendor = $1 AND source_id = $2 ORDER BY at DESC, id DESC LIMIT ${RECENT_FAILURES}`,
    vendor,
    id,
  );
}

/**
 * Per vendor, the sources whose latest delivery failed (no success since), as one JSON array of
 * {vendor, n}: a subquery for the metrics' one query of the database's figures.
 */
export const FAILING_SOURCES_SQL = `SELECT json_agg(json_build_object('vendor', vendor, 'n', n)) FROM (
  SELECT vendor, count(*) FILTER (WHERE last_failure_at IS NOT NULL AND (last_success_at IS NULL OR last_failure_at > last_success_at))::int AS n
  FROM sources GROUP BY vendor) f`;

export interface HealthUpdate {
  vendor: Vendor;
  id: string;
  lastSuccessAt: string | null;
  lastFailureAt: string | null;
  lastFailureReason: string | null;
  /** Failures after the last success of this update, or all of its failures if it saw none. */
  failures: number;
  sawSuccess: boolean;
}

/**
 * One statement for every source with news since the last flush. Replicas flush independently,
 * so times only move forward and failure counts add up; a success resets the count.
 */
export async function recordHealth(db: Database, updates: HealthUpdate[]): Promise<void> {
  await db.$executeRawUnsafe(
    `WITH t AS (
       SELECT * FROM jsonb_to_recordset($1::jsonb) AS t(vendor text, id text, last_success_at timestamptz, last_failure_at timestamptz,
                                                     last_failure_reason text, failures int, saw_success boolean)
     ), updated AS (
     UPDATE sources s SET
       last_success_at        = GREATEST(s.last_success_at, t.last_success_at),
       last_failure_reason    = CASE WHEN t.last_failure_at >= s.last_failure_at OR s.last_failure_at IS NULL
                                     THEN COALESCE(t.last_failure_reason, s.last_failure_reason) ELSE s.last_failure_reason END,
       last_failure_at        = GREATEST(s.last_failure_at, t.last_failure_at),
       failures_since_success = CASE WHEN t.saw_success THEN t.failures ELSE s.failures_since_success + t.failures END
     FROM t
     WHERE s.vendor = t.vendor AND s.id = t.id
     RETURNING s.vendor, s.id
     ), failure AS (
       -- The last failure of each flush joins the source's recent failures ("reason: hint" split back).
       INSERT INTO source_failures (vendor, source_id, at, reason, hint)
       SELECT t.vendor, t.id, t.last_failure_at, split_part(t.last_failure_reason, ': ', 1),
              NULLIF(substr(t.last_failure_reason, length(split_part(t.last_failure_reason, ': ', 1)) + 3), '')
       FROM t JOIN updated u ON u.vendor = t.vendor AND u.id = t.id WHERE t.last_failure_at IS NOT NULL
       RETURNING vendor, source_id
     )
     -- Kept bounded: the ${RECENT_FAILURES} newest per source (and the one this statement adds).
     DELETE FROM source_failures f
     WHERE (f.vendor, f.source_id) IN (SELECT vendor, source_id FROM failure)
       AND f.id NOT IN (SELECT g.id FROM source_failures g WHERE g.vendor = f.vendor AND g.source_id = f.source_id ORDER BY g.at DESC, g.id DESC LIMIT ${RECENT_FAILURES - 1})`,
    JSON.stringify(
      updates.map((u) => ({
        vendor: u.vendor,
        id: u.id,
        last_success_at: u.lastSuccessAt,
        last_failure_at: u.lastFailureAt,
        last_failure_reason: u.lastFailureReason,
        failures: u.failures,
        saw_success: u.sawSuccess,
      })),
    ),
  );
}

/** A table source's name and tenant; `default` is configured by the environment, not here. */
export async function updateSource(db: Database, id: string, changes: { name?: string; tenantRef?: string | null }): Promise<SourceRow | undefined> {
  const [row] = await db.$queryRawUnsafe<SourceRow[]>(
    notifyingReplicas(`UPDATE sources s SET name = COALESCE($2, s.name), tenant_ref = CASE WHEN $4 THEN $3 ELSE s.tenant_ref END, updated_at = now()
      WHERE id = $1 AND credentials IS NOT NULL`),
    id,
    changes.name ?? null,
    changes.tenantRef ?? null,
    changes.tenantRef !== undefined,
  );
  return row;
}

/**
 * Removes a table source, telling the replicas (its URL then answers 404). For the erasure module's
 * transaction: $1 vendor, $2 id. `default` has no credentials and is never removed here.
 */
export const DELETE_SOURCE_SQL = notifyingReplicas(`DELETE FROM sources s WHERE vendor = $1 AND id = $2 AND credentials IS NOT NULL`);
