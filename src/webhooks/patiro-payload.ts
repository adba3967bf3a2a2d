import { z } from 'zod';
import { WebhookError } from '../errors.js';
import { memberSources, numberOutOfRange } from './json-body.js';

export const KNOWN_PATIRO_EVENT_TYPES = ['PatientRevealed', 'PatientUpdated'] as const;
const PATIENT_EVENT_TYPES: ReadonlySet<string> = new Set(KNOWN_PATIRO_EVENT_TYPES);

const payloadSchema = z.object({
  eventId: z.string().min(1).max(200),
  eventType: z.string().min(1).max(200),
  timestamp: z.unknown().optional(),
  data: z.unknown().optional(),
});

export interface PatiroEvent {
  eventId: string;
  eventType: string;
  /** ISO 8601 with an explicit offset, or null when Patiro's timestamp could not be read. */
  occurredAt: string | null;
  occurredAtRaw: string | null;
  /**
   * The event's data exactly as Patiro signed it, as JSON text (null when absent or null): stored by
   * PostgreSQL parsing this text, numbers keep every digit (9007199254740993, 1e309) that a
   * JavaScript number would round.
   */
  dataJson: string | null;
  /** data.id as sent (a number's digits, a string's text), for the two event types that describe a patient. */
  patientId: string | null;
}

// Patiro sends e.g. 2026-03-27T10:04:03.4247725: up to 7 fractional digits and no offset (read as UTC).
const PATIRO_TIMESTAMP = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$/i;

/** Keeps microseconds (PostgreSQL's precision); null for anything that is not a real instant. */
export function parseOccurredAt(raw: unknown): string | null {
  if (typeof raw !== 'string') return null;
  const match = PATIRO_TIMESTAMP.exec(raw.trim());
  if (!match) return null;
  const [, date, time, fraction, offset] = match;
  // PostgreSQL has no year 0: storing it would fail the write, and Patiro would retry for hours.
  if (Number(date!.slice(0, 4)) < 1) return null;
  const utc = !offset || offset.toUpperCase() === 'Z';
  const zone = utc ? 'Z' : `${offset.slice(0, 3)}:${offset.slice(-2)}`;
  const iso = `${date}T${time}${fraction ? `.${fraction.slice(0, 6)}` : ''}${zone}`;
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return null;
  // Date.parse rolls 2026-02-30 over to March; a real instant formats back to the same date and time.
  if (utc && new Date(ms).toISOString().slice(0, 19) !== `${date}T${time}`) return null;
  return iso;
}

/** Like eventId: a key of a row (and of an index entry, which PostgreSQL caps at about 2.7 KB). */
const MAX_PATIENT_ID_LENGTH = 200;

function patientIdOf(eventType: string, data: unknown, dataJson: string | null): string | null {
  if (!PATIENT_EVENT_TYPES.has(eventType) || typeof data !== 'object' || data === null || Array.isArray(data) || dataJson === null) return null;
  const id = (data as Record<string, unknown>).id;
  // The digits as sent: two ids that round to one JavaScript number are two patients.
  const patientId = typeof id === 'string' ? id : typeof id === 'number' ? (memberSources(dataJson).get('id') ?? null) : null;
  if (patientId !== null && patientId.length > MAX_PATIENT_ID_LENGTH) {
    throw new WebhookError('WH_ERR_BAD_PAYLOAD', `data.id is longer than ${MAX_PATIENT_ID_LENGTH} characters`);
  }
  return patientId === '' ? null : patientId;
}

/**
 * Validates an authenticated, parsed body; `raw` is its text, from which data is kept as sent
 * (without it, data is kept as parsed). Unknown event types are accepted: Patiro may add more.
 */
export function toPatiroEvent(body: unknown, raw?: string): PatiroEvent {
  const parsed = payloadSchema.safeParse(body);
  if (!parsed.success) {
    const fields = [...new Set(parsed.error.issues.map((i) => i.path.join('.') || 'body'))].join(', ');
    throw new WebhookError('WH_ERR_BAD_PAYLOAD', `The payload needs a string eventId and eventType (problem with: ${fields})`);
  }
  const { eventId, eventType, timestamp, data } = parsed.data;
  const sources = raw === undefined ? undefined : memberSources(raw);
  const dataJson = data === undefined || data === null ? null : (sources?.get('data') ?? JSON.stringify(data));
  // data is stored as sent, as jsonb: a number it cannot hold would fail the write on every retry
  // (and, while PostgreSQL is away, be acknowledged from the spool and fail when replayed).
  const outOfRange = dataJson === null ? undefined : numberOutOfRange(dataJson);
  if (outOfRange) throw new WebhookError('WH_ERR_BAD_PAYLOAD', `data holds a number PostgreSQL cannot store exactly (${outOfRange})`);
  return {
    eventId,
    eventType,
    occurredAt: parseOccurredAt(timestamp),
    occurredAtRaw: typeof timestamp === 'string' ? timestamp : timestamp === undefined ? null : (sources?.get('timestamp') ?? JSON.stringify(timestamp)),
    dataJson,
    patientId: patientIdOf(eventType, data, dataJson),
  };
}
