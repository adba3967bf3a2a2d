import type { Database } from '../db/client.js';
import type { PhysitrackNotice } from './physitrack-payload.js';

export interface PhysitrackDelivery {
  notice: PhysitrackNotice;
  /** Set when the download policy refused file_url: the row is kept as `failed`, never fetched. */
  refusal: string | null;
  deadlineHours: number;
  bodySha256: string;
  sourceAddress: string | null;
}

/** The delivery row (which is also the download job) and its audit row, in one atomic statement. */
const SAVE_PHYSITRACK_DELIVERY = `
WITH delivery AS (
  INSERT INTO physitrack_deliveries
    (practitioner_token, patient_id, file_url, program_name, program_date, program_created_at, updated,
     download_status, last_error, deadline_at)
  VALUES ($1, $2, $3, $4, $5::date, $6::timestamptz, $7,
     CASE WHEN $8::text IS NULL THEN 'pending' ELSE 'failed' END, $8::text,
     now() + make_interval(hours => $9::int))
  RETURNING id
), audit AS (
  INSERT INTO webhook_audit (vendor, event_id, status_code, body_sha256, source_address)
  SELECT 'physitrack', id::text, CASE WHEN $8::text IS NULL THEN 204 ELSE 422 END, $10, $11 FROM delivery
)
SELECT id FROM delivery`;

export interface PhysitrackStore {
  /** Resolves with the delivery id once the row is committed. */
  save(delivery: PhysitrackDelivery): Promise<bigint>;
}

export function createPhysitrackStore(db: Database): PhysitrackStore {
  return {
    async save({ notice, refusal, deadlineHours, bodySha256, sourceAddress }) {
      const rows = await db.$queryRawUnsafe<{ id: bigint }[]>(
        SAVE_PHYSITRACK_DELIVERY,
        notice.practitionerToken,
        notice.patientId,
        notice.fileUrl,
        notice.programName,
        notice.programDate,
        notice.programCreatedAt,
        notice.updated,
        refusal,
        deadlineHours,
        bodySha256,
        sourceAddress,
      );
      const id = rows[0]?.id;
      if (id === undefined) throw new Error('the delivery insert returned no row');
      return BigInt(id);
    },
  };
}
