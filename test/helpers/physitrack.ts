import type { InjectOptions } from 'fastify';
import { newReceipt } from '../../src/audit.js';
import type { NewDelivery } from '../../src/downloads/intake.js';
import type { PhysitrackNotice } from '../../src/webhooks/physitrack-payload.js';

export const PHYSITRACK_KEY = 'physitrack-test-api-key-0123456789';
export const PHYSITRACK_OLD_KEY = 'physitrack-rotated-api-key-0123456789';

let counter = 0;
/** Physitrack's notice as its document describes it; each test overrides one thing. */
export function physitrackNotice(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  counter += 1;
  return {
    api_key: PHYSITRACK_KEY,
    token: 'practitioner-token-123456',
    patient_id: `23-45${String(counter).padStart(2, '0')}`,
    file_url: `https://files.physitrack.com/integrations/your_ehr/programs/secret-path-${counter}.pdf`,
    name: 'Knee Rehab Program',
    date: '2017-02-20',
    date_iso: '2019-09-06T07:09:46Z',
    updated: false,
    ...overrides,
  };
}

export function physitrackRequest(body: unknown, headers: Record<string, string> = {}, path = '/webhooks/physitrack'): InjectOptions {
  return {
    method: 'POST',
    url: path,
    headers: { 'content-type': 'application/json', ...headers },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  };
}

/** A parsed notice as the route hands it to insertDeliveries; each test overrides what it varies. */
export function newDelivery(notice: Partial<PhysitrackNotice>, overrides: Partial<Omit<NewDelivery, 'notice'>> = {}): NewDelivery {
  return {
    receipt: newReceipt(),
    sourceId: 'default',
    refusal: null,
    deadlineHours: 24,
    bodySha256: 'ab'.repeat(32),
    sourceAddress: '127.0.0.1',
    ...overrides,
    notice: {
      practitionerToken: 'practitioner-token',
      patientId: 'patient',
      fileUrl: 'https://files.physitrack.com/programs/program.pdf',
      programName: 'Knee Rehab Program',
      programDate: '2026-11-01',
      programCreatedAt: '2026-11-01T10:00:00Z',
      updated: false,
      ...notice,
    },
  };
}
