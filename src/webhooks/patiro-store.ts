import { poolOf, type Database } from '../db/client.js';
import { createGroupCommitter, type StoreOptions } from '../db/group-commit.js';
import { receiptsInsertSql, type Receipt } from '../audit.js';
import { erasureLocksSql } from '../erasure.js';
import { notifySql } from '../db/notify.js';
import { changesInsertSql } from '../changes/changes-table.js';
import type { DurableWrite } from '../spool/durable-write.js';
import type { PatiroEvent } from './patiro-payload.js';

export interface PatiroDelivery {
  receipt: Receipt;
  /** The source (clinic) it was sent to; events and patients of two sources never share a row. */
  sourceId: string;
  event: PatiroEvent;
  signedAt: Date;
  bodySha256: string;
  sourceAddress: string | null;
}

/**
 * One statement, so one atomic commit for a whole batch: one audit row per delivery, the event
 * upserts and the patient projection. Data arrives as the JSON text Patiro signed and is parsed by
 * PostgreSQL itself, so jsonb keeps its numbers exactly as sent. The erasure locks of its sources
 * and patients come first (erasure.ts): an erasure never sees half of this statement. Rows arrive as JSON arrays (jsonb_to_recordset), already
 * folded to one row per (source, event) and per (source, patient): ON CONFLICT may touch a row only
 * once per statement. The audit rows come first, keyed by receipt: a delivery whose receipt is
 * already recorded (this write ran before) counts nothing again, and an event none of whose
 * deliveries is new is not touched. Every new delivery counts; only a newer signed timestamp
 * replaces the data, and receive times widen (first the earliest, last the latest), so the order in
 * which deliveries are written does not matter. A listening PMS is notified of each event once the
 * batch commits (ids and types only), and the change feed gets a row per event and per patient row
 * the batch changed.
 */
/**
 * Which event's data a patient row shows: the newest signed, and of two events signed in the same
 * millisecond, the one with the greater eventId (compared as bytes, as patientWinner does), so that
 * the order in which they are written does not matter.
 */
const NEWER_PATIENT = `(EXCLUDED.signed_at, EXCLUDED.last_event_id COLLATE "C") > (p.signed_at, p.last_event_id COLLATE "C")`;

