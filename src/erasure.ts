import { createHash } from 'node:crypto';
import type pg from 'pg';
import { inTransaction, type Database } from './db/client.js';
import { notifySql } from './db/notify.js';
import { changesInsertSql, DELETE_CHANGES_OF_PATIENT, DELETE_CHANGES_OF_SOURCE } from './changes/changes-table.js';
import type { Vendor } from './metrics.js';
import { removeFiles, type PurgeResult } from './retention.js';
import {
  DELETE_OWNERS_OF_PATIENT,
  DELETE_OWNERS_OF_SOURCE,
  deleteUnreferencedDocuments,
  LOCK_DOCUMENTS_OF_PATIENT,
  LOCK_DOCUMENTS_OF_SOURCE,
  type DeletedDocument,
} from './storage/document-rows.js';
import { DELETE_SOURCE_SQL } from './sources/sources-table.js';

// Erasure: the one module that knows every table holding data a source delivered. A patient's
// erasure (GDPR Article 17) removes every row holding that patient's data in one source; a source's
// offboarding removes the source and every row it delivered. Each is one transaction, safe to run
// again, and recorded in `erasures` (when, which source, counts, a hash of the patient id: never
// the data) with a NOTIFY. PDF files go after the COMMIT. ERASURE_COVERAGE is held against the
// schema by a test: a new table with a source_id column fails it until it is listed here.

/**
 * Writes and erasures of the same patient (or source) do not interleave: every write statement
 * takes a shared lock per source and per patient it writes (ERASURE_LOCKS_SQL), held until its
 * transaction ends; an erasure takes the patient's (an offboarding the source's) exclusively before
 * it reads anything. A write that committed before is erased; one that commits after stores the
 * vendor's data anew; none lands half in between (an event without its patient, a delivery whose
 * program was erased). Advisory locks: a key per vendor, source and patient, in PostgreSQL's memory.
 */
const sourceLockKey = (vendor: string, source: string) => `hashtextextended('erasure/' || ${vendor} || '/' || ${source}, 0)`;
const patientLockKey = (vendor: string, source: string, patient: string) => `hashtextextended('erasure/' || ${vendor} || '/' || ${source} || '/' || ${patient}, 0)`;

/**
 * For a write statement: the body of a CTE, `locks AS MATERIALIZED (...)`, that takes the shared
 * locks of `rows` (an SQL source of rows with source_id and patient_id) and yields one row. Every
 * part of the statement that writes must read `locks` (CROSS JOIN locks) before its first row: the
 * locks are then taken before any row lock, and an erasure waiting for them cannot be waiting for
 * a row this statement holds (a deadlock).
 */
export function erasureLocksSql(vendor: 'patiro' | 'physitrack', rows: string): string {
  const v = `'${vendor}'`;
  return `SELECT count(*) AS taken FROM (
    SELECT pg_advisory_xact_lock_shared(k) FROM (
      SELECT DISTINCT unnest(ARRAY[${sourceLockKey(v, 'r.source_id')}, ${patientLockKey(v, 'r.source_id', "COALESCE(r.patient_id, '')")}]) AS k FROM (${rows}) r
    ) keys
  ) locked`;
}

/** What each table with a source_id column is to an erasure of a patient, and of a source. */
export const ERASURE_COVERAGE: Record<string, { patient: 'erased' | string; source: 'erased' | string }> = {
  patiro_events: { patient: 'erased', source: 'erased' },
  patiro_patients: { patient: 'erased', source: 'erased' },
  physitrack_deliveries: { patient: 'erased', source: 'erased' },
  physitrack_programs: { patient: 'erased', source: 'erased' },
  webhook_audit: { patient: 'kept: no patient data (ids, status, body hash, sender address)', source: 'erased' },
  source_failures: { patient: 'kept: no patient data (time, reason, hint)', source: 'erased' },
  sources: { patient: 'kept: the source itself', source: 'erased' },
  erasures: { patient: 'kept: the record of erasures, which holds no patient data', source: 'kept: the record of erasures, which holds no patient data' },
  document_owners: { patient: 'erased, and the PDFs nobody else owns with them', source: 'erased, and the PDFs nobody else owns with them' },
  changes: {
    patient: "erased: the changes keyed by the patient's id; the others name event, delivery and program ids, which name nothing once the rows are gone",
    source: 'erased, but for the change that tells the feed of the offboarding',
  },
};

