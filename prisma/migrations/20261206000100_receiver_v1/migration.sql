-- The read contract: what a PMS reads, as views in a schema of their own. Their columns keep their
-- names and types; a change that would break one makes a receiver_v2 beside it, and receiver_v1
-- stays for at least one release (expand, then contract). test/db/read-contract.test.ts holds the
-- columns against a committed snapshot. Left out on purpose: credentials, the file_url (a bearer
-- credential for the PDF, dead after 24 h), and the download queue's bookkeeping.
-- A role made by `npm run cli -- db grant-reader <role>` reads these views and nothing else.
SET LOCAL lock_timeout = '10s';

CREATE SCHEMA IF NOT EXISTS "receiver_v1";

CREATE VIEW "receiver_v1"."sources" AS
SELECT vendor, id, name, tenant_ref, status, created_at, updated_at,
       last_success_at, last_failure_at, last_failure_reason, failures_since_success
FROM "public"."sources";

CREATE VIEW "receiver_v1"."patiro_events" AS
SELECT source_id, event_id, event_type,
       -- Written with the event since this release; before, the data's id of a patient event.
       COALESCE(patient_id, CASE WHEN event_type IN ('PatientRevealed', 'PatientUpdated') THEN data->>'id' END) AS patient_id,
       occurred_at, occurred_at_raw, data, signed_at, first_received_at, last_received_at, delivery_count
FROM "public"."patiro_events";

CREATE VIEW "receiver_v1"."patiro_patients" AS
SELECT source_id, patient_id, data, signed_at, revealed_at, updated_at, last_event_id
FROM "public"."patiro_patients";

CREATE VIEW "receiver_v1"."physitrack_deliveries" AS
SELECT id, source_id, patient_id, practitioner_token, program_id, program_name, program_date, program_created_at,
       updated, received_at, last_notice_at, notice_count, download_status, attempts, last_error, last_http_status,
       deadline_at, downloaded_at, finished_at, document_id
FROM "public"."physitrack_deliveries";

CREATE VIEW "receiver_v1"."physitrack_programs" AS
SELECT id, source_id, patient_id, program_created_at, program_date, program_name, practitioner_token, versions,
       latest_delivery_id, current_delivery_id, current_document_id, first_notice_at, updated_at
FROM "public"."physitrack_programs";

CREATE VIEW "receiver_v1"."documents" AS
SELECT id, sha256, size_bytes, content_type, created_at, storage, storage_key, content
FROM "public"."documents";

CREATE VIEW "receiver_v1"."webhook_audit" AS
SELECT id, source_id, vendor, received_at, event_id, status_code, body_sha256, source_address, receipt_id
FROM "public"."webhook_audit";

CREATE VIEW "receiver_v1"."erasures" AS
SELECT id, erased_at, scope, vendor, source_id, patient_hash, counts
FROM "public"."erasures";
