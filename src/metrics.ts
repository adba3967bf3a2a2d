import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { reservedPoolOf, type Database } from './db/client.js';
import { HELD_BACK_SQL, type HeldBack } from './changes/changes-table.js';
import { FAILING_SOURCES_SQL } from './sources/sources-table.js';
import type { JournalStats } from './spool/journal.js';

export type Vendor = 'patiro' | 'physitrack';

/** Buckets that show the vendors' 2 s budget (and our 1.5 s ack deadline) at a glance. */
const ACK_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 5];
const DOWNLOAD_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

interface QueueFigures {
  byStatus: { status: string; n: number }[];
  failingSources: { vendor: Vendor; n: number }[];
  oldestPendingAgeSeconds: number | null;
  soonestDeadlineSeconds: number | null;
  heldBack: HeldBack | null;
}

/**
 * The PMS-facing numbers to alert on come straight from the table. Over the reserved pool, never a
 * write pool's connection, and one statement for all of them.
 */
async function readQueueFigures(db: Database): Promise<QueueFigures> {
  const { rows } = await reservedPoolOf(db).query<{ by_status: { status: string; n: number }[] | null; failing: { vendor: Vendor; n: number }[] | null; oldest: number | null; soonest: number | null; held: HeldBack | null }>(
    `SELECT (SELECT json_agg(json_build_object('status', download_status, 'n', n)) FROM
              (SELECT download_status, count(*)::int AS n FROM physitrack_deliveries GROUP BY 1) s) AS by_status,
            (${FAILING_SOURCES_SQL}) AS failing,
            (${HELD_BACK_SQL}) AS held,
            extract(epoch FROM now() - min(received_at))::float8 AS oldest,
            extract(epoch FROM min(deadline_at) - now())::float8 AS soonest
     FROM physitrack_deliveries WHERE download_status IN ('pending', 'downloading')`,
  );
  const row = rows[0];
  return {
    byStatus: row?.by_status ?? [],
    failingSources: row?.failing ?? [],
    oldestPendingAgeSeconds: row?.oldest ?? null,
    soonestDeadlineSeconds: row?.soonest ?? null,
    heldBack: row?.held ?? null,
  };
}

/** How long the database's figures are reused: however many scrapes arrive, one query a second at most. */
const FIGURES_MAX_AGE_MS = 1000;

/** What the metrics read of the process's state at scrape time. */
export interface MetricsSources {
  /** The spool's figures; absent when the spool is off. */
  spool?: (() => JournalStats) | undefined;
  /** Whether PostgreSQL answers, as the process last saw it. */
  databaseUp?: (() => boolean) | undefined;
}

