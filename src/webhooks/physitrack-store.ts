import type { Database } from '../db/client.js';
import { createGroupCommitter, type StoreOptions } from '../db/group-commit.js';
import type { PhysitrackNotice } from './physitrack-payload.js';

export interface PhysitrackDelivery {
  notice: PhysitrackNotice;
  /** Set when the download policy refused file_url: the row is kept as `failed`, never fetched. */
  refusal: string | null;
  deadlineHours: number;
  bodySha256: string;
  sourceAddress: string | null;
}

/**
 * A batch of delivery rows (each also its download job) and their audit rows, in one atomic
 * statement. Ids are drawn in the input CTE, which PostgreSQL evaluates once, so each request
 * learns its own id by its position (ord) without relying on RETURNING's order.
 */
const SAVE_PHYSITRACK_BATCH = `
WITH input AS (
  SELECT nextval(pg_get_serial_sequence('physitrack_deliveries', 'id')) AS id, t.*
  FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
    practitioner_token text, patient_id text, file_url text, program_name text, program_date date,
    program_created_at timestamptz, updated boolean, refusal text, deadline_hours int, body_sha256 text,
    source_address text)) WITH ORDINALITY AS t
), delivery AS (
  INSERT INTO physitrack_deliveries
    (id, practitioner_token, patient_id, file_url, program_name, program_date, program_created_at, updated,
     download_status, last_error, deadline_at)
  SELECT id, practitioner_token, patient_id, file_url, program_name, program_date, program_created_at, updated,
         CASE WHEN refusal IS NULL THEN 'pending' ELSE 'failed' END, refusal, now() + make_interval(hours => deadline_hours)
  FROM input
), audit AS (
  INSERT INTO webhook_audit (vendor, event_id, status_code, body_sha256, source_address)
  SELECT 'physitrack', id::text, CASE WHEN refusal IS NULL THEN 204 ELSE 422 END, body_sha256, source_address FROM input
), notify AS (
  SELECT pg_notify('webhook_receiver', json_build_object('vendor', 'physitrack', 'table', 'physitrack_deliveries',
    'id', id::text, 'downloadStatus', CASE WHEN refusal IS NULL THEN 'pending' ELSE 'failed' END)::text)
  FROM input
)
SELECT id, ordinality AS ord FROM input, (SELECT count(*) FROM notify) AS notified ORDER BY ordinality`;

export async function writePhysitrackBatch(db: Database, batch: PhysitrackDelivery[]): Promise<bigint[]> {
  const rows = batch.map(({ notice, refusal, deadlineHours, bodySha256, sourceAddress }) => ({
    practitioner_token: notice.practitionerToken,
    patient_id: notice.patientId,
    file_url: notice.fileUrl,
    program_name: notice.programName,
    program_date: notice.programDate,
    program_created_at: notice.programCreatedAt,
    updated: notice.updated,
    refusal,
    deadline_hours: deadlineHours,
    body_sha256: bodySha256,
    source_address: sourceAddress,
  }));
  const ids = await db.$queryRawUnsafe<{ id: bigint; ord: bigint }[]>(SAVE_PHYSITRACK_BATCH, JSON.stringify(rows));
  if (ids.length !== batch.length) throw new Error(`the batch insert returned ${ids.length} ids for ${batch.length} rows`);
  return ids.map((r) => BigInt(r.id));
}

export interface PhysitrackStore {
  /** Resolves with the delivery id once the row is committed. */
  save(delivery: PhysitrackDelivery, deadlineAt: number): Promise<bigint>;
}

export function createPhysitrackStore(db: Database, options: StoreOptions = {}): PhysitrackStore {
  const committer = createGroupCommitter<PhysitrackDelivery, bigint>({ writeBatch: (batch) => writePhysitrackBatch(db, batch), ...options });
  return { save: (delivery, deadlineAt) => committer.submit(delivery, deadlineAt) };
}
