import type { Logger } from 'pino';
import { migrateAndReport } from './database-url.js';

// The service starts whether PostgreSQL answers or not. This keeps trying to reach it and apply the
// migrations, with backoff, until it has; what needs the schema (downloads, the replay) starts then.
// A migration that fails for any other reason than an unreachable server is not retried: it needs
// the operator (README, Migrations).

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);

/** A server that is down, starting, restarting, full of connections, or a network that fails. */
export function isUnreachable(err: unknown): boolean {
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && (NETWORK_CODES.has(code) || code.startsWith('08') || ['57P01', '57P02', '57P03', '53300'].includes(code))) return true;
  const cause = (err as { cause?: unknown })?.cause;
  if (cause && cause !== err && isUnreachable(cause)) return true;
  return typeof message === 'string' && /Connection terminated|timeout expired|connection timeout|timeout exceeded/i.test(message);
}

export interface Connecting {
  /** The first attempt: true when migrated, false when PostgreSQL could not be reached (retrying). */
  first: Promise<boolean>;
  /** Resolves once migrated; rejects if a migration fails for another reason than reachability. */
  done: Promise<void>;
  stop(): void;
}

/**
 * The first attempt waits at most `firstTimeoutMs` for a connection (a black-holed host would
 * otherwise keep the service from listening); later ones, in the background, `retryTimeoutMs`.
 */
export function connectWhenReachable(url: string, log: Logger, { firstTimeoutMs = 2000, retryTimeoutMs = 5000, maxDelayMs = 5000 } = {}): Connecting {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let resolveFirst!: (reached: boolean) => void;
  let rejectFirst!: (err: unknown) => void;
  const first = new Promise<boolean>((resolve, reject) => {
    resolveFirst = resolve;
    rejectFirst = reject;
  });
  const done = new Promise<void>((resolve, reject) => {
    let delayMs = 1000;
    let attempts = 0;
    let lastLoggedAt = 0;
    const attempt = () => {
      if (stopped) return;
      attempts += 1;
      migrateAndReport(url, log, attempts === 1 ? firstTimeoutMs : retryTimeoutMs).then(
        () => {
          if (attempts > 1) log.info({ attempts }, 'PostgreSQL answers: migrations are applied');
          resolveFirst(true);
          resolve();
        },
        (err: unknown) => {
          if (!isUnreachable(err)) {
            rejectFirst(err);
            reject(err);
            return;
          }
          resolveFirst(false);
          // Once a minute is enough to say it is still away.
          if (Date.now() - lastLoggedAt > 60_000) {
            lastLoggedAt = Date.now();
            log.warn({ err, attempts }, 'PostgreSQL cannot be reached; trying again');
          }
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
  return {
    first,
    done,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
