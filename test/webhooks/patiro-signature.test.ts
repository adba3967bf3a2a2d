import { describe, expect, it } from 'vitest';
import { patiroSignature, verifyPatiroSignature, type SignatureInput } from '../../src/webhooks/patiro-signature.js';

// Patiro's document: "Verify webhook signature", steps 1 to 4.
const DOC_SECRET = 'kI6JBfFdMwOqdxts0bNBKuq6Uqtr6MEcmCSltJItMXqHNTiJbcbJ';
const DOC_TIMESTAMP = '1774872805635';
const DOC_BODY = Buffer.from('{ "eventId": ... }');
const DOC_SIGNATURE = 'f2c967cc0fad87be87d7fe2f1d379ccb50ac0433a8a32b7b8a6b2bfa88105120';

const now = new Date(Number(DOC_TIMESTAMP) + 1000);

/** The document's delivery, valid as is; each test changes exactly one thing. */
function docInput(change: Partial<SignatureInput> = {}): SignatureInput {
  return { rawBody: DOC_BODY, signature: DOC_SIGNATURE, timestamp: DOC_TIMESTAMP, secrets: [DOC_SECRET], toleranceSeconds: 300, now, ...change };
}

describe('patiroSignature', () => {
  it("matches the known answer from Patiro's document", () => {
    expect(patiroSignature(DOC_SECRET, DOC_TIMESTAMP, DOC_BODY)).toBe(DOC_SIGNATURE);
  });
});

describe('verifyPatiroSignature', () => {
  it("accepts the document's delivery and returns its signed time", () => {
    expect(verifyPatiroSignature(docInput())).toEqual({ ok: true, signedAt: new Date(Number(DOC_TIMESTAMP)) });
  });

  it('accepts upper-case hex', () => {
    expect(verifyPatiroSignature(docInput({ signature: DOC_SIGNATURE.toUpperCase() })).ok).toBe(true);
  });

  it('accepts the second of two rotation secrets', () => {
    expect(verifyPatiroSignature(docInput({ secrets: ['a-newer-secret-not-yet-used-by-patiro', DOC_SECRET] })).ok).toBe(true);
  });

  it('rejects a signature made with another secret', () => {
    expect(verifyPatiroSignature(docInput({ secrets: ['another-secret-entirely-0123456789'] }))).toEqual({ ok: false, reason: 'bad_signature' });
  });

  it('rejects a body with one byte changed', () => {
    const tampered = Buffer.from(DOC_BODY);
    tampered[2] = tampered[2]! ^ 1;
    expect(verifyPatiroSignature(docInput({ rawBody: tampered }))).toEqual({ ok: false, reason: 'bad_signature' });
  });

  it('rejects a body with a trailing newline added', () => {
    expect(verifyPatiroSignature(docInput({ rawBody: Buffer.concat([DOC_BODY, Buffer.from('\n')]) })).ok).toBe(false);
  });

  it('rejects a signature over another timestamp', () => {
    expect(verifyPatiroSignature(docInput({ timestamp: String(Number(DOC_TIMESTAMP) + 1) }))).toEqual({ ok: false, reason: 'bad_signature' });
  });

  it('rejects a timestamp older than the tolerance', () => {
    expect(verifyPatiroSignature(docInput({ now: new Date(Number(DOC_TIMESTAMP) + 301_000) }))).toEqual({ ok: false, reason: 'stale_timestamp' });
  });

  it('rejects a timestamp further in the future than the tolerance', () => {
    expect(verifyPatiroSignature(docInput({ now: new Date(Number(DOC_TIMESTAMP) - 301_000) }))).toEqual({ ok: false, reason: 'stale_timestamp' });
  });

  it('accepts a timestamp just inside the tolerance', () => {
    expect(verifyPatiroSignature(docInput({ now: new Date(Number(DOC_TIMESTAMP) + 300_000) })).ok).toBe(true);
  });

  it('accepts any timestamp age when the tolerance is 0', () => {
    expect(verifyPatiroSignature(docInput({ toleranceSeconds: 0, now: new Date(Number(DOC_TIMESTAMP) + 86_400_000 * 365) })).ok).toBe(true);
  });

  it('rejects a missing timestamp', () => {
    expect(verifyPatiroSignature(docInput({ timestamp: undefined }))).toEqual({ ok: false, reason: 'missing_timestamp' });
  });

  it('rejects a non-numeric timestamp', () => {
    expect(verifyPatiroSignature(docInput({ timestamp: '2026-03-30T12:00:00Z' }))).toEqual({ ok: false, reason: 'malformed_timestamp' });
  });

  it('rejects a timestamp in seconds that does not match the signature', () => {
    expect(verifyPatiroSignature(docInput({ timestamp: DOC_TIMESTAMP.slice(0, 10), toleranceSeconds: 0 })).ok).toBe(false);
  });

  it('rejects a huge timestamp', () => {
    expect(verifyPatiroSignature(docInput({ timestamp: '9'.repeat(40) }))).toEqual({ ok: false, reason: 'malformed_timestamp' });
  });

  it('rejects a missing signature', () => {
    expect(verifyPatiroSignature(docInput({ signature: undefined }))).toEqual({ ok: false, reason: 'missing_signature' });
  });

  it('rejects a signature that is not hex', () => {
    expect(verifyPatiroSignature(docInput({ signature: `${DOC_SIGNATURE.slice(0, 63)}g` }))).toEqual({ ok: false, reason: 'malformed_signature' });
  });

  it('rejects a signature of the wrong length', () => {
    expect(verifyPatiroSignature(docInput({ signature: DOC_SIGNATURE.slice(0, 62) }))).toEqual({ ok: false, reason: 'malformed_signature' });
  });

  it('rejects a signature header sent twice', () => {
    expect(verifyPatiroSignature(docInput({ signature: [DOC_SIGNATURE, DOC_SIGNATURE] }))).toEqual({ ok: false, reason: 'malformed_signature' });
  });

  it('verifies pretty-printed JSON exactly as sent', () => {
    const pretty = Buffer.from('{\n  "eventId": "e-1",\n  "eventType": "PatientUpdated"\n}\n');
    const signature = patiroSignature(DOC_SECRET, DOC_TIMESTAMP, pretty);
    expect(verifyPatiroSignature(docInput({ rawBody: pretty, signature })).ok).toBe(true);
    const compact = Buffer.from(JSON.stringify(JSON.parse(pretty.toString())));
    expect(verifyPatiroSignature(docInput({ rawBody: compact, signature })).ok).toBe(false);
  });
});
