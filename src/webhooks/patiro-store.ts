import type { Database } from '../db/client.js';
import type { PatiroEvent } from './patiro-payload.js';

export interface PatiroDelivery {
  event: PatiroEvent;
  signedAt: Date;
  bodySha256: string;
  sourceAddress: string | null;
}

/**
 * One statement, so one atomic commit: the event upsert, the patient projection and the audit row.
 * ON CONFLICT keeps concurrent duplicates correct without check-then-insert; every redelivery
 * counts, but only a newer signed timestamp replaces the data.
 */
const SAVE_PATIRO_DELIVERY = `
WITH event AS (
  INSERT INTO patiro_events AS e (event_id, event_type, occurred_at, occurred_at_raw, data, signed_at)
  VALUES ($1, $2, $3::timestamptz, $4, $5::jsonb, $6::timestamptz)
  ON CONFLICT (event_id) DO UPDATE SET
    event_type       = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.event_type ELSE e.event_type END,
    occurred_at      = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.occurred_at ELSE e.occurred_at END,
    occurred_at_raw  = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.occurred_at_raw ELSE e.occurred_at_raw END,
    data             = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.data ELSE e.data END,
    signed_at        = GREATEST(e.signed_at, EXCLUDED.signed_at),
    last_received_at = now(),
    delivery_count   = e.delivery_count + 1
  RETURNING (xmax = 0) AS inserted
), patient AS (
  INSERT INTO patiro_patients AS p (patient_id, data, signed_at, revealed_at, updated_at, last_event_id)
  SELECT $7::text, $5::jsonb, $6::timestamptz,
         CASE WHEN $2 = 'PatientRevealed' THEN COALESCE($3::timestamptz, $6::timestamptz) END, now(), $1
  WHERE $7::text IS NOT NULL
  ON CONFLICT (patient_id) DO UPDATE SET
    data          = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN EXCLUDED.data ELSE p.data END,
    last_event_id = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN EXCLUDED.last_event_id ELSE p.last_event_id END,
    updated_at    = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN now() ELSE p.updated_at END,
    signed_at     = GREATEST(p.signed_at, EXCLUDED.signed_at),
    revealed_at   = LEAST(p.revealed_at, EXCLUDED.revealed_at)
), audit AS (
  INSERT INTO webhook_audit (vendor, event_id, status_code, body_sha256, source_address)
  VALUES ('patiro', $1, 204, $8, $9)
)
SELECT inserted FROM event`;

export interface PatiroStore {
  /** Resolves once the delivery is committed; `inserted` is false for a redelivery. */
  save(delivery: PatiroDelivery): Promise<{ inserted: boolean }>;
}

export function createPatiroStore(db: Database): PatiroStore {
  return {
    async save({ event, signedAt, bodySha256, sourceAddress }) {
      const rows = await db.$queryRawUnsafe<{ inserted: boolean }[]>(
        SAVE_PATIRO_DELIVERY,
        event.eventId,
        event.eventType,
        event.occurredAt,
        event.occurredAtRaw,
        event.dataJson,
        signedAt.toISOString(),
        event.patientId,
        bodySha256,
        sourceAddress,
      );
      return { inserted: rows[0]?.inserted ?? false };
    },
  };
}
