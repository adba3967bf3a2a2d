-- Stored PDFs, one row per distinct content (sha256): a PDF delivered twice is stored once.
CREATE TABLE "documents" (
    "id" BIGSERIAL NOT NULL,
    "sha256" TEXT NOT NULL,
    "size_bytes" BIGINT NOT NULL,
    "content_type" TEXT NOT NULL,
    "storage" TEXT NOT NULL,
    "storage_key" TEXT,
    "content" BYTEA,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "documents_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "documents_storage_check" CHECK ("storage" IN ('database', 'filesystem'))
);

CREATE UNIQUE INDEX "documents_sha256_key" ON "documents"("sha256");

-- One row per accepted Physitrack notice; the row is also the download job.
CREATE TABLE "physitrack_deliveries" (
    "id" BIGSERIAL NOT NULL,
    "received_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "practitioner_token" TEXT NOT NULL,
    "patient_id" TEXT NOT NULL,
    "file_url" TEXT NOT NULL,
    "program_name" TEXT NOT NULL,
    "program_date" DATE,
    "program_created_at" TIMESTAMPTZ(3),
    "updated" BOOLEAN NOT NULL,
    "download_status" TEXT NOT NULL DEFAULT 'pending',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_attempt_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "deadline_at" TIMESTAMPTZ(3) NOT NULL,
    "last_error" TEXT,
    "last_http_status" SMALLINT,
    "downloaded_at" TIMESTAMPTZ(3),
    "document_id" BIGINT,
    "locked_by" TEXT,
    "locked_until" TIMESTAMPTZ(3),

    CONSTRAINT "physitrack_deliveries_pkey" PRIMARY KEY ("id"),
    CONSTRAINT "physitrack_deliveries_download_status_check"
        CHECK ("download_status" IN ('pending', 'downloading', 'done', 'failed', 'expired')),
    CONSTRAINT "physitrack_deliveries_document_id_fkey" FOREIGN KEY ("document_id")
        REFERENCES "documents"("id") ON DELETE SET NULL ON UPDATE CASCADE
);

-- The worker's claim: due rows only. A downloading row's next_attempt_at is its lease expiry,
-- so rows of a crashed worker become due again without a second condition.
CREATE INDEX "physitrack_deliveries_due_idx" ON "physitrack_deliveries"("next_attempt_at")
    WHERE "download_status" IN ('pending', 'downloading');
CREATE INDEX "physitrack_deliveries_patient_id_received_at_idx" ON "physitrack_deliveries"("patient_id", "received_at");
CREATE INDEX "physitrack_deliveries_received_at_idx" ON "physitrack_deliveries"("received_at");
CREATE INDEX "physitrack_deliveries_document_id_idx" ON "physitrack_deliveries"("document_id");
