import { createHash } from 'node:crypto';
import type { FastifyInstance, RouteHandlerMethod } from 'fastify';
import { newReceipt, recordRefusedDelivery } from '../audit.js';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { WebhookError } from '../errors.js';
import { logOutcome } from '../http/request-log.js';
import { activeSecrets } from '../sources/credentials.js';
import type { Source } from '../sources/registry.js';
import { storeWithinDeadline } from './ack-deadline.js';
import { acceptRawJson, parseJsonBody } from './json-body.js';
import { authenticatePatiro, patiroFailureHint, type PatiroAuthConfig } from './patiro-auth.js';
import { toPatiroEvent } from './patiro-payload.js';
import type { PatiroStore } from './patiro-store.js';
import { sourceScope, type SourceScopeOptions } from './source-scope.js';

export interface PatiroRouteOptions extends SourceScopeOptions {
  config: Config;
  db: Database;
  store: PatiroStore;
}

/** What a request to this source must carry, now: a rotated-out secret stops counting at its end. */
function authConfigOf(source: Source, toleranceSeconds: number, now: Date): PatiroAuthConfig {
  return { signingSecrets: activeSecrets(source.secrets, now.getTime()), timestampToleranceSeconds: toleranceSeconds, token: source.token ?? undefined, basicAuth: source.basicAuth };
}

/**
 * POST /webhooks/patiro[/:sourceId]: resolve the source → authenticate the raw bytes with its
 * credentials → parse → validate → one durable write → 204. Patiro stops retrying on one
 * particular 4xx; every failure here is 401, 400, 404, 413, 415 or 503, so a misconfiguration
 * can be fixed while Patiro keeps retrying (about 10 hours).
 */
export async function patiroRoutes(app: FastifyInstance, { config, db, store, ...scopeOptions }: PatiroRouteOptions): Promise<void> {
  acceptRawJson(app);
  const scope = sourceScope(app, 'patiro', scopeOptions);

  const handler: RouteHandlerMethod = async (request, reply) => {
    const source = scope.sourceOf(request);
    const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const query = request.query as Record<string, string | string[] | undefined>;
    const now = new Date();
    const authConfig = authConfigOf(source, config.patiro.timestampToleranceSeconds, now);
    const auth = authenticatePatiro(authConfig, { rawBody, headers: request.headers, token: query.token }, now);
    if (!auth.ok) {
      const hint = patiroFailureHint(auth.reason, authConfig, request.headers, now);
      scope.authFailed(request, auth.reason, hint);
      throw new WebhookError('WH_ERR_UNAUTHENTICATED', `Authentication failed (${auth.reason})`);
    }

    const bodySha256 = createHash('sha256').update(rawBody).digest('hex');
    const audit = { sourceId: source.id, vendor: 'patiro' as const, bodySha256, sourceAddress: request.ip ?? null };
    let event;
    try {
      event = toPatiroEvent(parseJsonBody(rawBody), rawBody.toString('utf8'));
    } catch (err) {
      recordRefusedDelivery(db, { ...audit, eventId: null, statusCode: 400 }, request.log);
      throw err;
    }

    const signedAt = auth.signedAt ?? now;
    const remainingMs = config.ackDeadlineMs - reply.elapsedTime;
    const { inserted, spooled } = await storeWithinDeadline(
      () => store.save({ receipt: newReceipt(now), sourceId: source.id, event, signedAt, bodySha256, sourceAddress: audit.sourceAddress }, Date.now() + remainingMs),
      remainingMs,
      (statusCode) => recordRefusedDelivery(db, { ...audit, eventId: event.eventId, statusCode }, request.log),
    );
    const fields = { vendor: 'patiro', sourceId: source.id, eventId: event.eventId, eventType: event.eventType };
    if (spooled) logOutcome(request, 'patiro event spooled (PostgreSQL is away)', fields);
    else logOutcome(request, 'patiro event stored', { ...fields, redelivery: !inserted });
    return reply.code(204).send();
  };

  app.post('/webhooks/patiro', handler);
  app.post('/webhooks/patiro/:sourceId', handler);
}
