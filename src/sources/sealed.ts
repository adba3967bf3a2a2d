import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * Source credentials at rest: AES-256-GCM with a random 96-bit nonce per value and the source id
 * as associated data, so a sealed value copied onto another source's row does not open. A database
 * dump or backup alone does not let anyone forge deliveries.
 *
 * Sealed text: `v1.<key id>.<nonce>.<ciphertext>.<tag>` (base64url parts). The key id (the first
 * 8 hex characters of the key's sha256) picks the key among SOURCES_SECRET_KEY's, so keys can be
 * rotated: the first key seals, every listed key opens.
 */

export class SealError extends Error {
  override readonly name = 'SealError';
}

export interface Keyring {
  /** Seals with the first key. */
  seal(plaintext: string, associatedData: string): string;
  open(sealed: string, associatedData: string): string;
  /** The key id of a sealed value, or undefined when it is not one. */
  keyIdOf(sealed: string): string | undefined;
  has(keyId: string): boolean;
  readonly size: number;
}

export const keyIdOf = (key: Buffer) => createHash('sha256').update(key).digest('hex').slice(0, 8);

const FORMAT = /^v1\.([0-9a-f]{8})\.([\w-]{16})\.([\w-]*)\.([\w-]{22})$/;

export function createKeyring(keys: readonly Buffer[]): Keyring {
  for (const key of keys) if (key.length !== 32) throw new SealError('every key must be 32 bytes');
  const byId = new Map(keys.map((key) => [keyIdOf(key), key]));
  return {
    size: keys.length,
    has: (keyId) => byId.has(keyId),
    keyIdOf: (sealed) => FORMAT.exec(sealed)?.[1],
    seal(plaintext, associatedData) {
      const key = keys[0];
      if (!key) throw new SealError('SOURCES_SECRET_KEY is not set, so source credentials cannot be encrypted');
      const nonce = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, nonce).setAAD(Buffer.from(associatedData));
      const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return ['v1', keyIdOf(key), nonce, ciphertext, cipher.getAuthTag()].map((part) => (typeof part === 'string' ? part : part.toString('base64url'))).join('.');
    },
    open(sealed, associatedData) {
      const match = FORMAT.exec(sealed);
      if (!match) throw new SealError('not a sealed value');
      const [, keyId, nonce, ciphertext, tag] = match;
      const key = byId.get(keyId!);
      if (!key) throw new SealError(`sealed with key ${keyId}, which is not in SOURCES_SECRET_KEY`);
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(nonce!, 'base64url'))
        .setAAD(Buffer.from(associatedData))
        .setAuthTag(Buffer.from(tag!, 'base64url'));
      try {
        return Buffer.concat([decipher.update(Buffer.from(ciphertext!, 'base64url')), decipher.final()]).toString('utf8');
      } catch {
        throw new SealError('the sealed value does not open: it was altered or belongs to another source');
      }
    },
  };
}
