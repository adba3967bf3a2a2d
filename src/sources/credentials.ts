import { createHash, randomBytes } from 'node:crypto';
import type { Vendor } from '../metrics.js';

/** The environment's source: served on /webhooks/<vendor> and /webhooks/<vendor>/default. */
export const DEFAULT_SOURCE_ID = 'default';

/** 20 characters of base32 (100 random bits): short, URL-safe, unguessable. */
export const SOURCE_ID_PATTERN = /^[a-z2-7]{16,64}$/;

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

export function newSourceId(): string {
  return [...randomBytes(20)].map((byte) => BASE32[byte & 31]).join('');
}

/**
 * 32 random bytes as 64 hex characters: printable, and safe to paste anywhere (base64url may
 * begin with "-", which a command line takes for an option).
 */
export function newSecret(): string {
  return randomBytes(32).toString('hex');
}

export const MIN_SECRET_LENGTH = 16;

/** One signing secret (Patiro) or api key (Physitrack), valid until `notAfter` when set. */
export interface SecretEntry {
  value: string;
  addedAt: string;
  /** ISO time after which it is no longer accepted (set by a rotation), or null. */
  notAfter: string | null;
}

/** What is sealed in `sources.credentials`. */
export interface Credentials {
  secrets: SecretEntry[];
  /** Patiro only: the required ?token= value, when the source was made --with-token. */
  token: string | null;
}

export type SecretKind = 'signingSecret' | 'apiKey' | 'token';

/** What may be shown of one credential: never the value, only a short hash of it. */
export interface Fingerprint {
  kind: SecretKind;
  fingerprint: string;
  addedAt: string;
  notAfter: string | null;
}

export const secretKindOf = (vendor: Vendor): SecretKind => (vendor === 'patiro' ? 'signingSecret' : 'apiKey');

export const fingerprintOf = (value: string) => createHash('sha256').update(value).digest('hex').slice(0, 8);

export function fingerprintsOf(vendor: Vendor, credentials: Credentials): Fingerprint[] {
  const kind = secretKindOf(vendor);
  const secrets = credentials.secrets.map((s) => ({ kind, fingerprint: fingerprintOf(s.value), addedAt: s.addedAt, notAfter: s.notAfter }));
  if (credentials.token === null) return secrets;
  return [...secrets, { kind: 'token' as const, fingerprint: fingerprintOf(credentials.token), addedAt: credentials.secrets[0]?.addedAt ?? '', notAfter: null }];
}

/** The secrets accepted at `nowMs`. */
export function activeSecrets(secrets: readonly SecretEntry[], nowMs: number): string[] {
  return secrets.filter((s) => s.notAfter === null || Date.parse(s.notAfter) > nowMs).map((s) => s.value);
}

/**
 * A rotation: the new secret is added, every secret still valid stays valid for `keepOldMs` more
 * (or less, if it was already due to end sooner), and those already past are dropped.
 */
export function rotate(credentials: Credentials, newValue: string, now: Date, keepOldMs: number): Credentials {
  const until = now.getTime() + keepOldMs;
  const kept = credentials.secrets
    .filter((s) => keepOldMs > 0 && (s.notAfter === null || Date.parse(s.notAfter) > now.getTime()))
    .map((s) => ({ ...s, notAfter: new Date(Math.min(until, s.notAfter === null ? until : Date.parse(s.notAfter))).toISOString() }));
  return { ...credentials, secrets: [...kept, { value: newValue, addedAt: now.toISOString(), notAfter: null }] };
}

/** Parses what `sources.credentials` opened to, refusing anything of another shape. */
export function parseCredentials(text: string): Credentials {
  let value: Partial<Credentials>;
  try {
    value = JSON.parse(text) as Partial<Credentials>;
  } catch {
    // JSON.parse's message quotes the text it read, and this text holds the secrets.
    throw new Error('the credentials are not JSON');
  }
  const secrets = Array.isArray(value.secrets) ? value.secrets : [];
  const valid = secrets.every((s) => typeof s?.value === 'string' && typeof s.addedAt === 'string' && (s.notAfter === null || typeof s.notAfter === 'string'));
  if (!valid || secrets.length === 0 || (value.token !== null && typeof value.token !== 'string')) throw new Error('the credentials have an unexpected shape');
  return { secrets, token: value.token ?? null };
}
