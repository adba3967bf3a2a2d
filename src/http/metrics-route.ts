import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Metrics } from '../metrics.js';

/** A rendered scrape is reused this long: a flood of scrapes costs one rendering a second. */
const RENDERED_MAX_AGE_MS = 1000;

/** GET /metrics in Prometheus' text format. */
export async function metricsRoute(app: FastifyInstance, { metrics }: { metrics: Metrics }): Promise<void> {
  let rendered: { at: number; body: Promise<string> } | undefined;
  app.get('/metrics', { logLevel: 'warn' }, async (_request, reply) => {
    if (!rendered || Date.now() - rendered.at >= RENDERED_MAX_AGE_MS) {
      const body = metrics.registry.metrics();
      rendered = { at: Date.now(), body };
      // A failed rendering is not reused.
      body.catch(() => (rendered = undefined));
    }
    return reply.header('content-type', metrics.registry.contentType).send(await rendered.body);
  });
}

/** A listener of its own (METRICS_PORT), so metrics are not exposed beside the webhooks. */
export async function startMetricsServer(metrics: Metrics, host: string, port: number, logger: FastifyBaseLogger): Promise<FastifyInstance> {
  const server = Fastify({ loggerInstance: logger });
  await server.register(metricsRoute, { metrics });
  await server.listen({ host, port });
  return server;
}
