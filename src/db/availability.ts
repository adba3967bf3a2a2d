import pg from 'pg';
import { RECEIPT_CONSTRAINT } from '../audit.js';
import { DeadlineError, withDeadline } from '../deadline.js';
import { DeadlinePassedError, OverloadedError } from './group-commit.js';

// Whether PostgreSQL can take writes now, as this process last saw it. A write that fails for
// unavailability marks it away; from then on deliveries go straight to the spool, none waiting out
// a budget known to fail, until a probe answers. The probe is one query at a time, shared by every
// caller (/readyz, the replayer), and runs at most every PROBE_INTERVAL_MS while away.

const PROBE_INTERVAL_MS = 500;
const PROBE_TIMEOUT_MS = 1000;

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);

/** What pg and its pool say, without a code, when a connection cannot be made or is lost. */
const CONNECTION_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|timeout expired|Query read timeout|connection error and is not queryable|Cannot use a pool after calling end/i;

/**
 * SQLSTATE classes and codes that say PostgreSQL cannot take the write now, whatever it holds:
 * connection exceptions (08), insufficient resources (53: disk full, out of memory, too many
 * connections), operator intervention (57: cancelled by a statement timeout, shutting down,
 * starting up), system errors (58: I/O), and transaction rollbacks that a later attempt survives
 * (40001 serialization, 40P01 deadlock), a lock not available (55P03).
 */
function isUnavailableSqlState(code: string): boolean {
  return ['08', '53', '57', '58'].includes(code.slice(0, 2)) || ['40001', '40P01', '55P03'].includes(code);
}

/**
 * PostgreSQL cannot take the write now: a refused or lost connection, the pool's connect timeout, a
 * deadline of ours, one of the SQLSTATEs above, or a race with another write that outlasted the
 * statement's own retries (a receipt or a program recorded meanwhile: the next attempt finds it).
 * Only these keep a delivery for later; any other error is the delivery's own (its data, a limit
 * such as an index entry too large), would fail the same way every time, and is never spooled
 * (503), or set aside by the replay.
 */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof DeadlinePassedError || err instanceof OverloadedError || err instanceof DeadlineError) return true;
  const { code, constraint, column, message, cause } = (err ?? {}) as { code?: unknown; constraint?: unknown; column?: unknown; message?: unknown; cause?: unknown };
  if (typeof code === 'string') {
    if (NETWORK_CODES.has(code)) return true;
    if (err instanceof pg.DatabaseError) {
      if ((code === '23505' && constraint === RECEIPT_CONSTRAINT) || (code === '23502' && column === 'program_id')) return true;
      return isUnavailableSqlState(code);
    }
  }
  if (cause && cause !== err && isUnavailable(cause)) return true;
  return typeof message === 'string' && CONNECTION_MESSAGES.test(message);
}

export type AvailabilityListener = (up: boolean) => void;

export interface DatabaseAvailability {
  /** False from a failed write (or start) until a probe answers. */
  readonly up: boolean;
  /** A write failed for unavailability: mark the database away and probe until it answers. */
  reportUnavailable(err: unknown): void;
  /** Marks the database reachable (start, a successful write, a probe). */
  reportAvailable(): void;
  /** Asks the database now, unless a probe ran within the last second; shared by concurrent callers. */
  check(): Promise<boolean>;
  onChange(listener: AvailabilityListener): void;
  stop(): void;
}

export interface AvailabilityOptions {
  /** One short query; the reserved pool, so writes queued on the main pool do not delay it. */
  probe: () => Promise<unknown>;
  /** Whether the schema is ready for writes (migrations applied); probes wait for it. */
  ready?: () => boolean;
  initiallyUp: boolean;
  now?: () => number;
}

export function createAvailability({ probe, ready = () => true, initiallyUp, now = Date.now }: AvailabilityOptions): DatabaseAvailability {
  let up = initiallyUp;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<boolean> | undefined;
  let last: { at: number; ok: boolean } | undefined;
  const listeners: AvailabilityListener[] = [];

  const set = (next: boolean) => {
    if (next === up) return;
    up = next;
    if (up && timer) {
      clearTimeout(timer);
      timer = undefined;
    }
    for (const listener of listeners) listener(up);
    if (!up) schedule();
  };

  function schedule(): void {
    if (stopped || timer || up) return;
    timer = setTimeout(() => {
      timer = undefined;
      void ask(true).finally(schedule);
    }, PROBE_INTERVAL_MS);
    timer.unref();
  }

  function ask(force: boolean): Promise<boolean> {
    if (inFlight) return inFlight;
    if (!force && last && now() - last.at < PROBE_INTERVAL_MS * 2) return Promise.resolve(last.ok);
    inFlight = withDeadline(Promise.resolve().then(probe), PROBE_TIMEOUT_MS)
      .then(
        () => ready(),
        () => false,
      )
      .then((ok) => {
        last = { at: now(), ok };
        set(ok);
        return ok;
      })
      .finally(() => (inFlight = undefined));
    return inFlight;
  }

  if (!up) schedule();
  return {
    get up() {
      return up;
    },
    reportUnavailable() {
      last = { at: now(), ok: false };
      set(false);
    },
    reportAvailable() {
      if (ready()) set(true);
    },
    check: () => ask(false),
    onChange(listener) {
      listeners.push(listener);
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
