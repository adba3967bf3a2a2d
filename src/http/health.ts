import type { FastifyInstance } from 'fastify';
import type { Database } from '../db/client.js';
import { withDeadline } from '../deadline.js';

const READY_TIMEOUT_MS = 1000;

/** /healthz: the process is alive (no database: an outage must not cause a restart loop). /readyz: the database answers. */
export async function healthRoutes(app: FastifyInstance, { db }: { db: Database }): Promise<void> {
  app.get('/healthz', { logLevel: 'warn' }, async (_request, reply) => reply.code(200).send({ status: 'ok' }));

  app.get('/readyz', { logLevel: 'warn' }, async (request, reply) => {
    try {
      await withDeadline(db.$queryRaw`SELECT 1`, READY_TIMEOUT_MS);
      return reply.code(200).send({ status: 'ready' });
    } catch (err) {
      request.log.warn({ err }, 'readiness check failed: the database does not answer');
      return reply.code(503).send({ status: 'unavailable', reason: 'the database does not answer' });
    }
  });
}
