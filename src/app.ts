import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Config } from './config.js';
import { createAvailability, type DatabaseAvailability } from './db/availability.js';
import { reservedPoolOf, type Database } from './db/client.js';
import { storeOptionsFor } from './db/group-commit.js';
import { serverFactory } from './http/connections.js';
import { clientErrorHandler, errorHandler, frameworkErrorHandler, notFoundHandler } from './http/error-handler.js';
import { healthRoutes } from './http/health.js';
import { closeConnectionsWhenDraining, createLifecycle, type Lifecycle } from './http/lifecycle.js';
import { metricsRoute } from './http/metrics-route.js';
import { logAbortedRequests, OneLinePerRequest } from './http/request-log.js';
import { createThrottledLog } from './http/throttled-log.js';
import type { Metrics, Vendor } from './metrics.js';
import { createSourceHealth, type SourceHealth } from './sources/health.js';
import { createSourceRegistry, type SourceRegistry } from './sources/registry.js';
import type { DurableWrite } from './spool/durable-write.js';
import type { Journal } from './spool/journal.js';
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
  https?: { key: Buffer; cert: Buffer } | undefined;
  /** The sources the webhooks serve; by default loaded here (reloaded periodically, not listening). */
  sources?: SourceRegistry;
  /** Where each source's health is aggregated; by default created here and flushed on close. */
  health?: SourceHealth;
  /** Set `draining` to make /readyz answer 503 and every answer close its connection (shutdown). */
  lifecycle?: Lifecycle;
  /** Whether PostgreSQL answers; by default probed here over the reserved pool. */
  availability?: DatabaseAvailability;
  /** The stores' durable write (database, else the spool); without it a failed write is a 503. */
  durable?: DurableWrite;
  /** The spool's journal, for /readyz. */
  journal?: Journal | undefined;
}

const VENDOR_ROUTES: Record<string, Vendor> = {
  '/webhooks/patiro': 'patiro',
  '/webhooks/patiro/:sourceId': 'patiro',
  '/webhooks/physitrack': 'physitrack',
  '/webhooks/physitrack/:sourceId': 'physitrack',
};

/** Every answer of a vendor route is counted and timed, whatever path produced it. */
function countDeliveries(app: FastifyInstance, metrics: Metrics): void {
  app.addHook('onResponse', async (request, reply) => {
    const vendor = VENDOR_ROUTES[request.routeOptions.url ?? ''];
    if (vendor) metrics.delivery(vendor, reply.statusCode, reply.elapsedTime / 1000);
  });
}

/** Registers every plugin and route explicitly. Never listens: main.ts does, tests use inject(). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, db, logger, metrics } = deps;
  // What a client can cause at will is logged at most once a second per kind (and counted).
  const throttled = createThrottledLog(logger);
  let droppedWarnedAt = 0;
  const app = Fastify({
    loggerInstance: logger,
    logController: new OneLinePerRequest(),
    bodyLimit: config.bodyLimitBytes,
    genReqId: () => randomUUID(),
    // Webhook senders answer within seconds or give up; a stuck connection must not hold a socket.
    serverFactory: serverFactory({
      requestTimeoutMs: config.requestTimeoutMs,
      maxConnections: config.maxConnections,
      tls: deps.https,
      onDrop() {
        metrics?.connectionDropped('max_connections');
        if (Date.now() - droppedWarnedAt < 60_000) return;
        droppedWarnedAt = Date.now();
        logger.warn({ maxConnections: config.maxConnections }, 'MAX_CONNECTIONS connections are open: new ones are refused (said at most once a minute; counted in webhook_connections_dropped_total)');
      },
      onPipelineFlood(remoteAddress) {
        metrics?.connectionDropped('pipelining');
        throttled.write('warn', 'pipelining', { remoteAddress }, 'closed a connection that pipelined requests without reading the answers');
      },
    }),
    frameworkErrors: frameworkErrorHandler,
    clientErrorHandler: clientErrorHandler(throttled),
    return503OnClosing: true,
  });
  const lifecycle = deps.lifecycle ?? createLifecycle();
  closeConnectionsWhenDraining(app, lifecycle);
  logAbortedRequests(app);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(notFoundHandler);

  if (metrics) countDeliveries(app, metrics);
  if (metrics && config.metrics.port === undefined) await app.register(metricsRoute, { metrics });
  const availability = deps.availability ?? createAvailability({ probe: () => reservedPoolOf(db).query('SELECT 1'), initiallyUp: true });
  if (!deps.availability) app.addHook('onClose', async () => availability.stop());
  await app.register(healthRoutes, { lifecycle, availability, journal: deps.journal });

  const sources = deps.sources ?? (await createSourceRegistry({ db, config, log: logger }));
  const health = deps.health ?? createSourceHealth({ db, log: logger.child({ component: 'source-health' }) });
  // What this app made, it closes; what it was given, its owner does.
  app.addHook('onClose', async () => {
    if (!deps.health) await health.stop();
    if (!deps.sources) await sources.close();
  });
  const scope = (vendor: Vendor) => ({ sources, health, throttled, onAuthFailure: metrics && ((reason: string) => metrics.authFailure(vendor, reason)) });
  const storeOptions = storeOptionsFor(config);
  const patiroStore = deps.patiroStore ?? createPatiroStore(db, storeOptions, deps.durable);
  const physitrackStore = deps.physitrackStore ?? createPhysitrackStore(db, storeOptions, deps.durable);
  await app.register(patiroRoutes, { config, db, store: patiroStore, ...scope('patiro') });
  await app.register(physitrackRoutes, { config, db, store: physitrackStore, onStored: deps.onPhysitrackStored, ...scope('physitrack') });
  // The environment's source answers 404 when unset, so no endpoint runs without authentication.
  if (!isPatiroConfigured(config.patiro)) {
    logger.warn('POST /webhooks/patiro is disabled: set PATIRO_SIGNING_SECRET, PATIRO_TOKEN or PATIRO_BASIC_AUTH to enable it (sources from the table still work on /webhooks/patiro/<id>)');
  }
  if (config.physitrack.apiKeys.length === 0) {
    logger.warn('POST /webhooks/physitrack is disabled: set PHYSITRACK_API_KEY to enable it (sources from the table still work on /webhooks/physitrack/<id>)');
  }
  return app;
}
