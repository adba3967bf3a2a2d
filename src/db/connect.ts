import type { Logger } from 'pino';
import { isUnavailable } from './availability.js';
import { migrateAndReport } from './database-url.js';
import { MigrationLockBusyError } from './migrate.js';

// The service starts whether PostgreSQL answers or not. This keeps trying to reach it and apply the
// migrations, with backoff, until it has; what needs the schema (downloads, the replay) starts then.
// A migration that fails for any other reason than an unreachable server is not retried: it needs
// the operator (README, Migrations).

/**
 * Worth trying again: PostgreSQL unreachable or not ready (availability.ts), or busy: another
 * replica migrating (the advisory lock is taken), a lock timeout behind old replicas' writes.
 */
export function isUnreachable(err: unknown): boolean {
  return err instanceof MigrationLockBusyError || isUnavailable(err);
}

export interface Connecting {
  /**
   * Whether the first attempt migrated within `firstWaitMs`: false when PostgreSQL could not be
   * reached, or is taking longer (a long migration, another replica migrating). Either way the
   * service then listens, and `done` says when it is ready.
   */
  first: Promise<boolean>;
  /** Resolves once migrated; rejects if a migration fails for another reason than reachability. */
  done: Promise<void>;
  stop(): void;
}

export interface ConnectOptions {
  firstWaitMs?: number;
  connectTimeoutMs?: number;
  maxDelayMs?: number;
}

export function connectWhenReachable(url: string, log: Logger, { firstWaitMs = 3000, connectTimeoutMs = 2000, maxDelayMs = 5000 }: ConnectOptions = {}): Connecting {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let resolveFirst!: (reached: boolean) => void;
  let rejectFirst!: (err: unknown) => void;
  const first = new Promise<boolean>((resolve, reject) => {
    resolveFirst = resolve;
    rejectFirst = reject;
  });
  const firstTimer = setTimeout(() => resolveFirst(false), firstWaitMs);
  firstTimer.unref();
  const done = new Promise<void>((resolve, reject) => {
    let delayMs = 500;
    let attempts = 0;
    let lastLoggedAt = 0;
    const attempt = () => {
      if (stopped) return;
      attempts += 1;
      // `try`: a replica that finds another migrating does not wait on its lock, it tries again.
      migrateAndReport(url, log, { connectTimeoutMs, lock: 'try' }).then(
        () => {
          clearTimeout(firstTimer);
          if (attempts > 1) log.info({ attempts }, 'PostgreSQL answers: migrations are applied');
          resolveFirst(true);
          resolve();
        },
        (err: unknown) => {
          if (!isUnreachable(err)) {
            clearTimeout(firstTimer);
            rejectFirst(err);
            reject(err);
            return;
          }
          clearTimeout(firstTimer);
          resolveFirst(false);
          // Once a minute is enough to say it is still away (the error's code only: its detail may quote data).
          if (Date.now() - lastLoggedAt > 60_000) {
            lastLoggedAt = Date.now();
            log.warn({ code: (err as { code?: unknown }).code, reason: (err as Error).message?.split('\n')[0], attempts }, 'PostgreSQL cannot be reached or is being migrated; trying again');
          }
          if (stopped) return;
          timer = setTimeout(attempt, delayMs);
          timer.unref();
          delayMs = Math.min(delayMs * 2, maxDelayMs);
        },
      );
    };
    attempt();
  });
  // Whoever awaits `done` hears its failure; nobody else must get an unhandled rejection.
  done.catch(() => undefined);
  first.catch(() => undefined);
  return {
    first,
    done,
    stop() {
      stopped = true;
      clearTimeout(timer);
      clearTimeout(firstTimer);
    },
  };
}
