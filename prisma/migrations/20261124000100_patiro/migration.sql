-- Patiro events: one row per eventId. A redelivery carries Patiro's latest data; it replaces the
-- stored data only when its signed timestamp is newer, so an older replay never wins.
CREATE TABLE "patiro_events" (
    "event_id" TEXT NOT NULL,
    "event_type" TEXT NOT NULL,
    "occurred_at" TIMESTAMPTZ(6),
    "occurred_at_raw" TEXT,
    "data" JSONB,
    "signed_at" TIMESTAMPTZ(3) NOT NULL,
    "first_received_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_received_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "delivery_count" INTEGER NOT NULL DEFAULT 1,

    CONSTRAINT "patiro_events_pkey" PRIMARY KEY ("event_id")
);

CREATE INDEX "patiro_events_last_received_at_idx" ON "patiro_events"("last_received_at");
CREATE INDEX "patiro_events_event_type_occurred_at_idx" ON "patiro_events"("event_type", "occurred_at");

-- The current patient, projected from PatientRevealed/PatientUpdated, so the PMS needs no replay.
CREATE TABLE "patiro_patients" (
    "patient_id" TEXT NOT NULL,
    "data" JSONB,
    "signed_at" TIMESTAMPTZ(3) NOT NULL,
    "revealed_at" TIMESTAMPTZ(6),
    "updated_at" TIMESTAMPTZ(3) NOT NULL,
    "last_event_id" TEXT NOT NULL,

    CONSTRAINT "patiro_patients_pkey" PRIMARY KEY ("patient_id")
);

CREATE INDEX "patiro_patients_updated_at_idx" ON "patiro_patients"("updated_at");
