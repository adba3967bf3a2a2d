-- Receipts: every delivery gets an id when it arrives, and its audit row is keyed by it. A write that
-- runs twice (a spooled delivery replayed after a crash, a batch retried after a COMMIT whose answer
-- was lost) finds its receipt and counts nothing again. Expand only: replicas of the previous release
-- write audit rows without a receipt (NULL, which a unique index lets repeat) and keep working.
SET LOCAL lock_timeout = '10s';

ALTER TABLE "webhook_audit" ADD COLUMN "receipt_id" UUID;
CREATE UNIQUE INDEX "webhook_audit_receipt_id_key" ON "webhook_audit"("receipt_id");

-- The replicas running now, and the SOURCES_SECRET_KEY key ids each can open: the CLI refuses to seal
-- credentials with a key that a running replica lacks. Written by each replica every 15 s; a row not
-- seen for a minute is a replica that is gone.
CREATE TABLE "receiver_replicas" (
    "id" TEXT NOT NULL,
    "hostname" TEXT NOT NULL,
    "pid" INTEGER NOT NULL,
    "started_at" TIMESTAMPTZ(3) NOT NULL,
    "seen_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "key_ids" TEXT[] NOT NULL,

    CONSTRAINT "receiver_replicas_pkey" PRIMARY KEY ("id")
);
