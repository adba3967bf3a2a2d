import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import { poolOf, type Database } from '../db/client.js';

// This module owns the `consumers` table: who may read the internal HTTP API. A consumer's token is
// `wrc_<id>_<secret>`, shown once when it is made or rotated; the table keeps sha256(secret) only.
// The id finds the row, and the secret's hash is compared in constant time.

export type ConsumerStatus = 'active' | 'disabled';

export interface ConsumerRow {
  id: string;
  name: string;
  allSources: boolean;
  sourceIds: string[];
  status: ConsumerStatus;
  createdAt: Date;
  updatedAt: Date;
  lastSeenAt: Date | null;
  previousValidUntil: Date | null;
}

const COLUMNS = `id, name, all_sources AS "allSources", source_ids AS "sourceIds", status, created_at AS "createdAt", updated_at AS "updatedAt",
  last_seen_at AS "lastSeenAt", previous_valid_until AS "previousValidUntil"`;

const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const TOKEN = /^wrc_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$/;

function newId(): string {
  return [...randomBytes(16)].map((b) => ID_ALPHABET[b % 32]).join('');
}

const hashOf = (secret: string) => createHash('sha256').update(secret, 'utf8').digest('hex');

function newToken(id: string): { token: string; hash: string } {
  const secret = randomBytes(32).toString('base64url');
  return { token: `wrc_${id}_${secret}`, hash: hashOf(secret) };
}

export class ConsumerError extends Error {
  override readonly name = 'ConsumerError';
}

export interface AddConsumerInput {
  name: string;
  /** The sources it may read; absent: every source. */
  sourceIds?: readonly string[];
}

/** Makes a consumer; the token is returned here and never again. */
export async function addConsumer(db: Database, { name, sourceIds }: AddConsumerInput): Promise<{ id: string; token: string; row: ConsumerRow }> {
  if (name.trim() === '' || name.length > 200) throw new ConsumerError('the name must be 1 to 200 characters');
  if (sourceIds !== undefined && sourceIds.length === 0) throw new ConsumerError('give at least one source, or none for every source');
  const id = newId();
  const { token, hash } = newToken(id);
  const { rows } = await poolOf(db).query<ConsumerRow>(
    `INSERT INTO consumers (id, name, token_hash, all_sources, source_ids) VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
    [id, name.trim(), hash, sourceIds === undefined, [...new Set(sourceIds ?? [])]],
  );
  return { id, token, row: rows[0]! };
}

export async function listConsumers(db: Database): Promise<ConsumerRow[]> {
  return (await poolOf(db).query<ConsumerRow>(`SELECT ${COLUMNS} FROM consumers ORDER BY created_at, id`)).rows;
}

export async function findConsumer(db: Database, id: string): Promise<ConsumerRow | undefined> {
  return (await poolOf(db).query<ConsumerRow>(`SELECT ${COLUMNS} FROM consumers WHERE id = $1`, [id])).rows[0];
}

export async function setConsumerStatus(db: Database, id: string, status: ConsumerStatus): Promise<ConsumerRow | undefined> {
  const { rows } = await poolOf(db).query<ConsumerRow>(`UPDATE consumers SET status = $2, updated_at = now() WHERE id = $1 RETURNING ${COLUMNS}`, [id, status]);
  return rows[0];
}

/**
 * A new token; the old one keeps working for `keepOldMs` (0: not at all), so an importer can be
 * given the new one without a gap.
 */
export async function rotateConsumer(db: Database, id: string, keepOldMs: number): Promise<{ token: string; row: ConsumerRow } | undefined> {
  const { token, hash } = newToken(id);
  const { rows } = await poolOf(db).query<ConsumerRow>(
    `UPDATE consumers SET previous_token_hash = CASE WHEN $3::bigint > 0 THEN token_hash END,
       previous_valid_until = CASE WHEN $3::bigint > 0 THEN now() + make_interval(secs => $3::bigint / 1000.0) END,
       token_hash = $2, updated_at = now()
     WHERE id = $1 RETURNING ${COLUMNS}`,
    [id, hash, keepOldMs],
  );
  return rows[0] && { token, row: rows[0] };
}

export interface Caller {
  id: string;
  scope: { all: true } | { all: false; sourceIds: string[] };
}

const AUTHENTICATE = `SELECT id, all_sources, source_ids, token_hash, previous_token_hash, previous_valid_until > now() AS previous_valid
  FROM consumers WHERE id = $1 AND status = 'active'`;

const equalHex = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));

/**
 * The consumer a bearer token belongs to, if it is active and the token is its current one (or the
 * previous one, within its grace). Undefined for anything else, without saying which.
 */
export async function authenticate(pool: pg.Pool, token: string): Promise<Caller | undefined> {
  // Not a token at all (the format is no secret): refused without asking the database.
  const match = TOKEN.exec(token);
  if (!match) return undefined;
  const hash = hashOf(match[2]!);
  // Looked up by id, and the hash compared even for an unknown id: the time does not tell them apart.
  const { rows } = await pool.query<{ id: string; all_sources: boolean; source_ids: string[]; token_hash: string; previous_token_hash: string | null; previous_valid: boolean | null }>(
    { name: 'consumer_authenticate', text: AUTHENTICATE, values: [match[1]] },
  );
  const row = rows[0];
  const current = equalHex(hash, row?.token_hash ?? '0'.repeat(64));
  const previous = equalHex(hash, row?.previous_token_hash ?? '0'.repeat(64)) && row?.previous_valid === true;
  if (!row || !(current || previous)) return undefined;
  return { id: row.id, scope: row.all_sources ? { all: true } : { all: false, sourceIds: row.source_ids } };
}

/** At most once a minute per consumer: `consumers list` shows when each last read. */
export const TOUCH = `UPDATE consumers SET last_seen_at = now() WHERE id = $1 AND (last_seen_at IS NULL OR last_seen_at < now() - interval '1 minute')`;
