-- migrate: no transaction
-- The index an erasure finds a patient's events by, built CONCURRENTLY: patiro_events is the largest
-- table, and a plain CREATE INDEX would hold off every Patiro write for the whole build (replicas of
-- the previous release, which have no spool, would answer 503 meanwhile). Statement by statement and
-- safe to run again: a build that failed half-way leaves an invalid index behind, dropped first
-- (DROP INDEX locks the table: under a short lock_timeout, so a busy table fails the run, which is
-- retried, instead of stalling its writes; the builds themselves wait for old transactions as long
-- as they need).
SET lock_timeout = '10s';
DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'patiro_events_source_id_patient_id_idx' AND NOT i.indisvalid) THEN DROP INDEX "patiro_events_source_id_patient_id_idx"; END IF; END $$;
RESET lock_timeout;
CREATE INDEX CONCURRENTLY IF NOT EXISTS "patiro_events_source_id_patient_id_idx" ON "patiro_events"("source_id", "patient_id") WHERE "patient_id" IS NOT NULL;
-- Events stored before patient_id was written with them, found by their data's id: only those rows
-- are in this index (new patient events have a patient_id), so it costs new writes nothing. By the
-- id's md5: an index entry has a size limit (2704 bytes) that an id as sent may exceed.
SET lock_timeout = '10s';
DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'patiro_events_old_patient_idx' AND NOT i.indisvalid) THEN DROP INDEX "patiro_events_old_patient_idx"; END IF; END $$;
RESET lock_timeout;
CREATE INDEX CONCURRENTLY IF NOT EXISTS "patiro_events_old_patient_idx" ON "patiro_events"("source_id", md5(data->>'id')) WHERE "patient_id" IS NULL AND "event_type" IN ('PatientRevealed', 'PatientUpdated') AND jsonb_typeof(data->'id') IN ('string', 'number');
