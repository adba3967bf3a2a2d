import type { Database } from '../db/client.js';
import type { Vendor } from '../metrics.js';
import {
  DEFAULT_SOURCE_ID,
  fingerprintsOf,
  MIN_SECRET_LENGTH,
  newSecret,
  newSourceId,
  parseCredentials,
  rotate,
  type Credentials,
} from './credentials.js';
import { runningReplicas } from './replicas.js';
import { createKeyring, keyIdOf, type Keyring } from './sealed.js';
import { findSources, insertSource, replaceCredentials, sealingKeyIds, type SourceRow } from './sources-table.js';

// What the operator CLI does to sources, as functions (the CLI prints; tests and the bench call).

export class SourceChangeError extends Error {
  override readonly name = 'SourceChangeError';
}

export function webhookPath(vendor: Vendor, id: string): string {
  return id === DEFAULT_SOURCE_ID ? `/webhooks/${vendor}` : `/webhooks/${vendor}/${id}`;
}

function checkSecret(secret: string): string {
  const trimmed = secret.trim();
  if (trimmed.length < MIN_SECRET_LENGTH) throw new SourceChangeError(`the secret must be at least ${MIN_SECRET_LENGTH} characters`);
  if (/[\s,]/.test(trimmed)) throw new SourceChangeError('the secret must not contain whitespace or commas');
  return trimmed;
}

export interface AddSourceInput {
  vendor: Vendor;
  name: string;
  tenantRef?: string | null;
  /** Patiro: also require a ?token= in the webhook URL. */
  withToken?: boolean;
  /** An existing secret (typed into the vendor's settings before the source existed); else one is generated. */
  secret?: string;
  now?: Date;
}

export interface AddedSource {
  row: SourceRow;
  /** Shown once: the signing secret (Patiro) or api key (Physitrack). */
  secret: string;
  token: string | null;
}

/**
 * Refuses to seal with keys that could not open what the table already holds: then they are not
 * the service's keys, and the service could not open this source either (a CLI run with another
 * SOURCES_SECRET_KEY, or none, than the service's).
 */
async function checkSameKeys(db: Database, keyring: Keyring, keys: readonly Buffer[]): Promise<void> {
  const foreign = (await sealingKeyIds(db)).filter((keyId) => !keyring.has(keyId));
  if (foreign.length > 0) {
    throw new SourceChangeError(
      `SOURCES_SECRET_KEY does not include key ${foreign.join(', ')}, which sealed the sources already in this database; ` +
        `use the service's SOURCES_SECRET_KEY (the service could not open a source sealed with this one)`,
    );
  }
  await checkReplicasCanOpen(db, keys);
}

/**
 * Refuses to seal with a key that a running replica lacks: that replica would answer 503 for the
 * source until restarted with the key. During a key rotation, every replica must list the new key
 * (second) before the CLI seals with it (first).
 */
async function checkReplicasCanOpen(db: Database, keys: readonly Buffer[]): Promise<void> {
  const sealing = keyIdOf(keys[0]!);
  const lacking = (await runningReplicas(db)).filter((r) => !r.keyIds.includes(sealing));
  if (lacking.length === 0) return;
  throw new SourceChangeError(
    `the running replica(s) ${lacking.map((r) => r.id).join(', ')} cannot open key ${sealing}, the first of this SOURCES_SECRET_KEY, ` +
      'which would seal the credentials; add the key to their SOURCES_SECRET_KEY (after the one they have) and restart them first',
  );
}

export async function addSource(db: Database, keys: readonly Buffer[], input: AddSourceInput): Promise<AddedSource> {
  const keyring = createKeyring(keys);
  await checkSameKeys(db, keyring, keys);
  const now = (input.now ?? new Date()).toISOString();
  const secret = input.secret === undefined ? newSecret() : checkSecret(input.secret);
  const token = input.withToken && input.vendor === 'patiro' ? newSecret() : null;
  const credentials: Credentials = { secrets: [{ value: secret, addedAt: now, notAfter: null }], token };
  const id = newSourceId();
  const row = await insertSource(db, {
    vendor: input.vendor,
    id,
    name: input.name,
    tenantRef: input.tenantRef ?? null,
    credentials: keyring.seal(JSON.stringify(credentials), id),
    fingerprints: fingerprintsOf(input.vendor, credentials),
  });
  return { row, secret, token };
}

export interface RotatedSource {
  row: SourceRow;
  secret: string;
  /** When the secrets valid before the rotation stop being accepted (null: at once). */
  oldValidUntil: Date | null;
}

/** Adds a secret; the ones valid until now stay valid for `keepOldMs`, then only the new one is. */
export async function rotateSource(db: Database, keys: readonly Buffer[], id: string, options: { keepOldMs: number; secret?: string; now?: Date }): Promise<RotatedSource> {
  if (id === DEFAULT_SOURCE_ID) throw new SourceChangeError('the default source is configured by environment variables; rotate those instead');
  const keyring = createKeyring(keys);
  await checkSameKeys(db, keyring, keys);
  const secret = options.secret === undefined ? newSecret() : checkSecret(options.secret);
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const [current] = await findSources(db, id);
    if (!current?.credentials) throw new SourceChangeError(`no source ${id}`);
    const now = options.now ?? new Date();
    const rotated = rotate(parseCredentials(keyring.open(current.credentials, id)), secret, now, options.keepOldMs);
    const row = await replaceCredentials(db, id, current.credentials, keyring.seal(JSON.stringify(rotated), id), fingerprintsOf(current.vendor, rotated));
    const oldValidUntil = options.keepOldMs > 0 ? new Date(now.getTime() + options.keepOldMs) : null;
    if (row) return { row, secret, oldValidUntil };
  }
  throw new SourceChangeError(`source ${id} kept changing while it was being rotated; try again`);
}
