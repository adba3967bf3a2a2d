import type { FastifyBaseLogger } from 'fastify';
import type { Database } from './db/client.js';

export interface AuditEntry {
  sourceId: string;
  vendor: 'patiro' | 'physitrack';
  eventId: string | null;
  statusCode: number;
  bodySha256: string;
  sourceAddress: string | null;
}

const COLUMNS = '(source_id, vendor, event_id, status_code, body_sha256, source_address)';

/**
 * The audit insert for a vendor's batch statement, which writes its audit rows in the same
 * statement (and commit) as its data. `select` yields the columns in this order:
 * source_id, vendor, event_id, status_code, body_sha256, source_address.
 */
export function auditInsertSql(select: string): string {
  return `INSERT INTO webhook_audit ${COLUMNS} ${select}`;
}

/**
 * Records an authenticated delivery that was not stored (bad payload, database trouble).
 * Best effort: the answer to the sender does not wait on it, and its failure only logs.
 */
export function recordRefusedDelivery(db: Database, entry: AuditEntry, log: FastifyBaseLogger): void {
  db.$executeRawUnsafe(
    auditInsertSql('VALUES ($1, $2, $3, $4, $5, $6)'),
    entry.sourceId,
    entry.vendor,
    entry.eventId,
    entry.statusCode,
    entry.bodySha256,
    entry.sourceAddress,
  ).catch((err: unknown) => log.warn({ err }, 'could not record the refused delivery in webhook_audit'));
}
