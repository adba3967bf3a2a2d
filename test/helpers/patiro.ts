import type { InjectOptions } from 'fastify';
import { patiroSignature } from '../../src/webhooks/patiro-signature.js';

export const PATIRO_SECRET = 'patiro-test-secret-0123456789abcdef';
export const PATIRO_OLD_SECRET = 'patiro-rotated-out-secret-0123456789';

export interface SignedPatiroOptions {
  body: string | Buffer;
  secret?: string;
  timestamp?: string;
  query?: string;
  headers?: Record<string, string>;
  /** Default: the environment source's path. */
  path?: string;
}

/** An inject() request signed exactly as Patiro signs: over "<timestamp>:<raw body>". */
export function signedPatiroRequest({ body, secret = PATIRO_SECRET, timestamp = String(Date.now()), query = '', headers = {}, path = '/webhooks/patiro' }: SignedPatiroOptions): InjectOptions {
  const raw = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return {
    method: 'POST',
    url: `${path}${query}`,
    headers: {
      'content-type': 'application/json',
      'x-patiro-timestamp': timestamp,
      'x-patiro-hmacsha256': patiroSignature(secret, timestamp, raw),
      ...headers,
    },
    payload: raw,
  };
}

let counter = 0;
export function patiroEvent(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  counter += 1;
  return {
    eventId: `00000000-0000-4000-8000-${String(counter).padStart(6, '0')}${Math.random().toString(16).slice(2, 8)}`,
    eventType: 'PatientUpdated',
    timestamp: '2026-03-27T10:04:03.4247725',
    data: { id: `patient-${counter}`, firstName: 'Ada', lastName: 'Lovelace', email: 'ada@example.org' },
    ...overrides,
  };
}
