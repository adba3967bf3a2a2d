import type { FastifyInstance, FastifyRequest } from 'fastify';
import { WebhookError } from '../errors.js';
import { logQuietly } from '../http/request-log.js';
import type { ThrottledLog } from '../http/throttled-log.js';
import type { Vendor } from '../metrics.js';
import { DEFAULT_SOURCE_ID } from '../sources/credentials.js';
import type { SourceHealth } from '../sources/health.js';
import type { Source, SourceRegistry } from '../sources/registry.js';

export interface SourceScopeOptions {
  sources: SourceRegistry;
  health: SourceHealth;
  onAuthFailure?: ((reason: string) => void) | undefined;
  /** Where failures a client can repeat at will are logged: at most once a second per source and reason. */
  throttled: ThrottledLog;
}

export interface SourceScope {
  /** The source the request was sent to (resolved before its body was read). */
  sourceOf(request: FastifyRequest): Source;
  /**
   * An authentication failure: counted, named in the source's health, and logged at most once a
   * second per source and reason (with the number suppressed); the answer itself is thrown as usual.
   */
  authFailed(request: FastifyRequest, reason: string, hint?: string): void;
}

/** Reasons by answer, for failures the route did not name itself (Fastify's own 413/415, 503s). */
const REASON_BY_STATUS: Record<number, string> = {
  400: 'bad_payload',
  404: 'source_disabled',
  413: 'body_too_large',
  415: 'unsupported_media_type',
  422: 'url_refused',
  503: 'unavailable',
};

function reasonOf(error: unknown): string | undefined {
  if (!(error instanceof WebhookError)) return undefined;
  return error.code.replace(/^WH_ERR_/, '').toLowerCase();
}

/**
 * Inside a vendor plugin: resolves `/webhooks/<vendor>` and `/webhooks/<vendor>/default` to the
 * environment's source and `/webhooks/<vendor>/:sourceId` to a table source, before the body is
 * read. An unknown or disabled source is a 404, never a 403 (Patiro would stop retrying), and is
 * only logged and counted. Each answer of a known source goes into its health.
 */
export function sourceScope(app: FastifyInstance, vendor: Vendor, { sources, health, onAuthFailure, throttled }: SourceScopeOptions): SourceScope {
  const resolved = new WeakMap<FastifyRequest, Source>();
  const failures = new WeakMap<FastifyRequest, { reason: string; hint?: string | undefined }>();
  /** The request's own line gives way to a throttled one: a flood of them costs a line a second. */
  const logThrottled = (request: FastifyRequest, level: 'warn' | 'error', key: string, fields: Record<string, unknown>, msg: string) => {
    logQuietly(request);
    throttled.write(level, `${vendor}/${key}`, { vendor, reqId: request.id, path: request.url.split('?')[0], ...fields }, msg);
  };

  app.addHook('onRequest', async (request) => {
    const id = (request.params as { sourceId?: string }).sourceId ?? DEFAULT_SOURCE_ID;
    const found = sources.lookup(vendor, id);
    if (found.found === 'unknown') {
      // Never 404 (that would say it does not exist) and never a 2xx unchecked: the sender retries.
      logThrottled(request, 'warn', 'sources_unknown', { sourceId: id.slice(0, 64), reason: 'sources_unknown' }, 'delivery for a source that cannot be checked yet (the sources table has not been read, and there is no local copy)');
      throw new WebhookError('WH_ERR_SOURCE_UNAVAILABLE', 'The sources cannot be checked right now; retry later');
    }
    if (found.found === 'none') {
      // Keyed by vendor only: made-up ids are as many as a client likes.
      logThrottled(request, 'warn', 'unknown_source', { sourceId: id.slice(0, 64), reason: 'unknown_source' }, 'delivery for a source that does not exist');
      onAuthFailure?.('unknown_source');
      throw new WebhookError('WH_ERR_UNKNOWN_SOURCE');
    }
    const { source } = found;
    resolved.set(request, source);
    if (found.found === 'disabled') {
      logThrottled(request, 'warn', `${id}/source_disabled`, { sourceId: id, reason: 'source_disabled' }, 'delivery for a disabled source');
      onAuthFailure?.('source_disabled');
      failures.set(request, { reason: 'source_disabled' });
      throw new WebhookError('WH_ERR_UNKNOWN_SOURCE');
    }
    if (source.unreadable) {
      logThrottled(request, 'error', `${id}/credentials_unreadable`, { sourceId: id, reason: source.unreadable }, 'delivery for a source whose credentials cannot be opened (check SOURCES_SECRET_KEY)');
      failures.set(request, { reason: 'credentials_unreadable', hint: 'check SOURCES_SECRET_KEY' });
      throw new WebhookError('WH_ERR_SOURCE_UNAVAILABLE');
    }
  });

  app.addHook('onError', async (request, _reply, error) => {
    const reason = reasonOf(error);
    if (reason && !failures.has(request)) failures.set(request, { reason, hint: error instanceof WebhookError ? error.detail : undefined });
  });

  app.addHook('onResponse', async (request, reply) => {
    const source = resolved.get(request);
    if (!source) return;
    if (reply.statusCode < 300) return health.succeeded(vendor, source.id);
    const failure = failures.get(request) ?? { reason: REASON_BY_STATUS[reply.statusCode] ?? `http_${reply.statusCode}` };
    health.failed(vendor, source.id, failure.reason, failure.hint);
  });

  return {
    sourceOf(request) {
      const source = resolved.get(request);
      if (!source) throw new Error('the source is resolved in onRequest, before any handler runs');
      return source;
    },
    authFailed(request, reason, hint) {
      failures.set(request, { reason, hint });
      onAuthFailure?.(reason);
      const sourceId = resolved.get(request)?.id;
      logThrottled(request, 'warn', `${sourceId}/${reason}`, { sourceId, reason, hint }, `${vendor} delivery not authenticated`);
    },
  };
}
