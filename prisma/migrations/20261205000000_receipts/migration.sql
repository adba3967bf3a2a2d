-- Receipts: every delivery gets an id when it arrives, and its audit row is keyed by it. A write that
-- runs twice (a spooled delivery replayed after a crash, a batch retried after a COMMIT whose answer
-- was lost) finds its receipt and counts nothing again. Expand only: replicas of the previous release
-- write audit rows without a receipt (NULL) and keep working. The unique index is built by the next
-- migration, concurrently, so that those replicas' writes are not blocked while it is built.
SET LOCAL lock_timeout = '10s';

-- A nullable column without a default: a change of the catalog only, whatever the table's size.
ALTER TABLE "webhook_audit" ADD COLUMN "receipt_id" UUID;

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
