import type { Database } from '../db/client.js';
import { notifySql } from '../db/notify.js';

// This module owns physitrack_programs: one row per program of a patient, across its versions.
// Physitrack sends no program id. Its key is (source, patient, physitrack_program_key(...)): the
// creation time (date_iso), or, when that is unreadable, the calendar date and the name. The SQL
// function is defined by the migration, so the service and the migration share one definition.

/**
 * CTEs for the delivery insert (downloads/intake.ts), from its `input` CTE (source_id, notice_key,
 * patient_id, program_key, practitioner_token, program_created_at, program_date, program_name, id,
 * first_at: the notice's receive time):
 * `keyed` is the input with the program and the earlier delivery of each notice, if any, and
 * `program` maps each key to its program id, creating the programs not seen before. A new
 * program's versions and latest delivery are its deliveries in this batch. Versions are ordered by
 * receive time, then id: a notice kept in a replica's spool during an outage and written after a
 * later one is still the older version. A program created by
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
                                        program_name, versions, latest_delivery_id, first_notice_at)
  SELECT DISTINCT ON (source_id, patient_id, program_key) source_id, patient_id, program_key, practitioner_token, program_created_at,
         program_date, program_name, count(*) OVER keyed, id, min(first_at) OVER keyed
  FROM keyed i
  -- A notice seen before keeps its delivery's program, whatever its fields say now.
  WHERE known_program_id IS NULL AND notice_program_id IS NULL
  WINDOW keyed AS (PARTITION BY source_id, patient_id, program_key)
  ORDER BY source_id, patient_id, program_key, first_at DESC, id DESC
  ON CONFLICT (source_id, patient_id, program_key) DO NOTHING
  RETURNING p.id AS program_id, p.source_id, p.patient_id, p.program_key
), program AS (
  SELECT * FROM known UNION ALL SELECT * FROM created
)`;

/**
 * After the delivery insert (CTE `delivery`, RETURNING id, program_id, inserted, received_at and the
 * delivery's token, name, date, download_status and document_id): each program that existed before
 * the statement and has a delivery in it gains a version per new delivery, and its latest version
 * (token, name, date) is chosen again among all its deliveries, with this statement's receive times:
 * a notice replayed from a spool can move an earlier delivery's receive time back, and with it the
 * order of versions. When that delivery was the current one, the current document is chosen again
 * too (and a listening PMS told). Versions and the first notice time only add up, so retention
 * purging old deliveries does not take them back. The statement must read `bump_notified`.
 */
export const BUMP_PROGRAMS_CTE = `
touched AS (
  SELECT DISTINCT program_id FROM delivery WHERE program_id NOT IN (SELECT program_id FROM created)
), candidate AS (
  -- Every delivery of those programs, from the table (by program_id, indexed) and, for the ones this
  -- statement wrote, as it wrote them.
  SELECT d.program_id, d.id, d.received_at, d.practitioner_token, d.program_name, d.program_date, d.download_status, d.document_id
  FROM physitrack_deliveries d
  WHERE d.program_id = ANY (ARRAY(SELECT program_id FROM touched)) AND d.id <> ALL (ARRAY(SELECT id FROM delivery))
  UNION ALL
  SELECT program_id, id, received_at, practitioner_token, program_name, program_date, download_status, document_id
  FROM delivery WHERE program_id IN (SELECT program_id FROM touched)
), ranked AS (
  SELECT program_id,
         (array_agg(id ORDER BY received_at DESC, id DESC))[1] AS latest,
         (array_agg(practitioner_token ORDER BY received_at DESC, id DESC))[1] AS token,
         (array_agg(program_name ORDER BY received_at DESC, id DESC))[1] AS name,
         (array_agg(program_date ORDER BY received_at DESC, id DESC))[1] AS program_date,
         (array_agg(id ORDER BY received_at DESC, id DESC) FILTER (WHERE download_status = 'done' AND document_id IS NOT NULL))[1] AS done_delivery,
         (array_agg(document_id ORDER BY received_at DESC, id DESC) FILTER (WHERE download_status = 'done' AND document_id IS NOT NULL))[1] AS done_document
  FROM candidate GROUP BY program_id
), added AS (
  SELECT program_id, count(*) FILTER (WHERE inserted) AS n, min(received_at) AS first_at FROM delivery
  WHERE program_id IN (SELECT program_id FROM touched) GROUP BY program_id
), bump AS (
  UPDATE physitrack_programs p SET
    versions            = p.versions + a.n,
    first_notice_at     = LEAST(p.first_notice_at, a.first_at),
    latest_delivery_id  = r.latest,
    practitioner_token  = r.token,
    program_name        = r.name,
    program_date        = r.program_date,
    -- The current delivery's receive time may have moved back: choose among the downloaded again.
    current_delivery_id = CASE WHEN p.current_delivery_id IN (SELECT id FROM delivery) THEN r.done_delivery ELSE p.current_delivery_id END,
    current_document_id = CASE WHEN p.current_delivery_id IN (SELECT id FROM delivery) THEN r.done_document ELSE p.current_document_id END,
    updated_at          = now()
  FROM ranked r JOIN added a USING (program_id)
  -- Found by primary key from a list, never by joining the table: a join may scan all of it.
  WHERE p.id = ANY (ARRAY(SELECT program_id FROM touched)) AND p.id = r.program_id
  RETURNING p.id, p.source_id, p.current_document_id
), bump_notified AS (
  -- The statement's other parts see the table as it was: this is the current document before.
  SELECT ${notifySql({ vendor: "'physitrack'", table: "'physitrack_programs'", id: 'b.id::text', source: 'b.source_id', currentDocumentId: 'b.current_document_id::text' })}
  FROM bump b WHERE b.current_document_id IS DISTINCT FROM (SELECT current_document_id FROM physitrack_programs WHERE id = b.id)
)`;

/**
 * For the statement that marks a delivery done (CTE `changed`, RETURNING id, program_id,
 * document_id, received_at): the program's current document becomes this one's, unless a newer
 * version (received later; among equal times, a higher delivery id) is already current. Downloads
 * may finish out of order, and a notice kept in a spool may be written after a later one.
 * A PMS listening is told when the current document changes.
 */
export const CURRENT_DOCUMENT_CTES = `
before AS (
  SELECT p.id, p.current_document_id FROM physitrack_programs p JOIN changed c ON p.id = c.program_id
), current AS (
  UPDATE physitrack_programs p SET current_document_id = c.document_id, current_delivery_id = c.id, updated_at = now()
  FROM changed c
  -- A current delivery purged by retention compares as NULL: this one then becomes current.
  WHERE p.id = c.program_id AND (p.current_delivery_id IS NULL
    OR COALESCE((c.received_at, c.id) > (SELECT cur.received_at, cur.id FROM physitrack_deliveries cur WHERE cur.id = p.current_delivery_id), true))
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
