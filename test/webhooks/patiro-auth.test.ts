import { describe, expect, it } from 'vitest';
import { authenticatePatiro, isPatiroConfigured, patiroFailureHint, type PatiroAuthConfig } from '../../src/webhooks/patiro-auth.js';
import { patiroSignature } from '../../src/webhooks/patiro-signature.js';

const TOKEN = 'query-token-0123456789abcdef';
const BASIC = 'patiro:correct horse battery staple';
const SECRET = 'signing-secret-0123456789abcdef';
const body = Buffer.from('{"eventId":"e","eventType":"PatientUpdated"}');
const now = new Date();
const ts = String(now.getTime());
const basicHeader = (credentials: string) => `Basic ${Buffer.from(credentials).toString('base64')}`;

const none: PatiroAuthConfig = { signingSecrets: [], timestampToleranceSeconds: 300 };

describe('authenticatePatiro', () => {
  it('is not configured with no protection set', () => {
    expect(isPatiroConfigured(none)).toBe(false);
    expect(isPatiroConfigured({ ...none, token: TOKEN })).toBe(true);
  });

  it('accepts the right ?token=', () => {
    expect(authenticatePatiro({ ...none, token: TOKEN }, { rawBody: body, headers: {}, token: TOKEN }, now).ok).toBe(true);
  });

  it.each([
    ['missing', undefined, 'missing_token'],
    ['wrong', `${TOKEN}x`, 'bad_token'],
    ['a prefix', TOKEN.slice(0, 10), 'bad_token'],
    ['repeated', [TOKEN, TOKEN], 'bad_token'],
  ])('rejects a %s token', (_label, token, reason) => {
    expect(authenticatePatiro({ ...none, token: TOKEN }, { rawBody: body, headers: {}, token }, now)).toEqual({ ok: false, reason });
  });

  it('accepts the right basic auth credentials', () => {
    const result = authenticatePatiro({ ...none, basicAuth: BASIC }, { rawBody: body, headers: { authorization: basicHeader(BASIC) }, token: undefined }, now);
    expect(result.ok).toBe(true);
  });

  it.each([
    ['missing', undefined, 'missing_basic_auth'],
    ['wrong password', basicHeader('patiro:wrong'), 'bad_basic_auth'],
    ['a bearer token', `Bearer ${TOKEN}`, 'bad_basic_auth'],
  ])('rejects %s basic auth', (_label, authorization, reason) => {
    const headers = authorization === undefined ? {} : { authorization };
    expect(authenticatePatiro({ ...none, basicAuth: BASIC }, { rawBody: body, headers, token: undefined }, now)).toEqual({ ok: false, reason });
  });

  it('requires every configured protection together', () => {
    const all: PatiroAuthConfig = { signingSecrets: [SECRET], timestampToleranceSeconds: 300, token: TOKEN, basicAuth: BASIC };
    const headers = { authorization: basicHeader(BASIC), 'x-patiro-timestamp': ts, 'x-patiro-hmacsha256': patiroSignature(SECRET, ts, body) };
    expect(authenticatePatiro(all, { rawBody: body, headers, token: TOKEN }, now)).toEqual({ ok: true, signedAt: new Date(Number(ts)) });
    expect(authenticatePatiro(all, { rawBody: body, headers, token: undefined }, now)).toEqual({ ok: false, reason: 'missing_token' });
    expect(authenticatePatiro(all, { rawBody: body, headers: { ...headers, authorization: undefined }, token: TOKEN }, now)).toEqual({ ok: false, reason: 'missing_basic_auth' });
    expect(authenticatePatiro(all, { rawBody: body, headers: { ...headers, 'x-patiro-hmacsha256': undefined }, token: TOKEN }, now)).toEqual({ ok: false, reason: 'missing_signature' });
  });

  it('without signing, orders deliveries by the sender timestamp when it is numeric', () => {
    const result = authenticatePatiro({ ...none, token: TOKEN }, { rawBody: body, headers: { 'x-patiro-timestamp': ts }, token: TOKEN }, now);
    expect(result).toEqual({ ok: true, signedAt: new Date(Number(ts)) });
  });

  it('without signing, never takes a sender timestamp later than the receive time plus the tolerance', () => {
    // A far-future timestamp would otherwise freeze the event: no later delivery would be newer.
    const farFuture = String(now.getTime() + 10 * 365 * 86_400_000);
    const result = authenticatePatiro({ ...none, token: TOKEN }, { rawBody: body, headers: { 'x-patiro-timestamp': farFuture }, token: TOKEN }, now);
    expect(result).toEqual({ ok: true, signedAt: new Date(now.getTime() + 300_000) });
    const noTolerance = authenticatePatiro({ ...none, timestampToleranceSeconds: 0, token: TOKEN }, { rawBody: body, headers: { 'x-patiro-timestamp': farFuture }, token: TOKEN }, now);
    expect(noTolerance).toEqual({ ok: true, signedAt: now });
  });
});

describe('patiroFailureHint', () => {
  const config: PatiroAuthConfig = { signingSecrets: ['s'.repeat(32)], timestampToleranceSeconds: 300 };
  const now = new Date('2026-11-14T10:00:00Z');

  it('says a timestamp in seconds looks like seconds, not milliseconds', () => {
    const seconds = String(Math.floor(now.getTime() / 1000) - 2);
    expect(patiroFailureHint('stale_timestamp', config, { 'x-patiro-timestamp': seconds }, now)).toMatch(/looks like seconds, not milliseconds/);
  });

  it('gives the skew of a timestamp in milliseconds that is simply too old', () => {
    const old = String(now.getTime() - 3_600_000);
    expect(patiroFailureHint('stale_timestamp', config, { 'x-patiro-timestamp': old }, now)).toBe('timestamp 3600 s in the past (tolerance 300 s)');
  });
});