export type ErasureCounts = Record<string, number>;

export interface ErasureResult {
  dryRun: boolean;
  counts: ErasureCounts;
  files: PurgeResult['files'];
  /** The `erasures` row, when something was erased. */
  erasureId: string | null;
}

/** Not reversible without the id and its source; a patient id space may be small, so say only this much. */
export const patientHashOf = (vendor: Vendor, sourceId: string, patientId: string) =>
  createHash('sha256').update(`${vendor}\u0000${sourceId}\u0000${patientId}`).digest('hex');

/**
 * Events stored before patient_id was written with them, found by their data as the writer takes
 * it (a string or a number; an object's text is no patient id), through an index of those rows
 * alone (patiro_events_old_patient_idx). Apart from the delete by patient_id: in one OR the
 * planner would scan every event of the source.
 */
export const OLD_PATIRO_EVENTS_OF_PATIENT = `source_id = $1 AND patient_id IS NULL AND event_type IN ('PatientRevealed', 'PatientUpdated')
  AND jsonb_typeof(data->'id') IN ('string', 'number') AND md5(data->>'id') = md5($2) AND data->>'id' = $2`;

/** The deletes of one erasure, in order, each with its parameters; documents go last (see below). */
interface Step {
  table: string;
  sql: string;
  params: unknown[];
  /** Takes locks, deletes nothing: not in the counts. */
  uncounted?: true;
}

function patientSteps(vendor: Vendor, sourceId: string, patientId: string): Step[] {
  if (vendor === 'patiro') {
    return [
      { table: 'patiro_events', sql: 'DELETE FROM patiro_events WHERE source_id = $1 AND patient_id = $2 RETURNING NULL::bigint AS document_id', params: [sourceId, patientId] },
      { table: 'patiro_events', sql: `DELETE FROM patiro_events WHERE ${OLD_PATIRO_EVENTS_OF_PATIENT} RETURNING NULL::bigint AS document_id`, params: [sourceId, patientId] },
      { table: 'patiro_patients', sql: 'DELETE FROM patiro_patients WHERE source_id = $1 AND patient_id = $2 RETURNING NULL::bigint AS document_id', params: [sourceId, patientId] },
    ];
  }
  return [
    { table: 'physitrack_deliveries', sql: 'DELETE FROM physitrack_deliveries WHERE source_id = $1 AND patient_id = $2 RETURNING document_id', params: [sourceId, patientId] },
    { table: 'physitrack_programs', sql: 'DELETE FROM physitrack_programs WHERE source_id = $1 AND patient_id = $2 RETURNING current_document_id AS document_id', params: [sourceId, patientId] },
    // After the deliveries: a download that gave one its PDF and committed meanwhile has its owner row by now.
    { table: 'documents', sql: LOCK_DOCUMENTS_OF_PATIENT, params: [sourceId, patientId], uncounted: true },
    { table: 'document_owners', sql: DELETE_OWNERS_OF_PATIENT, params: [sourceId, patientId] },
  ];
}

function sourceSteps(vendor: Vendor, sourceId: string): Step[] {
  // The source's row first: its row lock holds off a `sources enable` (and any change to it) until COMMIT.
  const source: Step = { table: 'sources', sql: DELETE_SOURCE_SQL, params: [vendor, sourceId] };
  const own: Step[] =
    vendor === 'patiro'
      ? [
          { table: 'patiro_events', sql: 'DELETE FROM patiro_events WHERE source_id = $1 RETURNING NULL::bigint AS document_id', params: [sourceId] },
          { table: 'patiro_patients', sql: 'DELETE FROM patiro_patients WHERE source_id = $1 RETURNING NULL::bigint AS document_id', params: [sourceId] },
        ]
      : [
          { table: 'physitrack_deliveries', sql: 'DELETE FROM physitrack_deliveries WHERE source_id = $1 RETURNING document_id', params: [sourceId] },
          { table: 'physitrack_programs', sql: 'DELETE FROM physitrack_programs WHERE source_id = $1 RETURNING current_document_id AS document_id', params: [sourceId] },
          { table: 'documents', sql: LOCK_DOCUMENTS_OF_SOURCE, params: [sourceId], uncounted: true },
          { table: 'document_owners', sql: DELETE_OWNERS_OF_SOURCE, params: [sourceId] },
        ];
  return [
    source,
    ...own,
    { table: 'webhook_audit', sql: 'DELETE FROM webhook_audit WHERE vendor = $1 AND source_id = $2 RETURNING NULL::bigint AS document_id', params: [vendor, sourceId] },
    { table: 'source_failures', sql: 'DELETE FROM source_failures WHERE vendor = $1 AND source_id = $2 RETURNING NULL::bigint AS document_id', params: [vendor, sourceId] },
    { table: 'changes', sql: `${DELETE_CHANGES_OF_SOURCE} RETURNING NULL::bigint AS document_id`, params: [vendor, sourceId] },
  ];
}

