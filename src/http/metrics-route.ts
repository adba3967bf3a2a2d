import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Metrics } from '../metrics.js';

/** GET /metrics in Prometheus' text format. */
export async function metricsRoute(app: FastifyInstance, { metrics }: { metrics: Metrics }): Promise<void> {
  app.get('/metrics', { logLevel: 'warn' }, async (_request, reply) => {
    const body = await metrics.registry.metrics();
    return reply.header('content-type', metrics.registry.contentType).send(body);
  });
}

/** A listener of its own (METRICS_PORT), so metrics are not exposed beside the webhooks. */
export async function startMetricsServer(metrics: Metrics, host: string, port: number, logger: FastifyBaseLogger): Promise<FastifyInstance> {
  const server = Fastify({ loggerInstance: logger });
  await server.register(metricsRoute, { metrics });
  await server.listen({ host, port });
  return server;
}
