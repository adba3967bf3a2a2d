import type { Database } from '../db/client.js';
import { notifySql } from '../db/notify.js';

// This module owns physitrack_programs: one row per program of a patient, across its versions.
// Physitrack sends no program id. Its key is (source, patient, physitrack_program_key(...)): the
// creation time (date_iso), or, when that is unreadable, the calendar date and the name. The SQL
// function is defined by the migration, so the service and the migration share one definition.

/**
 * CTEs for the delivery insert (downloads/intake.ts), from its `input` CTE (source_id, notice_key,
 * patient_id, program_key, practitioner_token, program_created_at, program_date, program_name, id, ord):
 * `keyed` is the input with the program and the earlier delivery of each notice, if any, and
 * `program` maps each key to its program id, creating the programs not seen before. A new
 * program's versions and latest delivery are its deliveries in this batch. A program created by
 * another transaction meanwhile is in neither list: its deliveries get no program id, the
 * statement fails on program_id's NOT NULL, and insertDeliveries runs it again (it is found then).
 */
export const PROGRAM_CTES = `
keyed AS (
  -- Per-row lookups on purpose: planned as joins against an estimate of 100 input rows, a young
  -- table was scanned whole (a hash join), at a cost that grows with every row stored. Index
  -- lookups whatever the statistics: intake.ts plans the statement without sequential scans.
  SELECT i.*,
    (SELECT p.id FROM physitrack_programs p
     WHERE p.source_id = i.source_id AND p.patient_id = i.patient_id AND p.program_key = i.program_key) AS known_program_id,
    (SELECT e.program_id FROM physitrack_deliveries e WHERE e.source_id = i.source_id AND e.notice_key = i.notice_key) AS notice_program_id
  FROM input i
), known AS (
  SELECT DISTINCT known_program_id AS program_id, source_id, patient_id, program_key FROM keyed WHERE known_program_id IS NOT NULL
), created AS (
  INSERT INTO physitrack_programs AS p (source_id, patient_id, program_key, practitioner_token, program_created_at, program_date,
                                        program_name, versions, latest_delivery_id)
  SELECT DISTINCT ON (source_id, patient_id, program_key) source_id, patient_id, program_key, practitioner_token, program_created_at,
         program_date, program_name, count(*) OVER keyed, max(id) OVER keyed
  FROM keyed i
  -- A notice seen before keeps its delivery's program, whatever its fields say now.
  WHERE known_program_id IS NULL AND notice_program_id IS NULL
  WINDOW keyed AS (PARTITION BY source_id, patient_id, program_key)
  ORDER BY source_id, patient_id, program_key, ord DESC
  ON CONFLICT (source_id, patient_id, program_key) DO NOTHING
  RETURNING p.id AS program_id, p.source_id, p.patient_id, p.program_key
), program AS (
  SELECT * FROM known UNION ALL SELECT * FROM created
)`;

/**
 * After the delivery insert (CTE `delivery`, RETURNING id, program_id, inserted and the notice's
 * token and name): programs seen before gain a version per new delivery, and their latest token,
 * name and delivery. A repeated notice is no new version.
 */
export const BUMP_PROGRAMS_CTE = `
bump AS (
  UPDATE physitrack_programs p SET
    versions           = p.versions + b.n,
    latest_delivery_id = GREATEST(p.latest_delivery_id, b.latest),
    practitioner_token = CASE WHEN b.latest > p.latest_delivery_id THEN b.token ELSE p.practitioner_token END,
    program_name       = CASE WHEN b.latest > p.latest_delivery_id THEN b.name ELSE p.program_name END,
    updated_at         = now()
  FROM (SELECT program_id, count(*) AS n, max(id) AS latest,
               (array_agg(practitioner_token ORDER BY id DESC))[1] AS token, (array_agg(program_name ORDER BY id DESC))[1] AS name
        FROM delivery WHERE inserted AND program_id IN (SELECT program_id FROM known) GROUP BY program_id) b
  -- Found by primary key from a list, never by joining the table: a join may scan all of it.
  WHERE p.id = ANY (ARRAY(SELECT program_id FROM known)) AND p.id = b.program_id
)`;

/**
 * For the statement that marks a delivery done (CTE `changed`, RETURNING id, program_id,
 * document_id): the program's current document becomes this one's, unless a newer version
 * (a higher delivery id: received later) is already current. Downloads may finish out of order.
 * A PMS listening is told when the current document changes.
 */
export const CURRENT_DOCUMENT_CTES = `
before AS (
  SELECT p.id, p.current_document_id FROM physitrack_programs p JOIN changed c ON p.id = c.program_id
), current AS (
  UPDATE physitrack_programs p SET current_document_id = c.document_id, current_delivery_id = c.id, updated_at = now()
  FROM changed c
  WHERE p.id = c.program_id AND (p.current_delivery_id IS NULL OR p.current_delivery_id < c.id)
  RETURNING p.id, p.source_id, p.current_document_id
), program_notified AS (
  SELECT ${notifySql({ vendor: "'physitrack'", table: "'physitrack_programs'", id: 'current.id::text', source: 'current.source_id', currentDocumentId: 'current.current_document_id::text' })}
  FROM current JOIN before USING (id) WHERE before.current_document_id IS DISTINCT FROM current.current_document_id
)`;

export interface ProgramRow {
  id: string;
  sourceId: string;
  patientId: string;
  practitionerToken: string;
  programCreatedAt: Date | null;
  programDate: string | null;
  programName: string;
  versions: number;
  latestDeliveryId: string;
  currentDocumentId: string | null;
  currentDeliveryId: string | null;
  currentDocumentSha256: string | null;
  firstNoticeAt: Date;
  updatedAt: Date;
}

const PROGRAM_COLUMNS = `p.id::text AS id, p.source_id AS "sourceId", p.patient_id AS "patientId", p.practitioner_token AS "practitionerToken",
  p.program_created_at AS "programCreatedAt", p.program_date::text AS "programDate", p.program_name AS "programName", p.versions,
  p.latest_delivery_id::text AS "latestDeliveryId", p.current_document_id::text AS "currentDocumentId",
  p.current_delivery_id::text AS "currentDeliveryId", doc.sha256 AS "currentDocumentSha256",
  p.first_notice_at AS "firstNoticeAt", p.updated_at AS "updatedAt"
FROM physitrack_programs p LEFT JOIN documents doc ON doc.id = p.current_document_id`;

export async function listPrograms(db: Database, filter: { patientId?: string; sourceId?: string; limit: number }): Promise<ProgramRow[]> {
  return db.$queryRawUnsafe<ProgramRow[]>(
    `SELECT ${PROGRAM_COLUMNS}
     WHERE ($1::text IS NULL OR p.patient_id = $1) AND ($2::text IS NULL OR p.source_id = $2)
     ORDER BY p.updated_at DESC, p.id DESC LIMIT $3`,
    filter.patientId ?? null,
    filter.sourceId ?? null,
    filter.limit,
  );
}

export async function findProgram(db: Database, id: bigint): Promise<ProgramRow | undefined> {
  const [row] = await db.$queryRawUnsafe<ProgramRow[]>(`SELECT ${PROGRAM_COLUMNS} WHERE p.id = $1`, id);
  return row;
}
