import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { recordRefusedDelivery } from '../audit.js';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { checkFileUrl } from '../downloads/url-policy.js';
import { WebhookError } from '../errors.js';
import { storeWithinDeadline } from './ack-deadline.js';
import { matchesAny } from './constant-time.js';
import { acceptRawJson, parseJsonBody } from './json-body.js';
import { toPhysitrackNotice } from './physitrack-payload.js';
import type { PhysitrackStore } from './physitrack-store.js';

export interface PhysitrackRouteOptions {
  config: Config;
  db: Database;
  store: PhysitrackStore;
  /** Called after a downloadable delivery is committed, so the worker starts at once. */
  onStored?: () => void;
  onAuthFailure?: (reason: string) => void;
}

function authenticate(config: Config['physitrack'], body: unknown): string | undefined {
  const fields = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
  const { api_key: apiKey, token } = fields;
  if (typeof apiKey !== 'string' || apiKey === '') return 'missing_api_key';
  if (!matchesAny(apiKey, config.apiKeys)) return 'bad_api_key';
  if (config.tokens && (typeof token !== 'string' || !matchesAny(token, config.tokens))) return 'token_not_accepted';
  return undefined;
}

/**
 * POST /webhooks/physitrack: the key travels inside the JSON body, so the body is parsed (size- and
 * depth-limited) before the key is checked; nothing else is looked at until it matches.
 * Then: validate → one durable insert (the row is the download job) → 204, and the worker fetches later.
 */
export async function physitrackRoutes(app: FastifyInstance, { config, db, store, onStored, onAuthFailure }: PhysitrackRouteOptions): Promise<void> {
  acceptRawJson(app);
  const policy = { allowedHosts: config.physitrack.fileUrlHosts, allowPrivateAddresses: config.download.allowPrivateAddresses };

  app.post('/webhooks/physitrack', async (request, reply) => {
    const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const body = parseJsonBody(rawBody);
    const failure = authenticate(config.physitrack, body);
    if (failure) {
      request.log.warn({ vendor: 'physitrack', reason: failure }, 'physitrack delivery not authenticated');
      onAuthFailure?.(failure);
      throw new WebhookError('WH_ERR_UNAUTHENTICATED', `Authentication failed (${failure})`);
    }

    const bodySha256 = createHash('sha256').update(rawBody).digest('hex');
    const sourceAddress = request.ip ?? null;
    let notice;
    try {
      notice = toPhysitrackNotice(body);
    } catch (err) {
      recordRefusedDelivery(db, { sourceId: 'default', vendor: 'physitrack', eventId: null, statusCode: 400, bodySha256, sourceAddress }, request.log);
      throw err;
    }

    const check = checkFileUrl(notice.fileUrl, policy);
    const refusal = check.ok ? null : `The file URL was refused and will not be downloaded: ${check.reason}.`;
    const remainingMs = config.ackDeadlineMs - reply.elapsedTime;
    const deliveryId = await storeWithinDeadline(
      () => store.save({ sourceId: 'default', notice, refusal, deadlineHours: config.download.deadlineHours, bodySha256, sourceAddress }, Date.now() + remainingMs),
      remainingMs,
      () => recordRefusedDelivery(db, { sourceId: 'default', vendor: 'physitrack', eventId: null, statusCode: 503, bodySha256, sourceAddress }, request.log),
    );
    const log = request.log.child({ vendor: 'physitrack', deliveryId: String(deliveryId), host: check.host ?? null });
    if (!check.ok) {
      log.warn({ reason: check.reason }, 'physitrack delivery recorded, but its file URL is refused');
      throw new WebhookError('WH_ERR_URL_REFUSED', `The file URL is refused by the download policy: ${check.reason}`);
    }
    log.info({ updated: notice.updated }, 'physitrack delivery stored');
    onStored?.();
    return reply.code(204).send();
  });
}
