-- Physitrack notices: one delivery per notice however often it is sent, and programs with their versions.
-- A table busy with old replicas' writes makes this fail within 10 s instead of queueing every query.
SET LOCAL lock_timeout = '10s';

-- A program's key within its source and patient. Physitrack sends no program id; date_iso is "the
-- date on which the program was created", so it stays the same across updates while the name may
-- change. When date_iso is unreadable, the calendar date and the name stand in for it. Hashed, so
-- that long names fit the index; the one definition serves the service and this migration.
CREATE FUNCTION "physitrack_program_key"(created_at TIMESTAMPTZ, program_date DATE, program_name TEXT) RETURNS TEXT
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT encode(sha256(convert_to(CASE
    WHEN created_at IS NOT NULL THEN 'created:' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')
    ELSE 'date:' || coalesce(to_char(program_date, 'YYYY-MM-DD'), '') || ':name:' || program_name
  END, 'UTF8')), 'hex')
$$;

CREATE TABLE "physitrack_programs" (
    "id" BIGSERIAL NOT NULL,
    "source_id" TEXT NOT NULL,
    "patient_id" TEXT NOT NULL,
    "program_key" TEXT NOT NULL,
    "practitioner_token" TEXT NOT NULL,
    "program_created_at" TIMESTAMPTZ(3),
    "program_date" DATE,
    "program_name" TEXT NOT NULL,
    "versions" INTEGER NOT NULL DEFAULT 1,
    "latest_delivery_id" BIGINT NOT NULL,
    "current_document_id" BIGINT,
    "current_delivery_id" BIGINT,
    "first_notice_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "physitrack_programs_pkey" PRIMARY KEY ("id")
);

CREATE UNIQUE INDEX "physitrack_programs_source_id_patient_id_program_key_key"
    ON "physitrack_programs"("source_id", "patient_id", "program_key");
-- The PMS's import: WHERE updated_at > $last_seen.
CREATE INDEX "physitrack_programs_updated_at_idx" ON "physitrack_programs"("updated_at");

-- The same notice again (same source and file_url) finds its delivery through notice_key, the
-- sha256 of file_url (a URL can be longer than an index entry may be). Deliveries stored twice
-- before this migration are all kept: the newest of each pair gets the key, the others none.
ALTER TABLE "physitrack_deliveries"
    ADD COLUMN "notice_key" TEXT,
    ADD COLUMN "notice_count" INTEGER NOT NULL DEFAULT 1,
    ADD COLUMN "last_notice_at" TIMESTAMPTZ(3),
    ADD COLUMN "program_id" BIGINT;

UPDATE "physitrack_deliveries" d SET
    "last_notice_at" = d."received_at",
    "notice_key" = CASE WHEN d."id" = newest."id" THEN encode(sha256(convert_to(d."file_url", 'UTF8')), 'hex') END
FROM (SELECT "source_id", "file_url", max("id") AS "id" FROM "physitrack_deliveries" GROUP BY 1, 2) newest
WHERE newest."source_id" = d."source_id" AND newest."file_url" = d."file_url";

ALTER TABLE "physitrack_deliveries" ALTER COLUMN "last_notice_at" SET NOT NULL,
    ALTER COLUMN "last_notice_at" SET DEFAULT CURRENT_TIMESTAMP;
CREATE UNIQUE INDEX "physitrack_deliveries_source_id_notice_key_key" ON "physitrack_deliveries"("source_id", "notice_key");

-- Every existing delivery gets its program: one per key, its latest token and name, its versions,
-- and as current document the newest of its deliveries that was downloaded.
WITH keyed AS (
    SELECT d.*, "physitrack_program_key"(d."program_created_at", d."program_date", d."program_name") AS "program_key"
    FROM "physitrack_deliveries" d
), programs AS (
    INSERT INTO "physitrack_programs" ("source_id", "patient_id", "program_key", "practitioner_token", "program_created_at",
        "program_date", "program_name", "versions", "latest_delivery_id", "current_document_id", "current_delivery_id",
        "first_notice_at", "updated_at")
    SELECT "source_id", "patient_id", "program_key",
        (array_agg("practitioner_token" ORDER BY "id" DESC))[1],
        (array_agg("program_created_at" ORDER BY "id" DESC))[1],
        (array_agg("program_date" ORDER BY "id" DESC))[1],
        (array_agg("program_name" ORDER BY "id" DESC))[1],
        count(DISTINCT "file_url"), max("id"),
        (array_agg("document_id" ORDER BY "id" DESC) FILTER (WHERE "download_status" = 'done' AND "document_id" IS NOT NULL))[1],
        max("id") FILTER (WHERE "download_status" = 'done' AND "document_id" IS NOT NULL),
        min("received_at"), greatest(max("received_at"), max("downloaded_at"))
    FROM keyed GROUP BY "source_id", "patient_id", "program_key"
    RETURNING "id", "source_id", "patient_id", "program_key"
)
UPDATE "physitrack_deliveries" d SET "program_id" = p."id"
FROM keyed k JOIN programs p USING ("source_id", "patient_id", "program_key")
WHERE k."id" = d."id";

ALTER TABLE "physitrack_deliveries" ALTER COLUMN "program_id" SET NOT NULL;
CREATE INDEX "physitrack_deliveries_program_id_idx" ON "physitrack_deliveries"("program_id");