const SAVE_PATIRO_BATCH = `
WITH locks AS MATERIALIZED (
  ${erasureLocksSql('patiro', 'SELECT * FROM jsonb_to_recordset($1::jsonb) AS e(source_id text, patient_id text)')}
), arrival AS (
  ${receiptsInsertSql(
    `SELECT receipt_id, received_at, source_id, 'patiro', event_id, 204, body_sha256, source_address
  FROM jsonb_to_recordset($3::jsonb) AS t(receipt_id uuid, received_at timestamptz, source_id text, event_id text, body_sha256 text, source_address text)
  CROSS JOIN locks`,
    'ON CONFLICT (receipt_id) DO NOTHING',
  )}
  RETURNING source_id, event_id, received_at
), fresh AS (
  SELECT source_id, event_id, count(*)::int AS n, min(received_at) AS first_at, max(received_at) AS last_at
  FROM arrival GROUP BY source_id, event_id
), event AS (
  INSERT INTO patiro_events AS e (source_id, event_id, event_type, occurred_at, occurred_at_raw, data, signed_at, delivery_count,
                                  first_received_at, last_received_at, patient_id)
  SELECT t.source_id, t.event_id, t.event_type, t.occurred_at, t.occurred_at_raw, t.data_json::jsonb, t.signed_at, f.n, f.first_at, f.last_at,
         t.patient_id
  FROM jsonb_to_recordset($1::jsonb) AS t(source_id text, event_id text, event_type text, occurred_at timestamptz,
                                          occurred_at_raw text, data_json text, signed_at timestamptz, patient_id text)
  JOIN fresh f USING (source_id, event_id)
  ON CONFLICT (source_id, event_id) DO UPDATE SET
    event_type        = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.event_type ELSE e.event_type END,
    occurred_at       = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.occurred_at ELSE e.occurred_at END,
    occurred_at_raw   = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.occurred_at_raw ELSE e.occurred_at_raw END,
    data              = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.data ELSE e.data END,
    patient_id        = CASE WHEN EXCLUDED.signed_at > e.signed_at THEN EXCLUDED.patient_id ELSE e.patient_id END,
    signed_at         = GREATEST(e.signed_at, EXCLUDED.signed_at),
    first_received_at = LEAST(e.first_received_at, EXCLUDED.first_received_at),
    last_received_at  = GREATEST(e.last_received_at, EXCLUDED.last_received_at),
    delivery_count    = e.delivery_count + EXCLUDED.delivery_count
  RETURNING source_id, event_id, event_type, (xmax = 0) AS inserted
), notify AS (
  SELECT ${notifySql({ vendor: "'patiro'", table: "'patiro_events'", id: 'event_id', source: 'source_id', eventType: 'event_type', redelivery: 'NOT inserted' })}
  FROM event
), patient AS (
  -- Not filtered by receipt: newest-wins and the earliest reveal give the same row however often
  -- a delivery is applied, and one that changes nothing writes no new row version.
  INSERT INTO patiro_patients AS p (source_id, patient_id, data, signed_at, revealed_at, updated_at, last_event_id)
  SELECT source_id, patient_id, data_json::jsonb, signed_at, revealed_at, now(), last_event_id
  FROM jsonb_to_recordset($2::jsonb) AS t(source_id text, patient_id text, data_json text, signed_at timestamptz,
                                          revealed_at timestamptz, last_event_id text)
  CROSS JOIN locks
  ON CONFLICT (source_id, patient_id) DO UPDATE SET
    data          = CASE WHEN ${NEWER_PATIENT} THEN EXCLUDED.data ELSE p.data END,
    last_event_id = CASE WHEN ${NEWER_PATIENT} THEN EXCLUDED.last_event_id ELSE p.last_event_id END,
    updated_at    = CASE WHEN ${NEWER_PATIENT} THEN now() ELSE p.updated_at END,
    signed_at     = GREATEST(p.signed_at, EXCLUDED.signed_at),
    revealed_at   = LEAST(p.revealed_at, EXCLUDED.revealed_at)
  WHERE ${NEWER_PATIENT} OR LEAST(p.revealed_at, EXCLUDED.revealed_at) IS DISTINCT FROM p.revealed_at
  RETURNING source_id, patient_id
), change AS (
  ${changesInsertSql(`SELECT 'patiro', source_id, 'patiro_events', event_id FROM event
  UNION ALL SELECT 'patiro', source_id, 'patiro_patients', patient_id FROM patient`)}
)
SELECT source_id AS "sourceId", event_id AS "eventId", inserted FROM event, (SELECT count(*) FROM notify) AS notified`;

/** Within one batch, the delivery with the newest signed time wins, as it would across batches. */
function newest(a: PatiroDelivery, b: PatiroDelivery): PatiroDelivery {
  return b.signedAt.getTime() > a.signedAt.getTime() ? b : a;
}

/** A patient's data comes from the newest signed event; among equal times, the greater eventId (NEWER_PATIENT). */
function patientWinner(a: PatiroDelivery, b: PatiroDelivery): PatiroDelivery {
  const byTime = b.signedAt.getTime() - a.signedAt.getTime();
  if (byTime !== 0) return byTime > 0 ? b : a;
  return Buffer.compare(Buffer.from(b.event.eventId), Buffer.from(a.event.eventId)) > 0 ? b : a;
}

/** An ISO instant in epoch microseconds: PostgreSQL keeps microseconds, Date.parse milliseconds. */
function epochMicros(iso: string): number {
  const fraction = /\.(\d+)/.exec(iso)?.[1] ?? '';
  return Date.parse(iso) * 1000 + Number(fraction.slice(3, 6).padEnd(3, '0'));
}

function earliest(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return epochMicros(a) <= epochMicros(b) ? a : b;
}

function revealedAt(d: PatiroDelivery): string | null {
  return d.event.eventType === 'PatientRevealed' ? (d.event.occurredAt ?? d.signedAt.toISOString()) : null;
}

/** A row's key within its source; NUL cannot occur in stored text, so keys of two sources never meet. */
const keyOf = (sourceId: string, id: string) => `${sourceId}\u0000${id}`;

