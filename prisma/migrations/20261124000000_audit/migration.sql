-- One row per authenticated webhook delivery, whatever the vendor. No secrets, no body.
CREATE TABLE "webhook_audit" (
    "id" BIGSERIAL NOT NULL,
    "vendor" TEXT NOT NULL,
    "received_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "event_id" TEXT,
    "status_code" SMALLINT NOT NULL,
    "body_sha256" TEXT NOT NULL,
    "source_address" TEXT,

    CONSTRAINT "webhook_audit_pkey" PRIMARY KEY ("id")
);

CREATE INDEX "webhook_audit_received_at_idx" ON "webhook_audit"("received_at");