/** The erasure's record, its NOTIFY, and its change: a PMS following the feed erases its copies too. */
const RECORD = `WITH recorded AS (
  INSERT INTO erasures (scope, vendor, source_id, patient_hash, counts) VALUES ($1, $2, $3, $4, $5::jsonb)
  RETURNING id, vendor, source_id, scope
), change AS (
  ${changesInsertSql("SELECT vendor, source_id, 'erasures', id::text FROM recorded")}
), notified AS (
  SELECT ${notifySql({ vendor: 'vendor', table: "'erasures'", id: 'id::text', source: 'source_id', scope: 'scope' })} FROM recorded
)
SELECT id::text AS id FROM recorded, (SELECT count(*) FROM notified) AS n`;

interface Run {
  steps: Step[];
  /** Offboarding without --erase-data: refuse, under the lock, when the source delivered anything. */
  refuseIfData?: boolean;
  /** Offboarding with --erase-data: refuse while the source is active (checked on its locked row). */
  requireDisabled?: boolean;
  /** The patient of a patient's erasure; undefined for a source's. */
  patientId?: string;
  record: { scope: 'patient' | 'source'; vendor: Vendor; sourceId: string; patientHash: string | null };
}

async function erase(db: Database, pdfDir: string, run: Run, dryRun: boolean): Promise<ErasureResult> {
  const files: PurgeResult['files'] = { removed: 0, missing: 0, refused: 0 };
  let documents: DeletedDocument[] = [];
  const outcome = await inTransaction(db, async (client) => {
    const { vendor, sourceId } = run.record;
    // Waits for the writes of this patient (or source) in flight, and holds off new ones until COMMIT.
    // A patient's erasure holds its source's lock shared, as writes do: an offboarding of that
    // source waits for it, instead of deleting the same rows alongside.
    if (run.patientId === undefined) {
      await client.query(`SELECT pg_advisory_xact_lock(${sourceLockKey('$1', '$2')})`, [vendor, sourceId]);
    } else {
      await client.query(`SELECT pg_advisory_xact_lock_shared(${sourceLockKey('$1', '$2')})`, [vendor, sourceId]);
      await client.query(`SELECT pg_advisory_xact_lock(${patientLockKey('$1', '$2', '$3')})`, [vendor, sourceId, run.patientId]);
    }
    // Checked under the lock: no delivery can commit between the check and the delete.
    if (run.refuseIfData) {
      const held = Object.entries(await sourceDataCounts(client, vendor, sourceId)).filter(([, n]) => n > 0);
      if (held.length > 0) throw new SourceHasDataError(Object.fromEntries(held));
    }
    const counts: ErasureCounts = {};
    const documentIds = new Set<string>();
    for (const step of run.steps) {
      const { rows, rowCount } = await client.query<{ document_id?: string | null; status?: string }>(step.sql, step.params);
      if (!step.uncounted) counts[step.table] = (counts[step.table] ?? 0) + (rowCount ?? 0);
      if (step.table === 'sources' && run.requireDisabled && rows[0]?.status === 'active') throw new SourceActiveError();
      for (const row of rows) if (row.document_id) documentIds.add(String(row.document_id));
    }
    // A Patiro patient's: the feed's changes keyed by the patient's id.
    if (run.patientId !== undefined && vendor === 'patiro') {
      const { rowCount } = await client.query(DELETE_CHANGES_OF_PATIENT, [sourceId, run.patientId]);
      counts.changes = rowCount ?? 0;
    }
    // After the deliveries and programs are deleted, so they no longer count as references. The
    // same PDF (stored once, by sha256) may belong to another patient's or clinic's delivery: then it stays.
    if (documentIds.size > 0 || run.record.vendor === 'physitrack') {
      documents = await deleteUnreferencedDocuments(client, [...documentIds]);
      counts.documents = documents.length;
    }
    // A dry run counts inside the transaction and rolls it back: the counts are exactly what it would remove.
    if (dryRun) throw new DryRun(counts);
    if (!Object.values(counts).some((n) => n > 0)) return { counts, erasureId: null };
    const { record } = run;
    const { rows } = await client.query<{ id: string }>(RECORD, [record.scope, record.vendor, record.sourceId, record.patientHash, JSON.stringify(counts)]);
    return { counts, erasureId: rows[0]!.id };
  }).catch((err: unknown) => {
    if (err instanceof DryRun) return { counts: err.counts, erasureId: null };
    throw err;
  });
  if (!dryRun) await removeFiles(db, pdfDir, documents, files);
  return { dryRun, counts: outcome.counts, files, erasureId: outcome.erasureId };
}

