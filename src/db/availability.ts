import pg from 'pg';
import { RECEIPT_CONSTRAINT } from '../audit.js';
import { withDeadline } from '../deadline.js';
import { DeadlinePassedError, OverloadedError } from './group-commit.js';

// Whether PostgreSQL can take writes now, as this process last saw it. A write that fails for
// unavailability marks it away; from then on deliveries go straight to the spool, none waiting out
// a budget known to fail, until a probe answers. The probe is one query at a time, shared by every
// caller (/readyz, the replayer), and runs at most every PROBE_INTERVAL_MS while away.

const PROBE_INTERVAL_MS = 500;
const PROBE_TIMEOUT_MS = 1000;

/**
 * Errors of the delivery itself: PostgreSQL refused its data (class 22) or a constraint (class 23).
 * They would fail the same way on every replay. Everything else (a refused or lost connection, the
 * pool's connect timeout, a statement timeout, the ack budget spent, too many connections, a disk
 * full, a schema not migrated yet) is unavailability: the delivery may be kept for later.
 */
export function isPermanentWriteError(err: unknown): boolean {
  if (err instanceof DeadlinePassedError || err instanceof OverloadedError) return false;
  const { code, constraint, column } = (err ?? {}) as { code?: unknown; constraint?: unknown; column?: unknown };
  if (!(err instanceof pg.DatabaseError) || typeof code !== 'string') return false;
  // Races with another write (a receipt or a program recorded meanwhile) that outlasted the
  // statement's own retries: the next attempt finds what the other wrote.
  if ((code === '23505' && constraint === RECEIPT_CONSTRAINT) || (code === '23502' && column === 'program_id')) return false;
  return code.startsWith('22') || code.startsWith('23');
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
