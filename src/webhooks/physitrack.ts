import { createHash } from 'node:crypto';
import type { FastifyInstance, RouteHandlerMethod } from 'fastify';
import { newReceipt, recordRefusedDelivery } from '../audit.js';
import type { Config } from '../config.js';
import type { Database } from '../db/client.js';
import { checkFileUrl } from '../downloads/url-policy.js';
import { WebhookError } from '../errors.js';
import { logOutcome } from '../http/request-log.js';
import { activeSecrets } from '../sources/credentials.js';
import type { Source } from '../sources/registry.js';
import { storeWithinDeadline } from './ack-deadline.js';
import { matchesAny } from './constant-time.js';
import { acceptRawJson, parseJsonBody } from './json-body.js';
import { toPhysitrackNotice } from './physitrack-payload.js';
import type { PhysitrackStore } from './physitrack-store.js';
import { sourceScope, type SourceScopeOptions } from './source-scope.js';

export interface PhysitrackRouteOptions extends SourceScopeOptions {
  config: Config;
  db: Database;
  store: PhysitrackStore;
  /** Called after a downloadable delivery is committed, so the worker starts at once. */
  onStored?: (() => void) | undefined;
}

function authenticate(source: Source, body: unknown, now: Date): { reason: string; hint?: string } | undefined {
  const fields = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
  const { api_key: apiKey, token } = fields;
  if (typeof apiKey !== 'string' || apiKey === '') return { reason: 'missing_api_key' };
  const keys = activeSecrets(source.secrets, now.getTime());
  if (!matchesAny(apiKey, keys)) return { reason: 'bad_api_key', hint: `matched none of ${keys.length} key${keys.length === 1 ? '' : 's'}` };
  const accepted = source.practitionerTokens;
  if (accepted && (typeof token !== 'string' || !matchesAny(token, accepted))) return { reason: 'token_not_accepted', hint: 'the practitioner token is not in PHYSITRACK_TOKENS' };
  return undefined;
}

/**
 * POST /webhooks/physitrack[/:sourceId]: the source is resolved from the path; its key travels
 * inside the JSON body, so the body is parsed (size- and depth-limited) before the key is checked,
 * and nothing else is looked at until it matches. Then: validate → one durable insert (the row is
 * the download job) → 204, and the worker fetches later.
 */
export async function physitrackRoutes(app: FastifyInstance, { config, db, store, onStored, ...scopeOptions }: PhysitrackRouteOptions): Promise<void> {
  acceptRawJson(app);
  const scope = sourceScope(app, 'physitrack', scopeOptions);
  const policy = { allowedHosts: config.physitrack.fileUrlHosts, allowPrivateAddresses: config.download.allowPrivateAddresses, allowHttpLocalhost: config.download.allowHttpLocalhost };

  const handler: RouteHandlerMethod = async (request, reply) => {
    const source = scope.sourceOf(request);
    const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
    const receivedAt = new Date();
    const body = parseJsonBody(rawBody);
    const failure = authenticate(source, body, receivedAt);
    if (failure) {
      scope.authFailed(request, failure.reason, failure.hint);
      throw new WebhookError('WH_ERR_UNAUTHENTICATED', `Authentication failed (${failure.reason})`);
    }

    const bodySha256 = createHash('sha256').update(rawBody).digest('hex');
    const audit = { sourceId: source.id, vendor: 'physitrack' as const, eventId: null, bodySha256, sourceAddress: request.ip ?? null };
    let notice;
    try {
      notice = toPhysitrackNotice(body);
    } catch (err) {
      recordRefusedDelivery(db, { ...audit, statusCode: 400 }, request.log);
      throw err;
    }

    const check = checkFileUrl(notice.fileUrl, policy);
    const refusal = check.ok ? null : `The file URL was refused and will not be downloaded: ${check.reason}.`;
    const remainingMs = config.ackDeadlineMs - reply.elapsedTime;
    const delivery = { receipt: newReceipt(receivedAt), sourceId: source.id, notice, refusal, deadlineHours: config.download.deadlineHours, bodySha256, sourceAddress: audit.sourceAddress };
    const stored = await storeWithinDeadline(
      () => store.save(delivery, Date.now() + remainingMs),
      remainingMs,
      (statusCode) => recordRefusedDelivery(db, { ...audit, statusCode }, request.log),
    );
    const fields = { vendor: 'physitrack', sourceId: source.id, deliveryId: stored.id === null ? null : String(stored.id), host: check.host ?? null, redelivery: stored.redelivery };
    if (!check.ok) {
      request.log.warn({ ...fields, reason: check.reason }, 'physitrack delivery recorded, but its file URL is refused');
      throw new WebhookError('WH_ERR_URL_REFUSED', `The file URL is refused by the download policy: ${check.reason}`);
    }
    const msg = stored.spooled ? 'physitrack delivery spooled (PostgreSQL is away)' : stored.redelivery ? 'physitrack notice received again' : 'physitrack delivery stored';
    logOutcome(request, msg, { ...fields, updated: notice.updated, downloadStatus: stored.downloadStatus });
    // A new notice, one that put a failed or expired delivery back in the queue, or one whose
    // receipt was recorded already (a retry after a lost COMMIT answer: its status is not known).
    if (stored.downloadStatus === 'pending' || (stored.id === null && !stored.spooled)) onStored?.();
    return reply.code(204).send();
  };

  app.post('/webhooks/physitrack', handler);
  app.post('/webhooks/physitrack/:sourceId', handler);
}
