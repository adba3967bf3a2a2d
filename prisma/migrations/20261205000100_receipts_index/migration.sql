-- migrate: no transaction
-- The receipts' unique index, built CONCURRENTLY: a plain CREATE INDEX would hold off every write to
-- webhook_audit (every delivery writes one) for the whole build, and replicas of the previous release,
-- which have no spool, would answer 503 meanwhile. CONCURRENTLY cannot run in a transaction, so this
-- file runs statement by statement, and must be safe to run again: a build that failed half-way
-- leaves an invalid index behind, which is dropped first (under a short lock_timeout: DROP INDEX locks
-- the table; a busy one fails the run, which is retried).
SET lock_timeout = '10s';
DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'webhook_audit_receipt_id_key' AND NOT i.indisvalid) THEN DROP INDEX "webhook_audit_receipt_id_key"; END IF; END $$;
RESET lock_timeout;
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "webhook_audit_receipt_id_key" ON "webhook_audit"("receipt_id");