class DryRun extends Error {
  constructor(readonly counts: ErasureCounts) {
    super('dry run');
  }
}

export interface PatientErasureInput {
  vendor: Vendor;
  sourceId: string;
  patientId: string;
  dryRun: boolean;
}

/**
 * Removes the patient's rows in that source, for that vendor: Patiro's patient row and events, or
 * Physitrack's deliveries, programs and the documents nobody else's delivery points at (also those
 * of deliveries retention purged since, found through document_owners). A delivery
 * that commits afterwards (the vendor sending again, a spool replayed) stores the vendor's data anew.
 */
export function erasePatient(db: Database, pdfDir: string, { vendor, sourceId, patientId, dryRun }: PatientErasureInput): Promise<ErasureResult> {
  const run: Run = { steps: patientSteps(vendor, sourceId, patientId), patientId, record: { scope: 'patient', vendor, sourceId, patientHash: patientHashOf(vendor, sourceId, patientId) } };
  return erase(db, pdfDir, run, dryRun);
}

/** The source delivered data; an offboarding without --erase-data keeps it (the counts say what). */
export class SourceHasDataError extends Error {
  override readonly name = 'SourceHasDataError';
  constructor(readonly counts: ErasureCounts) {
    super(`the source has data (${Object.entries(counts).map(([table, n]) => `${table}: ${n}`).join(', ')})`);
  }
}

/**
 * Erasing what a source delivered while it is still active would leave the deliveries that commit
 * after it (the vendor still sending, a replica's spool, the 2 s before every replica hears of the
 * deletion) under a source id that no longer exists, and no one to erase them.
 */
export class SourceActiveError extends Error {
  override readonly name = 'SourceActiveError';
  constructor() {
    super('the source is active');
  }
}

/**
 * Offboarding: the source itself and every row it delivered; its URL then answers 404. With
 * `keepData` (no --erase-data) it refuses with SourceHasDataError when the source delivered anything;
 * without, with SourceActiveError unless the source was disabled first (a dry run only counts).
 */
export function eraseSource(db: Database, pdfDir: string, { vendor, sourceId, dryRun, keepData = false }: { vendor: Vendor; sourceId: string; dryRun: boolean; keepData?: boolean }): Promise<ErasureResult> {
  const run: Run = { steps: sourceSteps(vendor, sourceId), refuseIfData: keepData, requireDisabled: !keepData && !dryRun, record: { scope: 'source', vendor, sourceId, patientHash: null } };
  return erase(db, pdfDir, run, dryRun);
}

/** What a source delivered, per table. */
async function sourceDataCounts(client: pg.PoolClient, vendor: Vendor, sourceId: string): Promise<ErasureCounts> {
  const tables = vendor === 'patiro' ? ['patiro_events', 'patiro_patients'] : ['physitrack_deliveries', 'physitrack_programs', 'document_owners'];
  const counts: ErasureCounts = {};
  for (const table of tables) {
    const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE source_id = $1`, [sourceId]);
    counts[table] = rows[0]!.n;
  }
  const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM webhook_audit WHERE vendor = $1 AND source_id = $2', [vendor, sourceId]);
  counts.webhook_audit = rows[0]!.n;
  return counts;
}
