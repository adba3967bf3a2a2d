import type { IncomingHttpHeaders } from 'node:http';
import { secretsEqual } from './constant-time.js';
import { verifyPatiroSignature, type SignatureFailure } from './patiro-signature.js';

export interface PatiroAuthConfig {
  signingSecrets: readonly string[];
  timestampToleranceSeconds: number;
  token?: string | undefined;
  basicAuth?: string | undefined;
}

export type PatiroAuthFailure = SignatureFailure | 'missing_token' | 'bad_token' | 'missing_basic_auth' | 'bad_basic_auth';

export type PatiroAuthResult =
  | { ok: true; /** The signed timestamp when signing is configured, else the sender's x-patiro-timestamp if numeric. */ signedAt: Date | undefined }
  | { ok: false; reason: PatiroAuthFailure };

export interface PatiroRequestParts {
  rawBody: Buffer;
  headers: IncomingHttpHeaders;
  /** The ?token= query parameter(s). */
  token: string | string[] | undefined;
}

export function isPatiroConfigured(config: PatiroAuthConfig): boolean {
  return config.signingSecrets.length > 0 || Boolean(config.token) || Boolean(config.basicAuth);
}

function checkToken(expected: string, given: string | string[] | undefined): PatiroAuthFailure | undefined {
  if (given === undefined || given === '') return 'missing_token';
  if (Array.isArray(given) || !secretsEqual(given, expected)) return 'bad_token';
  return undefined;
}

function checkBasicAuth(expected: string, header: string | undefined): PatiroAuthFailure | undefined {
  const match = header?.match(/^Basic\s+([A-Za-z0-9+/=]+)\s*$/i);
  if (!header) return 'missing_basic_auth';
  if (!match) return 'bad_basic_auth';
  const decoded = Buffer.from(match[1]!, 'base64');
  return secretsEqual(decoded, expected) ? undefined : 'bad_basic_auth';
}

/**
 * Without a signing secret, the sender's timestamp is only a hint of order. One far in the future
 * would freeze the event (an older signed_at never replaces newer data), so it is capped at the
 * receive time plus the tolerance.
 */
function unsignedTimestamp(value: string | string[] | undefined, now: Date, toleranceSeconds: number): Date | undefined {
  if (typeof value !== 'string' || !/^\d{1,15}$/.test(value)) return undefined;
  return new Date(Math.min(Number(value), now.getTime() + toleranceSeconds * 1000));
}

/** Every configured protection must pass; the cheapest run first. Pure: the clock is passed in. */
export function authenticatePatiro(config: PatiroAuthConfig, request: PatiroRequestParts, now: Date): PatiroAuthResult {
  if (config.token) {
    const failure = checkToken(config.token, request.token);
    if (failure) return { ok: false, reason: failure };
  }
  if (config.basicAuth) {
    const failure = checkBasicAuth(config.basicAuth, request.headers.authorization);
    if (failure) return { ok: false, reason: failure };
  }
  if (config.signingSecrets.length === 0) {
    return { ok: true, signedAt: unsignedTimestamp(request.headers['x-patiro-timestamp'], now, config.timestampToleranceSeconds) };
  }
  const result = verifyPatiroSignature({
    rawBody: request.rawBody,
    signature: request.headers['x-patiro-hmacsha256'],
    timestamp: request.headers['x-patiro-timestamp'],
    secrets: config.signingSecrets,
    toleranceSeconds: config.timestampToleranceSeconds,
    now,
  });
  return result.ok ? { ok: true, signedAt: result.signedAt } : result;
}

/**
 * A safe detail of a failure for the source's health and the log, for the operator asking why a
 * clinic's deliveries fail: how far off the clock is, how many secrets were tried. Never a secret.
 */
export function patiroFailureHint(reason: PatiroAuthFailure, config: PatiroAuthConfig, headers: IncomingHttpHeaders, now: Date): string | undefined {
  if (reason === 'stale_timestamp') {
    const sent = Number(headers['x-patiro-timestamp']);
    // Epoch seconds where milliseconds belong: a thousand times too small, and "now" once multiplied.
    if (Math.abs(now.getTime() - sent * 1000) <= Math.max(config.timestampToleranceSeconds, 60) * 1000) {
      return 'the timestamp looks like seconds, not milliseconds: x-patiro-timestamp must be epoch milliseconds';
    }
    const skewSeconds = Math.round((now.getTime() - sent) / 1000);
    return `timestamp ${Math.abs(skewSeconds)} s in the ${skewSeconds >= 0 ? 'past' : 'future'} (tolerance ${config.timestampToleranceSeconds} s)`;
  }
  if (reason === 'bad_signature') {
    const n = config.signingSecrets.length;
    return `matched none of ${n} secret${n === 1 ? '' : 's'}`;
  }
  if (reason === 'malformed_signature') return 'x-patiro-hmacsha256 is not 64 hex characters';
  if (reason === 'malformed_timestamp') return 'x-patiro-timestamp is not epoch milliseconds';
  return undefined;
}
