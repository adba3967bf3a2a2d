import { z } from 'zod';
import { WebhookError } from '../errors.js';

const text = (max: number) => z.string().max(max);

/** Physitrack's notice, as its document lists it. Unknown fields are ignored. */
const noticeSchema = z.object({
  token: text(500).min(1, 'must not be empty'),
  patient_id: text(200).min(1, 'must not be empty'),
  file_url: text(4096).min(1, 'must not be empty'),
  name: text(1000),
  date: text(100),
  date_iso: text(100),
  updated: z.boolean({ error: 'must be true or false' }),
});

export interface PhysitrackNotice {
  practitionerToken: string;
  patientId: string;
  fileUrl: string;
  programName: string;
  /** YYYY-MM-DD, or null when Physitrack's date is not a real calendar date. */
  programDate: string | null;
  /** ISO 8601 instant, or null when unreadable: a readable PDF matters more than a perfect date. */
  programCreatedAt: string | null;
  updated: boolean;
}

function calendarDate(value: string): string | null {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value.trim());
  // PostgreSQL has no year 0: storing it would fail the write of the whole delivery.
  if (!match || Number(match[1]) < 1) return null;
  const date = new Date(`${match[0]}T00:00:00Z`);
  return !Number.isNaN(date.getTime()) && date.toISOString().startsWith(match[0]) ? match[0] : null;
}

function instant(value: string): string | null {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/i.test(value.trim())) return null;
  const ms = Date.parse(value.trim());
  if (Number.isNaN(ms)) return null;
  // In UTC the year may leave 0001–9999 (9999-12-31T23:59-14:00 is in year 10000): toISOString
  // then writes an extended year (+010000-…) that PostgreSQL cannot read, and the write would fail.
  const iso = new Date(ms).toISOString();
  return /^\d{4}-/.test(iso) && !iso.startsWith('0000') ? iso : null;
}

/** The api_key is checked before this runs, and is not part of what is kept. */
export function toPhysitrackNotice(body: unknown): PhysitrackNotice {
  const parsed = noticeSchema.safeParse(body);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'body'} ${i.code === 'invalid_type' ? `is missing or not a ${i.expected}` : i.message}`);
    throw new WebhookError('WH_ERR_BAD_PAYLOAD', `The notice is invalid: ${[...new Set(problems)].join('; ')}`);
  }
  const n = parsed.data;
  return {
    practitionerToken: n.token,
    patientId: n.patient_id,
    fileUrl: n.file_url,
    programName: n.name,
    programDate: calendarDate(n.date),
    programCreatedAt: instant(n.date_iso),
    updated: n.updated,
  };
}
