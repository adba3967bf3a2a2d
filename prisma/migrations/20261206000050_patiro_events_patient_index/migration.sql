-- migrate: no transaction
-- The index an erasure finds a patient's events by, built CONCURRENTLY: patiro_events is the largest
-- table, and a plain CREATE INDEX would hold off every Patiro write for the whole build (replicas of
-- the previous release, which have no spool, would answer 503 meanwhile). Statement by statement and
-- safe to run again: a build that failed half-way leaves an invalid index behind, dropped first.
DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'patiro_events_source_id_patient_id_idx' AND NOT i.indisvalid) THEN DROP INDEX "patiro_events_source_id_patient_id_idx"; END IF; END $$;
CREATE INDEX CONCURRENTLY IF NOT EXISTS "patiro_events_source_id_patient_id_idx" ON "patiro_events"("source_id", "patient_id") WHERE "patient_id" IS NOT NULL;
