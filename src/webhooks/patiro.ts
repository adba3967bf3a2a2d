import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { recordRefusedDelivery } from '../audit.js';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { WebhookError } from '../errors.js';
import { storeWithinDeadline } from './ack-deadline.js';
import { acceptRawJson, parseJsonBody } from './json-body.js';
import { authenticatePatiro } from './patiro-auth.js';
import { toPatiroEvent } from './patiro-payload.js';
import type { PatiroStore } from './patiro-store.js';

export interface PatiroRouteOptions {
  config: Config;
  db: Database;
  store: PatiroStore;
  onAuthFailure?: (reason: string) => void;
}

/**
 * POST /webhooks/patiro: authenticate the raw bytes → parse → validate → one durable write → 204.
 * Patiro stops retrying on one particular 4xx; every failure here is 401, 400, 413, 415 or 503,
 * so a misconfiguration can be fixed while Patiro keeps retrying (about 10 hours).
 */
export async function patiroRoutes(app: FastifyInstance, { config, db, store, onAuthFailure }: PatiroRouteOptions): Promise<void> {
  acceptRawJson(app);

  app.post('/webhooks/patiro', async (request, reply) => {
    const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const query = request.query as Record<string, string | string[] | undefined>;
    const auth = authenticatePatiro(config.patiro, { rawBody, headers: request.headers, token: query.token }, new Date());
    if (!auth.ok) {
      request.log.warn({ vendor: 'patiro', reason: auth.reason }, 'patiro delivery not authenticated');
      onAuthFailure?.(auth.reason);
      throw new WebhookError('WH_ERR_UNAUTHENTICATED', `Authentication failed (${auth.reason})`);
    }

    const bodySha256 = createHash('sha256').update(rawBody).digest('hex');
    const audit = { sourceId: 'default', vendor: 'patiro' as const, bodySha256, sourceAddress: request.ip ?? null };
    let event;
    try {
      event = toPatiroEvent(parseJsonBody(rawBody));
    } catch (err) {
      recordRefusedDelivery(db, { ...audit, eventId: null, statusCode: 400 }, request.log);
      throw err;
    }

    const signedAt = auth.signedAt ?? new Date();
    const remainingMs = config.ackDeadlineMs - reply.elapsedTime;
    const { inserted } = await storeWithinDeadline(
      () => store.save({ sourceId: 'default', event, signedAt, bodySha256, sourceAddress: audit.sourceAddress }, Date.now() + remainingMs),
      remainingMs,
      () => recordRefusedDelivery(db, { ...audit, eventId: event.eventId, statusCode: 503 }, request.log),
    );
    request.log.info({ vendor: 'patiro', eventId: event.eventId, eventType: event.eventType, redelivery: !inserted }, 'patiro event stored');
    return reply.code(204).send();
  });
}
