import type { Database } from '../db/client.js';
import { createGroupCommitter, type StoreOptions } from '../db/group-commit.js';
import type { PatiroEvent } from './patiro-payload.js';

export interface PatiroDelivery {
  event: PatiroEvent;
  signedAt: Date;
  bodySha256: string;
  sourceAddress: string | null;
}

/**
 * One statement, so one atomic commit for a whole batch: the event upserts, the patient projection
 * and one audit row per delivery. Rows arrive as one JSON array (jsonb_to_recordset), already
 * folded to one row per event and per patient: ON CONFLICT may touch a row only once per statement.
 * Every redelivery counts (n), but only a newer signed timestamp replaces the data. A listening
 * PMS is notified of each event once the batch commits (ids and types only, no patient data).
 */
const SAVE_PATIRO_BATCH = `
WITH event AS (
  INSERT INTO patiro_events AS e (event_id, event_type, occurred_at, occurred_at_raw, data, signed_at, delivery_count)
  SELECT event_id, event_type, occurred_at, occurred_at_raw, data, signed_at, n
  FROM jsonb_to_recordset($1::jsonb) AS t(event_id text, event_type text, occurred_at timestamptz, occurred_at_raw text,
                                          data jsonb, signed_at timestamptz, n int)
  ON CONFLICT (event_id) DO UPDATE SET
    event_type       = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.event_type ELSE e.event_type END,
    occurred_at      = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.occurred_at ELSE e.occurred_at END,
    occurred_at_raw  = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.occurred_at_raw ELSE e.occurred_at_raw END,
    data             = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.data ELSE e.data END,
    signed_at        = GREATEST(e.signed_at, EXCLUDED.signed_at),
    last_received_at = now(),
    delivery_count   = e.delivery_count + EXCLUDED.delivery_count
  RETURNING event_id, event_type, (xmax = 0) AS inserted
), notify AS (
  SELECT pg_notify('webhook_receiver', json_build_object('vendor', 'patiro', 'table', 'patiro_events', 'id', event_id,
    'eventType', event_type, 'redelivery', NOT inserted)::text)
  FROM event
), patient AS (
  INSERT INTO patiro_patients AS p (patient_id, data, signed_at, revealed_at, updated_at, last_event_id)
  SELECT patient_id, data, signed_at, revealed_at, now(), last_event_id
  FROM jsonb_to_recordset($2::jsonb) AS t(patient_id text, data jsonb, signed_at timestamptz, revealed_at timestamptz, last_event_id text)
  ON CONFLICT (patient_id) DO UPDATE SET
    data          = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN EXCLUDED.data ELSE p.data END,
    last_event_id = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN EXCLUDED.last_event_id ELSE p.last_event_id END,
    updated_at    = CASE WHEN EXCLUDED.signed_at > p.signed_at THEN now() ELSE p.updated_at END,
    signed_at     = GREATEST(p.signed_at, EXCLUDED.signed_at),
    revealed_at   = LEAST(p.revealed_at, EXCLUDED.revealed_at)
), audit AS (
  INSERT INTO webhook_audit (vendor, event_id, status_code, body_sha256, source_address)
  SELECT 'patiro', event_id, 204, body_sha256, source_address
  FROM jsonb_to_recordset($3::jsonb) AS t(event_id text, body_sha256 text, source_address text)
)
SELECT event_id AS "eventId", inserted FROM event, (SELECT count(*) FROM notify) AS notified`;

/** Within one batch, the delivery with the newest signed time wins, as it would across batches. */
function newest(a: PatiroDelivery, b: PatiroDelivery): PatiroDelivery {
  return b.signedAt.getTime() > a.signedAt.getTime() ? b : a;
}

function earliest(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return Date.parse(a) <= Date.parse(b) ? a : b;
}

function revealedAt(d: PatiroDelivery): string | null {
  return d.event.eventType === 'PatientRevealed' ? (d.event.occurredAt ?? d.signedAt.toISOString()) : null;
}

/** The statement's three inputs: one row per event, one per patient, one audit row per delivery. */
export function foldPatiroBatch(batch: PatiroDelivery[]) {
  const events = new Map<string, { winner: PatiroDelivery; n: number }>();
  const patients = new Map<string, { winner: PatiroDelivery; revealedAt: string | null }>();
  for (const d of batch) {
    const event = events.get(d.event.eventId);
    events.set(d.event.eventId, event ? { winner: newest(event.winner, d), n: event.n + 1 } : { winner: d, n: 1 });
    if (d.event.patientId === null) continue;
    const patient = patients.get(d.event.patientId);
    patients.set(
      d.event.patientId,
      patient ? { winner: newest(patient.winner, d), revealedAt: earliest(patient.revealedAt, revealedAt(d)) } : { winner: d, revealedAt: revealedAt(d) },
    );
  }
  return {
    events: [...events.values()].map(({ winner: { event, signedAt }, n }) => ({
      event_id: event.eventId,
      event_type: event.eventType,
      occurred_at: event.occurredAt,
      occurred_at_raw: event.occurredAtRaw,
      data: event.data,
      signed_at: signedAt.toISOString(),
      n,
    })),
    patients: [...patients.entries()].map(([patientId, { winner, revealedAt: revealed }]) => ({
      patient_id: patientId,
      data: winner.event.data,
      signed_at: winner.signedAt.toISOString(),
      revealed_at: revealed,
      last_event_id: winner.event.eventId,
    })),
    audit: batch.map((d) => ({ event_id: d.event.eventId, body_sha256: d.bodySha256, source_address: d.sourceAddress })),
  };
}

export async function writePatiroBatch(db: Database, batch: PatiroDelivery[]): Promise<{ inserted: boolean }[]> {
  const { events, patients, audit } = foldPatiroBatch(batch);
  const rows = await db.$queryRawUnsafe<{ eventId: string; inserted: boolean }[]>(
    SAVE_PATIRO_BATCH,
    JSON.stringify(events),
    JSON.stringify(patients),
    JSON.stringify(audit),
  );
  // A duplicate within the batch is a redelivery of the first occurrence.
  const firstSeen = new Map(rows.map((r) => [r.eventId, r.inserted]));
  return batch.map((d) => {
    const inserted = firstSeen.get(d.event.eventId) ?? false;
    firstSeen.set(d.event.eventId, false);
    return { inserted };
  });
}

export interface PatiroStore {
  /** Resolves once the delivery is committed (`inserted` is false for a redelivery). */
  save(delivery: PatiroDelivery, deadlineAt: number): Promise<{ inserted: boolean }>;
}

export function createPatiroStore(db: Database, options: StoreOptions = {}): PatiroStore {
  const committer = createGroupCommitter<PatiroDelivery, { inserted: boolean }>({
    writeBatch: (batch) => writePatiroBatch(db, batch),
    ...options,
  });
  return { save: (delivery, deadlineAt) => committer.submit(delivery, deadlineAt) };
}
