-- Patient data over its whole life: what erasure and offboarding need, the time a download ended,
-- a source's recent failures, and the read contract (schema receiver_v1). Expand only: replicas of
-- the previous release keep writing as before (the new columns stay NULL in their rows).
SET LOCAL lock_timeout = '10s';

-- The patient an event is about (data.id as sent), written with the event from now on, so that an
-- erasure finds a patient's events by key (its index: the next migration). Rows written before are
-- found by their data.
ALTER TABLE "patiro_events" ADD COLUMN "patient_id" TEXT;

-- When a download reached its end (done, failed or expired): a PMS that was away finds them by time.
ALTER TABLE "physitrack_deliveries" ADD COLUMN "finished_at" TIMESTAMPTZ(3);

-- One row per erasure of a patient or offboarding of a source: what was removed, never whose data it
-- was (a hash of the source and patient id only).
CREATE TABLE "erasures" (
    "id" BIGSERIAL NOT NULL,
    "erased_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- 'patient' or 'source'
    "scope" TEXT NOT NULL,
    "vendor" TEXT NOT NULL,
    "source_id" TEXT NOT NULL,
    "patient_hash" TEXT,
    "counts" JSONB NOT NULL,

    CONSTRAINT "erasures_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "erasures_scope_check" CHECK ("scope" IN ('patient', 'source'))
);

-- A source's recent failures (time, reason, hint), at most 10 kept per source by the writer.
CREATE TABLE "source_failures" (
    "id" BIGSERIAL NOT NULL,
    "vendor" TEXT NOT NULL,
    "source_id" TEXT NOT NULL,
    "at" TIMESTAMPTZ(3) NOT NULL,
    "reason" TEXT NOT NULL,
    "hint" TEXT,

    CONSTRAINT "source_failures_pkey" PRIMARY KEY ("id")
);
CREATE INDEX "source_failures_vendor_source_id_at_idx" ON "source_failures"("vendor", "source_id", "at");
