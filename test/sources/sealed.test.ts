import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parseCredentials } from '../../src/sources/credentials.js';
import { createKeyring, keyIdOf, SealError } from '../../src/sources/sealed.js';

const first = randomBytes(32);
const second = randomBytes(32);

describe('sealed source credentials (AES-256-GCM)', () => {
  it('opens what it sealed, for the same source id', () => {
    const keyring = createKeyring([first]);
    const sealed = keyring.seal('{"secrets":[]}', 'abcdefghijklmnopqrst');
    expect(sealed).toMatch(new RegExp(`^v1\\.${keyIdOf(first)}\\.`));
    expect(keyring.open(sealed, 'abcdefghijklmnopqrst')).toBe('{"secrets":[]}');
  });

  it('uses a new nonce each time, so the same secret never seals to the same text', () => {
    const keyring = createKeyring([first]);
    expect(keyring.seal('same', 'id')).not.toBe(keyring.seal('same', 'id'));
  });

  it("does not open another source's credentials copied onto this row", () => {
    const keyring = createKeyring([first]);
    const sealed = keyring.seal('secret', 'clinicaaaaaaaaaaaaaa');
    expect(() => keyring.open(sealed, 'clinicbbbbbbbbbbbbbb')).toThrow(SealError);
  });

  it('refuses a value with one character of its ciphertext changed', () => {
    const keyring = createKeyring([first]);
    const parts = keyring.seal('secret-value', 'id').split('.');
    parts[3] = (parts[3]![0] === 'A' ? 'B' : 'A') + parts[3]!.slice(1);
    expect(() => keyring.open(parts.join('.'), 'id')).toThrow(/altered/);
  });

  it('seals with the first key and opens with any listed key (key rotation)', () => {
    const old = createKeyring([first]).seal('secret', 'id');
    const rotated = createKeyring([second, first]);
    expect(rotated.open(old, 'id')).toBe('secret');
    expect(rotated.keyIdOf(rotated.seal('secret', 'id'))).toBe(keyIdOf(second));
  });

  it('names the missing key when the value was sealed with a key not listed', () => {
    const sealed = createKeyring([first]).seal('secret', 'id');
    expect(() => createKeyring([second]).open(sealed, 'id')).toThrow(`sealed with key ${keyIdOf(first)}`);
  });

  it('cannot seal without a key', () => {
    expect(() => createKeyring([]).seal('secret', 'id')).toThrow(/SOURCES_SECRET_KEY/);
  });
});

describe('opened credentials of another shape', () => {
  it('are refused with a message that quotes none of their text', () => {
    // JSON.parse's own message would quote the start of the text: here, a secret.
    expect(() => parseCredentials('supersecret-value-not-json')).toThrow(/^the credentials are not JSON$/);
    expect(() => parseCredentials('{"secrets": []}')).toThrow('the credentials have an unexpected shape');
  });
});
