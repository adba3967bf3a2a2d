import type { FastifyBaseLogger } from 'fastify';
import { isUnavailable, type DatabaseAvailability } from '../db/availability.js';
import { OverloadedError } from '../db/group-commit.js';
import { withDeadline } from '../deadline.js';
import type { Journal } from './journal.js';
import type { SpooledDelivery } from './records.js';

// The one durable write the stores call: PostgreSQL within the ack budget, and when it is away
// (or its write fails for unavailability, or the budget is spent), this replica's spool. A route
// never knows which. Without a spool, a failed write fails the delivery (503), as it always did.

/** Time kept from the ack budget for the spool's write and fsync after the database gave up. */
export function spoolReserveMs(ackDeadlineMs: number): number {
  return Math.min(400, Math.floor(ackDeadlineMs / 3));
}

export type Durable<R> = { spooled: false; result: R } | { spooled: true };

export interface DurableWrite {
  write<R>(spooled: SpooledDelivery, toDatabase: (deadlineAt: number) => Promise<R>, deadlineAt: number): Promise<Durable<R>>;
}

export interface DurableWriteOptions {
  journal: Journal | undefined;
  availability: DatabaseAvailability;
  ackDeadlineMs: number;
  log: FastifyBaseLogger;
  now?: () => number;
}

export function createDurableWrite({ journal, availability, ackDeadlineMs, log, now = Date.now }: DurableWriteOptions): DurableWrite {
  const reserveMs = journal ? spoolReserveMs(ackDeadlineMs) : 0;
  let spooling = false;

  const toSpool = async (spooled: SpooledDelivery): Promise<{ spooled: true }> => {
    if (!spooling) {
      spooling = true;
      log.warn({ spool: journal!.dir }, 'PostgreSQL is away: verified deliveries go to this replica\'s spool until it answers again');
    }
    await journal!.append(spooled);
    return { spooled: true };
  };

  availability.onChange((up) => {
    if (up && spooling) {
      spooling = false;
      log.info('PostgreSQL answers again: deliveries are written to it; the spool is replayed');
    }
  });

  return {
    async write(spooled, toDatabase, deadlineAt) {
      if (!journal) return { spooled: false, result: await toDatabase(deadlineAt) };
      if (!availability.up) return toSpool(spooled);
      const databaseDeadline = deadlineAt - reserveMs;
      // The budget went before the database was asked (a slow upload): not the database's fault.
      if (databaseDeadline <= now()) return toSpool(spooled);
      try {
        const result = await withDeadline(toDatabase(databaseDeadline), databaseDeadline - now());
        return { spooled: false, result };
      } catch (err) {
        // The delivery's own fault (its data, a limit): it would fail the same way from the spool.
        if (!isUnavailable(err)) throw err;
        // A full write queue is a burst, not an outage: this delivery goes to the spool, the next may not.
        if (!(err instanceof OverloadedError)) availability.reportUnavailable(err);
        return toSpool(spooled);
      }
    },
  };
}
