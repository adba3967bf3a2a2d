import type { FastifyInstance } from 'fastify';
import type { Database } from '../db/client.js';

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

export async function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  promise.catch(() => undefined); // a late rejection after the deadline must not go unhandled
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