/** One registry per process, created in main (no global default registry). */
export function createMetrics(db: Database, sources: MetricsSources = {}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const deliveries = new Counter({ name: 'webhook_deliveries_total', help: 'Webhook requests answered, by vendor and status code', labelNames: ['vendor', 'status'], registers: [registry] });
  const ackDuration = new Histogram({ name: 'webhook_ack_duration_seconds', help: 'Time to answer a webhook request', labelNames: ['vendor'], buckets: ACK_BUCKETS, registers: [registry] });
  const authFailures = new Counter({ name: 'webhook_auth_failures_total', help: 'Unauthenticated webhook requests, by reason', labelNames: ['vendor', 'reason'], registers: [registry] });
  const tooLarge = new Counter({ name: 'webhook_body_too_large_total', help: 'Webhook bodies refused for exceeding BODY_LIMIT_BYTES', labelNames: ['vendor'], registers: [registry] });
  const attempts = new Counter({ name: 'pdf_download_attempts_total', help: 'PDF download attempts, by outcome', labelNames: ['outcome'], registers: [registry] });
  const downloadDuration = new Histogram({ name: 'pdf_download_duration_seconds', help: 'Duration of PDF download attempts', labelNames: ['outcome'], buckets: DOWNLOAD_BUCKETS, registers: [registry] });
  const bytes = new Counter({ name: 'pdf_download_bytes_total', help: 'Bytes of PDFs downloaded and stored', registers: [registry] });

  const connectionsDropped = new Counter({
    name: 'webhook_connections_dropped_total',
    help: 'Connections refused at MAX_CONNECTIONS, or closed for pipelining requests without reading the answers',
    labelNames: ['reason'],
    registers: [registry],
  });
  const spoolReplayed = new Counter({ name: 'webhook_spool_replayed_total', help: 'Spooled deliveries written to PostgreSQL by the replay', labelNames: ['vendor'], registers: [registry] });
  const spoolRejected = new Counter({ name: 'webhook_spool_rejected_total', help: 'Spooled deliveries set aside in SPOOL_DIR/rejected (corrupt, or refused by PostgreSQL for good)', registers: [registry] });
  spoolGauges(registry, sources);

  let lastFigures: { at: number; figures: Promise<QueueFigures | undefined> } | undefined;
  let reading: Promise<QueueFigures | undefined> | undefined;
  // One query serves the gauges, shared by every scrape while it runs and for a second after it
  // answered (single flight: a query slower than a second never runs twice at once). While
  // PostgreSQL is away they are absent (not stale, not zero), and the rest of the scrape (the
  // spool's figures above all) still answers.
  const collectQueue = async () => {
    if (reading) return reading;
    if (lastFigures && Date.now() - lastFigures.at < FIGURES_MAX_AGE_MS) return lastFigures.figures;
    reading = readQueueFigures(db).catch(() => undefined);
    const figures = reading;
    void figures.then(() => {
      lastFigures = { at: Date.now(), figures };
      reading = undefined;
    });
    return figures;
  };
  new Gauge({
    name: 'physitrack_deliveries',
    help: 'Physitrack deliveries by download_status',
    labelNames: ['download_status'],
    registers: [registry],
    async collect() {
      this.reset();
      const figures = await collectQueue();
      if (!figures) return;
      for (const status of ['pending', 'downloading', 'done', 'failed', 'expired']) this.set({ download_status: status }, 0);
      for (const { status, n } of figures.byStatus) this.set({ download_status: status }, n);
    },
  });
  new Gauge({
    name: 'webhook_sources_failing',
    help: 'Sources whose latest delivery failed (no success since), by vendor: alert on one clinic without SQL',
    labelNames: ['vendor'],
    registers: [registry],
    async collect() {
      this.reset();
      const figures = await collectQueue();
      if (!figures) return;
      for (const vendor of ['patiro', 'physitrack'] as const) this.set({ vendor }, 0);
      for (const { vendor, n } of figures.failingSources) this.set({ vendor }, n);
    },
  });
  new Gauge({
    name: 'pdf_download_oldest_pending_age_seconds',
    help: 'Age of the oldest delivery not yet downloaded (0 when none)',
    registers: [registry],
    async collect() {
      const figures = await collectQueue();
      if (figures) this.set(figures.oldestPendingAgeSeconds ?? 0);
      else this.remove({});
    },
  });
  new Gauge({
    name: 'pdf_download_soonest_deadline_seconds',
    help: 'Seconds left before the soonest download deadline among waiting deliveries (absent when none): alert when low',
    registers: [registry],
    async collect() {
      // Absent, not 0, when nothing waits: 0 would read as "a PDF is about to be lost".
      const seconds = (await collectQueue())?.soonestDeadlineSeconds ?? null;
      if (seconds === null) this.remove({});
      else this.set(seconds);
    },
  });

  new Gauge({
    name: 'webhook_changes_held_back',
    help: 'Committed changes the feed cannot give out yet, held back by an older transaction still open (0 when none)',
    registers: [registry],
    async collect() {
      const held = (await collectQueue())?.heldBack;
      if (held) this.set(held.changes);
      else this.remove({});
    },
  });
  new Gauge({
    name: 'webhook_changes_held_back_seconds',
    help: "Age of the oldest change held back (the feed's lag; 0 when none): alert when it grows",
    registers: [registry],
    async collect() {
      const held = (await collectQueue())?.heldBack;
      if (held) this.set(held.oldestSeconds);
      else this.remove({});
    },
  });

  return {
    registry,
    delivery(vendor: Vendor, status: number, seconds: number) {
      deliveries.inc({ vendor, status: String(status) });
      ackDuration.observe({ vendor }, seconds);
      if (status === 413) tooLarge.inc({ vendor });
    },
    authFailure: (vendor: Vendor, reason: string) => authFailures.inc({ vendor, reason }),
    spoolReplayed: (vendor: Vendor, n: number) => spoolReplayed.inc({ vendor }, n),
    connectionDropped: (reason: 'max_connections' | 'pipelining') => connectionsDropped.inc({ reason }),
    spoolRejected: (n: number) => spoolRejected.inc(n),
    downloadAttempt(outcome: string, seconds: number, sizeBytes = 0) {
      attempts.inc({ outcome });
      downloadDuration.observe({ outcome }, seconds);
      if (sizeBytes > 0) bytes.inc(sizeBytes);
    },
  };
}

/** Gauges read from memory at scrape time: they answer while PostgreSQL is away. */
function spoolGauges(registry: Registry, { spool, databaseUp }: MetricsSources): void {
  if (databaseUp) {
    new Gauge({ name: 'webhook_database_up', help: '1 while PostgreSQL takes writes, 0 while deliveries go to the spool (or get 503)', registers: [registry], collect() {
      this.set(databaseUp() ? 1 : 0);
    } });
  }
  if (!spool) return;
  const gauge = (name: string, help: string, read: (s: JournalStats) => number) =>
    new Gauge({ name, help, registers: [registry], collect() {
      this.set(read(spool()));
    } });
  gauge('webhook_spool_records', 'Deliveries in this replica\'s spool, waiting for PostgreSQL', (s) => s.records);
  gauge('webhook_spool_bytes', 'Bytes of the spool\'s journal (SPOOL_MAX_BYTES bounds it)', (s) => s.bytes);
  gauge('webhook_spool_oldest_age_seconds', 'Age of the oldest spooled delivery (0 when none)', (s) => s.oldestAgeSeconds ?? 0);
  gauge('webhook_spool_failed', '1 once a spool write or fsync failed: the spool takes nothing more until a restart', (s) => (s.state === 'failed' ? 1 : 0));
}

export type Metrics = ReturnType<typeof createMetrics>;
