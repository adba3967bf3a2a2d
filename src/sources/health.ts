import type { FastifyBaseLogger } from 'fastify';
import type { Database } from '../db/client.js';
import type { Vendor } from '../metrics.js';
import { recordHealth, type HealthUpdate } from './sources-table.js';

/**
 * Per-source health ("why is this clinic's webhook failing?"), aggregated in memory and written at
 * most once per flush interval per source, in one statement for all of them: unauthenticated
 * traffic can make the service count, but not make the database write more.
 * Only sources that exist are tracked, so random ids in URLs cannot grow this map.
 */
export interface SourceHealth {
  succeeded(vendor: Vendor, id: string, at?: Date): void;
  /** `reason` is a stable code (bad_signature, …); `hint` a safe detail (never a secret or body). */
  failed(vendor: Vendor, id: string, reason: string, hint?: string, at?: Date): void;
  /** Writes what has accumulated (the timer calls it; tests and shutdown may too). */
  flush(): Promise<void>;
  /** Sources with news not written yet: bounded by the number of sources, whatever the traffic. */
  pendingSources(): number;
  /** Stops the timer and writes what is left. */
  stop(): Promise<void>;
}

type Pending = HealthUpdate;

/** `b` happened after `a`: the combined news of both. */
function merge(a: Pending, b: Pending): Pending {
  const later = (x: string | null, y: string | null) => (x === null ? y : y === null ? x : x > y ? x : y);
  const failureOfB = b.lastFailureAt !== null && (a.lastFailureAt === null || b.lastFailureAt >= a.lastFailureAt);
  return {
    vendor: a.vendor,
    id: a.id,
    lastSuccessAt: later(a.lastSuccessAt, b.lastSuccessAt),
    lastFailureAt: later(a.lastFailureAt, b.lastFailureAt),
    lastFailureReason: failureOfB ? b.lastFailureReason : a.lastFailureReason,
    failures: b.sawSuccess ? b.failures : a.failures + b.failures,
    sawSuccess: a.sawSuccess || b.sawSuccess,
  };
}

export function createSourceHealth({ db, log, intervalMs = 1000 }: { db: Database; log: FastifyBaseLogger; intervalMs?: number }): SourceHealth {
  let pending = new Map<string, Pending>();
  let flushing: Promise<void> = Promise.resolve();
  // While PostgreSQL is away this fails every second: said once a minute, with the count.
  let failedSinceWarning = 0;
  let warnedAt = 0;

  const add = (update: Pending) => {
    const key = `${update.vendor}/${update.id}`;
    const earlier = pending.get(key);
    pending.set(key, earlier ? merge(earlier, update) : update);
  };

  async function writeOnce(): Promise<void> {
    if (pending.size === 0) return;
    const taken = pending;
    pending = new Map();
    try {
      await recordHealth(db, [...taken.values()]);
      failedSinceWarning = 0;
    } catch (err) {
      failedSinceWarning += 1;
      if (Date.now() - warnedAt >= 60_000) {
        log.warn({ err, sources: taken.size, failures: failedSinceWarning }, 'could not record source health; will try again');
        warnedAt = Date.now();
        failedSinceWarning = 0;
      }
      // What arrived meanwhile is newer than what was taken.
      const newer = pending;
      pending = taken;
      for (const update of newer.values()) add(update);
    }
  }

  const flush = () => (flushing = flushing.then(writeOnce));
  const timer = setInterval(() => void flush(), intervalMs);
  timer.unref();

  return {
    succeeded(vendor, id, at = new Date()) {
      add({ vendor, id, lastSuccessAt: at.toISOString(), lastFailureAt: null, lastFailureReason: null, failures: 0, sawSuccess: true });
    },
    failed(vendor, id, reason, hint, at = new Date()) {
      const text = hint ? `${reason}: ${hint}` : reason;
      add({ vendor, id, lastSuccessAt: null, lastFailureAt: at.toISOString(), lastFailureReason: text.slice(0, 500), failures: 1, sawSuccess: false });
    },
    flush,
    pendingSources: () => pending.size,
    async stop() {
      clearInterval(timer);
      await flush();
    },
  };
}
