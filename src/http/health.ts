import type { FastifyInstance } from 'fastify';
import type { DatabaseAvailability } from '../db/availability.js';
import type { Journal } from '../spool/journal.js';
import type { Lifecycle } from './lifecycle.js';

export interface HealthOptions {
  lifecycle: Lifecycle;
  availability: DatabaseAvailability;
  journal?: Journal | undefined;
}

/**
 * /healthz: the process is alive (no database: an outage must not cause a restart loop); also the
 * startup probe, since the service starts without PostgreSQL.
 * /readyz: this replica can durably accept a delivery now: PostgreSQL answers, or the spool is
 * writable and under its limit. The database check is shared by concurrent probes and asked at
 * most every second (over the reserved pool), so probes cannot load the database.
 */
export async function healthRoutes(app: FastifyInstance, { lifecycle, availability, journal }: HealthOptions): Promise<void> {
  app.get('/healthz', { logLevel: 'warn' }, async (_request, reply) => reply.code(200).send({ status: 'ok' }));

  app.get('/readyz', { logLevel: 'warn' }, async (_request, reply) => {
    const spool = journal && (({ records, bytes, state }) => ({ records, bytes, state }))(journal.stats());
    // Draining: still answering, but the load balancer should stop sending here.
    if (lifecycle.draining) return reply.code(503).send({ status: 'draining', reason: 'the service is shutting down', ...(spool ? { spool } : {}) });
    // While PostgreSQL is known to be away its own probe runs every 500 ms: answer from that at
    // once, so the probe's timeout never makes this answer late exactly during an outage.
    const databaseUp = availability.up ? await availability.check() : false;
    const database = databaseUp ? 'ok' : 'unavailable';
    if (databaseUp) return reply.code(200).send({ status: 'ready', database, ...(spool ? { spool } : {}) });
    if (journal?.accepting()) return reply.code(200).send({ status: 'ready', database, spool });
    const reason = !journal
      ? 'the database does not answer (and there is no spool: set SPOOL_DIR)'
      : spool?.state === 'failed'
        ? 'the database does not answer and the spool failed'
        : 'the database does not answer and the spool is full';
    return reply.code(503).send({ status: 'unavailable', database, reason, ...(spool ? { spool } : {}) });
  });
}
