import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Config } from './config.js';
import type { Database } from './db/client.js';
import { storeOptionsFor } from './db/group-commit.js';
import { errorHandler, notFoundHandler } from './http/error-handler.js';
import { healthRoutes } from './http/health.js';
import { metricsRoute } from './http/metrics-route.js';
import { logAbortedRequests, OneLinePerRequest } from './http/request-log.js';
import type { Metrics, Vendor } from './metrics.js';
import { isPatiroConfigured } from './webhooks/patiro-auth.js';
import { createPatiroStore, type PatiroStore } from './webhooks/patiro-store.js';
import { patiroRoutes } from './webhooks/patiro.js';
import { createPhysitrackStore, type PhysitrackStore } from './webhooks/physitrack-store.js';
import { physitrackRoutes } from './webhooks/physitrack.js';

export interface AppDeps {
  config: Config;
  db: Database;
  logger: FastifyBaseLogger;
  /** Defaults to a store writing each delivery in its own statement. */
  patiroStore?: PatiroStore;
  physitrackStore?: PhysitrackStore;
  /** Wakes the download worker when a delivery is stored. */
  onPhysitrackStored?: () => void;
  metrics?: Metrics;
  /** Serve HTTPS with this key and certificate (PEM), for sites without a TLS-terminating proxy. */
  https?: { key: Buffer; cert: Buffer };
}

const VENDOR_ROUTES: Record<string, Vendor> = { '/webhooks/patiro': 'patiro', '/webhooks/physitrack': 'physitrack' };

/** Every answer of a vendor route is counted and timed, whatever path produced it. */
function countDeliveries(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onResponse', async (request, reply) => {
    const vendor = VENDOR_ROUTES[request.routeOptions.url ?? ''];
    if (vendor) metrics.delivery(vendor, reply.statusCode, reply.elapsedTime / 1000);
  });
}

/**
 * Fastify closes idle keep-alive connections when it starts closing, but a connection whose request
 * is still in flight would stay open for the keep-alive timeout after answering. Answering with
 * `Connection: close` while draining lets shutdown finish as soon as the last answer is sent.
 */
function closeConnectionsWhenDraining(app: FastifyInstance): void {
  let draining = false;
  app.addHook('preClose', async () => {
    draining = true;
  });
  app.addHook('onSend', async (_request, reply) => {
    if (draining) void reply.header('connection', 'close');
  });
}

/** Registers every plugin and route explicitly. Never listens: main.ts does, tests use inject(). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, db, logger } = deps;
  const app = Fastify({
    ...(deps.https ? { https: deps.https } : {}),
    loggerInstance: logger,
    logController: new OneLinePerRequest(),
    bodyLimit: config.bodyLimitBytes,
    genReqId: () => randomUUID(),
    // Webhook senders answer within seconds or give up; a stuck connection must not hold a socket.
    requestTimeout: 10_000,
    connectionTimeout: 10_000,
    return503OnClosing: true,
  });
  closeConnectionsWhenDraining(app);
  logAbortedRequests(app);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(notFoundHandler);

  const { metrics } = deps;
  if (metrics) countDeliveries(app, metrics);
  if (metrics && config.metrics.port === undefined) await app.register(metricsRoute, { metrics });
  await app.register(healthRoutes, { db });
  if (isPatiroConfigured(config.patiro)) {
    const onAuthFailure = (reason: string) => metrics?.authFailure('patiro', reason);
    await app.register(patiroRoutes, { config, db, store: deps.patiroStore ?? createPatiroStore(db, storeOptionsFor(config)), onAuthFailure });
  } else {
    logger.warn('POST /webhooks/patiro is disabled: set PATIRO_SIGNING_SECRET, PATIRO_TOKEN or PATIRO_BASIC_AUTH to enable it');
  }
  if (config.physitrack.apiKeys.length > 0) {
    const store = deps.physitrackStore ?? createPhysitrackStore(db, storeOptionsFor(config));
    const onAuthFailure = (reason: string) => metrics?.authFailure('physitrack', reason);
    await app.register(physitrackRoutes, { config, db, store, onStored: deps.onPhysitrackStored, onAuthFailure });
  } else {
    logger.warn('POST /webhooks/physitrack is disabled: set PHYSITRACK_API_KEY to enable it');
  }
  return app;
}
