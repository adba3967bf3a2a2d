import { createHmac, timingSafeEqual } from 'node:crypto';

export type SignatureFailure = 'missing_signature' | 'malformed_signature' | 'missing_timestamp' | 'malformed_timestamp' | 'stale_timestamp' | 'bad_signature';

export type SignatureResult = { ok: true; signedAt: Date } | { ok: false; reason: SignatureFailure };

export interface SignatureInput {
  rawBody: Buffer;
  /** The x-patiro-hmacsha256 header as received. */
  signature: string | string[] | undefined;
  /** The x-patiro-timestamp header as received: epoch milliseconds. */
  timestamp: string | string[] | undefined;
  secrets: readonly string[];
  /** 0 disables the check. */
  toleranceSeconds: number;
  now: Date;
}

const HEX_SHA256 = /^[0-9a-fA-F]{64}$/;
const EPOCH_MILLIS = /^\d{1,15}$/;

/** hex HMAC-SHA256(secret, "<timestamp>:<raw body bytes>"), as Patiro's document specifies. */
export function patiroSignature(secret: string, timestamp: string, rawBody: Buffer): string {
  return createHmac('sha256', secret).update(`${timestamp}:`).update(rawBody).digest('hex');
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? undefined : value;
}

/**
 * Verifies the exact bytes received, before anything parses them. Pure: no I/O, the clock is passed in.
 * A repeated header is refused rather than guessed at.
 */
export function verifyPatiroSignature(input: SignatureInput): SignatureResult {
  const signature = single(input.signature);
  const timestamp = single(input.timestamp);
  if (input.signature === undefined) return { ok: false, reason: 'missing_signature' };
  if (signature === undefined || !HEX_SHA256.test(signature)) return { ok: false, reason: 'malformed_signature' };
  if (input.timestamp === undefined) return { ok: false, reason: 'missing_timestamp' };
  if (timestamp === undefined || !EPOCH_MILLIS.test(timestamp)) return { ok: false, reason: 'malformed_timestamp' };

  const signedAtMs = Number(timestamp);
  if (input.toleranceSeconds > 0 && Math.abs(input.now.getTime() - signedAtMs) > input.toleranceSeconds * 1000) {
    return { ok: false, reason: 'stale_timestamp' };
  }
  const given = Buffer.from(signature.toLowerCase(), 'hex');
  let matched = false;
  for (const secret of input.secrets) {
    const expected = Buffer.from(patiroSignature(secret, timestamp, input.rawBody), 'hex');
    matched = timingSafeEqual(given, expected) || matched;
  }
  if (!matched) return { ok: false, reason: 'bad_signature' };
  return { ok: true, signedAt: new Date(signedAtMs) };
}
