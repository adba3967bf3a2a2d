import type { FastifyBaseLogger } from 'fastify';
import type { Database } from './db/client.js';
import { purge } from './retention.js';

const DAY_MS = 24 * 3600 * 1000;

export interface DailyPurgeOptions {
  db: Database;
  retentionDays: number;
  pdfDir: string;
  log: FastifyBaseLogger;
  intervalMs?: number;
  /** Not at start: a fleet restarting together should not purge together. */
  firstRunDelayMs?: number;
}

/**
 * RETENTION_DAYS in the service: a purge once a day (documents are never deleted here; that stays an
 * explicit `purge --include-documents`). Safe on every replica: concurrent purges skip each other's rows.
 */
export function startDailyPurge(options: DailyPurgeOptions): { stop(): Promise<void> } {
  const { db, retentionDays, pdfDir, log, intervalMs = DAY_MS, firstRunDelayMs = 60_000 + Math.random() * 600_000 } = options;
  let running: Promise<void> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  const runOnce = async () => {
    try {
      const result = await purge(db, { olderThanMs: retentionDays * DAY_MS, dryRun: false, includeDocuments: false, pdfDir, batchSize: 1000 });
      log.info({ retentionDays, deleted: result.counts }, 'retention purge finished');
    } catch (err) {
      log.error({ err }, 'retention purge failed; it will run again tomorrow');
    }
  };
  const schedule = (delayMs: number) => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = runOnce().finally(() => schedule(intervalMs));
    }, delayMs);
    timer.unref();
  };
  schedule(firstRunDelayMs);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
