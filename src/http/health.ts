import type { FastifyInstance } from 'fastify';
import { reservedPoolOf, type Database } from '../db/client.js';
import { withDeadline } from '../deadline.js';
import type { Lifecycle } from './lifecycle.js';

const READY_TIMEOUT_MS = 1000;

/**
 * /healthz: the process is alive (no database: an outage must not cause a restart loop).
 * /readyz: the database answers. It asks over the reserved pool, so a main pool full of writes
 * under load does not make a working replica look unready and get it taken out of service.
 */
export async function healthRoutes(app: FastifyInstance, { db, lifecycle }: { db: Database; lifecycle: Lifecycle }): Promise<void> {
  const pool = reservedPoolOf(db);
  app.get('/healthz', { logLevel: 'warn' }, async (_request, reply) => reply.code(200).send({ status: 'ok' }));

  app.get('/readyz', { logLevel: 'warn' }, async (request, reply) => {
    // Draining: still answering, but the load balancer should stop sending here.
    if (lifecycle.draining) return reply.code(503).send({ status: 'draining', reason: 'the service is shutting down' });
    try {
      await withDeadline(pool.query('SELECT 1'), READY_TIMEOUT_MS);
      return reply.code(200).send({ status: 'ready' });
    } catch (err) {
      request.log.warn({ err }, 'readiness check failed: the database does not answer');
      return reply.code(503).send({ status: 'unavailable', reason: 'the database does not answer' });
    }
  });
}
