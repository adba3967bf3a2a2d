-- A table busy with old replicas' writes makes this fail within 10 s instead of queueing every query.
SET LOCAL lock_timeout = '10s';

-- Sources: one sender configuration each (one clinic's Patiro webhook, one Physitrack integration).
-- The `default` source is configured by environment variables; its rows (one per vendor) hold only
-- its status and health, never credentials. Every other id is random and unique across vendors.
CREATE TABLE "sources" (
    "vendor" TEXT NOT NULL,
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "tenant_ref" TEXT,
    "status" TEXT NOT NULL DEFAULT 'active',
    -- AES-256-GCM sealed JSON (SOURCES_SECRET_KEY, the id as associated data); NULL for `default`.
    "credentials" TEXT,
    -- What may be shown of the credentials: kind, sha256 fingerprint (8 hex), validity. Never a secret.
    "credential_fingerprints" JSONB NOT NULL DEFAULT '[]',
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_success_at" TIMESTAMPTZ(3),
    "last_failure_at" TIMESTAMPTZ(3),
    "last_failure_reason" TEXT,
    "failures_since_success" INTEGER NOT NULL DEFAULT 0,

    CONSTRAINT "sources_pkey" PRIMARY KEY ("vendor", "id"),
    CONSTRAINT "sources_vendor_check" CHECK ("vendor" IN ('patiro', 'physitrack')),
    CONSTRAINT "sources_status_check" CHECK ("status" IN ('active', 'disabled')),
    CONSTRAINT "sources_id_check" CHECK ("id" ~ '^[a-z2-7]{16,64}$' OR ("id" = 'default' AND "credentials" IS NULL))
);

-- A source's URL names only its id, so ids other than `default` must be unique across vendors.
CREATE UNIQUE INDEX "sources_id_key" ON "sources"("id") WHERE "id" <> 'default';

-- Every stored row carries the source it came from. Existing rows came from the environment's
-- source. The column default exists only for this backfill: the code always names the source.
ALTER TABLE "patiro_events" ADD COLUMN "source_id" TEXT NOT NULL DEFAULT 'default';
ALTER TABLE "patiro_events" ALTER COLUMN "source_id" DROP DEFAULT;
ALTER TABLE "patiro_events" DROP CONSTRAINT "patiro_events_pkey";
ALTER TABLE "patiro_events" ADD CONSTRAINT "patiro_events_pkey" PRIMARY KEY ("source_id", "event_id");

ALTER TABLE "patiro_patients" ADD COLUMN "source_id" TEXT NOT NULL DEFAULT 'default';
ALTER TABLE "patiro_patients" ALTER COLUMN "source_id" DROP DEFAULT;
ALTER TABLE "patiro_patients" DROP CONSTRAINT "patiro_patients_pkey";
ALTER TABLE "patiro_patients" ADD CONSTRAINT "patiro_patients_pkey" PRIMARY KEY ("source_id", "patient_id");

ALTER TABLE "physitrack_deliveries" ADD COLUMN "source_id" TEXT NOT NULL DEFAULT 'default';
ALTER TABLE "physitrack_deliveries" ALTER COLUMN "source_id" DROP DEFAULT;
DROP INDEX "physitrack_deliveries_patient_id_received_at_idx";
CREATE INDEX "physitrack_deliveries_source_id_patient_id_received_at_idx"
    ON "physitrack_deliveries"("source_id", "patient_id", "received_at");

ALTER TABLE "webhook_audit" ADD COLUMN "source_id" TEXT NOT NULL DEFAULT 'default';
ALTER TABLE "webhook_audit" ALTER COLUMN "source_id" DROP DEFAULT;
