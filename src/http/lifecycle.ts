import type { FastifyInstance } from 'fastify';

/** Shared by the app's hooks and the shutdown: set once the process has been asked to stop. */
export interface Lifecycle {
  draining: boolean;
}

export const createLifecycle = (): Lifecycle => ({ draining: false });

/**
 * While draining (SIGTERM, SHUTDOWN_DRAIN_MS) and while closing, every answer carries
 * `Connection: close`: keep-alive clients then open their next connection elsewhere (the load
 * balancer has taken this replica out by then), and a connection whose request is in flight does
 * not stay open for the keep-alive timeout after its answer.
 */
export function closeConnectionsWhenDraining(app: FastifyInstance, lifecycle: Lifecycle): void {
  app.addHook('preClose', async () => {
    lifecycle.draining = true;
  });
  app.addHook('onSend', async (_request, reply) => {
    if (lifecycle.draining) void reply.header('connection', 'close');
  });
}
