import { randomUUID } from 'node:crypto';
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

/**
 * Given to every delivery when it arrives. Its audit row is keyed by the id, so a write that runs
 * again (a spooled delivery replayed after a crash, a batch retried after a COMMIT whose answer was
 * lost) finds it and counts nothing twice. Its time is the delivery's receive time wherever it is
 * written, however late: received_at, the audit row's time, the PDF deadline.
 */
export interface Receipt {
  id: string;
  receivedAt: Date;
}

export const newReceipt = (receivedAt = new Date()): Receipt => ({ id: randomUUID(), receivedAt });

const COLUMNS = '(source_id, vendor, event_id, status_code, body_sha256, source_address)';
const RECEIPT_COLUMNS = '(receipt_id, received_at, source_id, vendor, event_id, status_code, body_sha256, source_address)';

/**
 * The audit insert for a vendor's batch statement, which writes its audit rows in the same
 * statement (and commit) as its data. `select` yields the columns in this order:
 * source_id, vendor, event_id, status_code, body_sha256, source_address.
 */
export function auditInsertSql(select: string): string {
  return `INSERT INTO webhook_audit ${COLUMNS} ${select}`;
}

/**
 * The audit insert of stored deliveries, keyed by their receipts. `select` yields receipt_id,
 * received_at, then the columns of auditInsertSql in its order; `onConflict` says what a receipt
 * already recorded does (nothing, or fail the statement so that it runs again and finds it).
 */
export function receiptsInsertSql(select: string, onConflict: 'ON CONFLICT (receipt_id) DO NOTHING' | '' = ''): string {
  return `INSERT INTO webhook_audit ${RECEIPT_COLUMNS} ${select} ${onConflict}`;
}

/** The unique index a receipt recorded by two writes at once runs into: that write runs again. */
export const RECEIPT_CONSTRAINT = 'webhook_audit_receipt_id_key';

/**
 * Records an authenticated delivery that was not stored (bad payload, database trouble). Never
 * with its receipt: a write of the same delivery may still commit late, and must count it then.
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