/** The statement's three inputs: one row per event, one per patient, one audit row per delivery. */
export function foldPatiroBatch(batch: PatiroDelivery[]) {
  const events = new Map<string, PatiroDelivery>();
  const patients = new Map<string, { winner: PatiroDelivery; patientId: string; revealedAt: string | null }>();
  for (const d of batch) {
    const eventKey = keyOf(d.sourceId, d.event.eventId);
    const event = events.get(eventKey);
    events.set(eventKey, event ? newest(event, d) : d);
    const { patientId } = d.event;
    if (patientId === null) continue;
    const patientKey = keyOf(d.sourceId, patientId);
    const patient = patients.get(patientKey);
    patients.set(
      patientKey,
      patient
        ? { winner: patientWinner(patient.winner, d), patientId, revealedAt: earliest(patient.revealedAt, revealedAt(d)) }
        : { winner: d, patientId, revealedAt: revealedAt(d) },
    );
  }
  return {
    events: [...events.values()].map(({ sourceId, event, signedAt }) => ({
      source_id: sourceId,
      event_id: event.eventId,
      event_type: event.eventType,
      occurred_at: event.occurredAt,
      occurred_at_raw: event.occurredAtRaw,
      data_json: event.dataJson,
      signed_at: signedAt.toISOString(),
      patient_id: event.patientId,
    })),
    patients: [...patients.values()].map(({ winner, patientId, revealedAt: revealed }) => ({
      source_id: winner.sourceId,
      patient_id: patientId,
      data_json: winner.event.dataJson,
      signed_at: winner.signedAt.toISOString(),
      revealed_at: revealed,
      last_event_id: winner.event.eventId,
    })),
    audit: batch.map((d) => ({
      receipt_id: d.receipt.id,
      received_at: d.receipt.receivedAt.toISOString(),
      source_id: d.sourceId,
      event_id: d.event.eventId,
      body_sha256: d.bodySha256,
      source_address: d.sourceAddress,
    })),
  };
}

export async function writePatiroBatch(db: Database, batch: PatiroDelivery[]): Promise<{ inserted: boolean }[]> {
  const { events, patients, audit } = foldPatiroBatch(batch);
  // Plain pg and a named statement: parsed and planned once per connection. Through Prisma's raw
  // query, planned at every batch, the same batch of 16 cost twice the time (docs/performance.md).
  const { rows } = await poolOf(db).query<{ sourceId: string; eventId: string; inserted: boolean }>({
    name: 'patiro_save_batch',
    text: SAVE_PATIRO_BATCH,
    values: [JSON.stringify(events), JSON.stringify(patients), JSON.stringify(audit)],
  });
  // A duplicate within the batch is a redelivery of the first occurrence.
  const firstSeen = new Map(rows.map((r) => [keyOf(r.sourceId, r.eventId), r.inserted]));
  return batch.map((d) => {
    const key = keyOf(d.sourceId, d.event.eventId);
    const inserted = firstSeen.get(key) ?? false;
    firstSeen.set(key, false);
    return { inserted };
  });
}

export interface PatiroStore {
  /**
   * Resolves once the delivery is durable: committed (`inserted` is false for a redelivery), or,
   * while PostgreSQL is away, in this replica's spool (`spooled`; replayed when it is back).
   */
  save(delivery: PatiroDelivery, deadlineAt: number): Promise<{ inserted: boolean; spooled?: true }>;
}

/** Group-committed writes; through `durable` (when given), with the spool to fall back on. */
export function createPatiroStore(db: Database, options: StoreOptions = {}, durable?: DurableWrite): PatiroStore {
  const committer = createGroupCommitter<PatiroDelivery, { inserted: boolean }>({
    writeBatch: (batch) => writePatiroBatch(db, batch),
    ...options,
  });
  return {
    async save(delivery, deadlineAt) {
      if (!durable) return committer.submit(delivery, deadlineAt);
      const outcome = await durable.write({ vendor: 'patiro', delivery }, (dbDeadline) => committer.submit(delivery, dbDeadline), deadlineAt);
      return outcome.spooled ? { inserted: false, spooled: true } : outcome.result;
    },
  };
}
