import type { FastifyBaseLogger } from 'fastify';
import type { Database } from './db/client.js';

export interface AuditEntry {
  vendor: 'patiro' | 'physitrack';
  eventId: string | null;
  statusCode: number;
  bodySha256: string;
  sourceAddress: string | null;
}

/**
 * Records an authenticated delivery that was not stored (bad payload, database trouble).
 * Best effort: the answer to the sender does not wait on it, and its failure only logs.
 * Successful deliveries write their audit row in the same statement as their data.
 */
export function recordRefusedDelivery(db: Database, entry: AuditEntry, log: FastifyBaseLogger): void {
  db.$executeRawUnsafe(
    `INSERT INTO webhook_audit (vendor, event_id, status_code, body_sha256, source_address) VALUES ($1, $2, $3, $4, $5)`,
    entry.vendor,
    entry.eventId,
    entry.statusCode,
    entry.bodySha256,
    entry.sourceAddress,
  ).catch((err: unknown) => log.warn({ err }, 'could not record the refused delivery in webhook_audit'));
}
