import { describe, expect, it } from 'vitest';
import { parseOccurredAt, toPatiroEvent } from '../../src/webhooks/patiro-payload.js';
import { toPhysitrackNotice } from '../../src/webhooks/physitrack-payload.js';

describe('parseOccurredAt (Patiro timestamp)', () => {
  it.each([
    ['2026-03-27T10:04:03.4247725', '2026-03-27T10:04:03.424772Z'],
    ['2026-03-27T10:04:03', '2026-03-27T10:04:03Z'],
    ['2026-03-27T10:04:03.5Z', '2026-03-27T10:04:03.5Z'],
    ['2026-03-27T10:04:03+02:00', '2026-03-27T10:04:03+02:00'],
    ['2026-03-27T10:04:03-0530', '2026-03-27T10:04:03-05:30'],
  ])('reads %s as %s', (raw, iso) => {
    expect(parseOccurredAt(raw)).toBe(iso);
  });

  it.each([['2026-02-30T10:00:00'], ['0000-01-01T00:00:00'], ['yesterday'], [''], ['2026-03-27']])('gives null for %s', (raw) => {
    expect(parseOccurredAt(raw)).toBeNull();
  });

  it('gives null for a timestamp that is not a string', () => {
    expect(parseOccurredAt(1774872805635)).toBeNull();
  });
});

describe('toPatiroEvent', () => {
  it('keeps a non-string timestamp as raw JSON and the patient id for patient events only', () => {
    const event = toPatiroEvent({ eventId: 'e', eventType: 'PatientRevealed', timestamp: 17, data: { id: 'p' } });
    expect(event).toMatchObject({ occurredAt: null, occurredAtRaw: '17', patientId: 'p' });
    expect(toPatiroEvent({ eventId: 'e', eventType: 'Other', data: { id: 'p' } }).patientId).toBeNull();
  });

  it('refuses a patient id longer than 200 characters, as it refuses such an eventId (it is a key, too long for an index entry)', () => {
    expect(toPatiroEvent({ eventId: 'e', eventType: 'PatientUpdated', data: { id: 'p'.repeat(200) } }).patientId).toHaveLength(200);
    expect(() => toPatiroEvent({ eventId: 'e', eventType: 'PatientUpdated', data: { id: 'p'.repeat(201) } })).toThrow(/data.id is longer than 200/);
  });
});

describe('toPhysitrackNotice dates', () => {
  const base = { token: 't', patient_id: 'p', file_url: 'https://x', name: 'n', updated: false };
  it.each([
    ['2017-02-20', '2019-09-06T07:09:46Z', '2017-02-20', '2019-09-06T07:09:46.000Z'],
    ['2017-02-30', '2019-09-06T07:09:46+02:00', null, '2019-09-06T05:09:46.000Z'],
    ['0000-01-01', '0000-01-01T00:00:00Z', null, null],
    ['20.02.2017', '2019-09-06', null, null],
  ])('reads date %s and date_iso %s', (date, dateIso, programDate, programCreatedAt) => {
    expect(toPhysitrackNotice({ ...base, date, date_iso: dateIso })).toMatchObject({ programDate, programCreatedAt });
  });
});
