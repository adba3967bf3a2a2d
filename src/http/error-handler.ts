import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ERRORS, RETRY_AFTER_SECONDS, WebhookError } from '../errors.js';

/** Fastify's own 4xx errors, answered with our codes and a clear sentence. */
const FASTIFY_CODES: Record<string, WebhookError['code']> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'WH_ERR_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'WH_ERR_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'WH_ERR_BAD_PAYLOAD',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'WH_ERR_BAD_JSON',
  FST_ERR_CTP_INVALID_JSON_BODY: 'WH_ERR_BAD_JSON',
};

function toWebhookError(error: FastifyError | WebhookError): WebhookError | undefined {
  if (error instanceof WebhookError) return error;
  const mapped = FASTIFY_CODES[error.code];
  if (mapped) return new WebhookError(mapped);
  if (error instanceof SyntaxError || error.statusCode === 400) return new WebhookError('WH_ERR_BAD_JSON');
  return undefined;
}

/** One place that answers errors: 4xx say what was wrong, 5xx say nothing internal. Logged once. */
export function errorHandler(error: FastifyError | WebhookError, request: FastifyRequest, reply: FastifyReply): void {
  const known = toWebhookError(error);
  if (known) {
    const reason = known.detail ?? ERRORS[known.code].message;
    if (known.statusCode >= 500) request.log.error({ code: known.code, reason, cause: describeCause(known.cause) }, 'request not stored');
    else request.log.info({ code: known.code, reason }, 'request refused');
    if (known.statusCode === 503) void reply.header('retry-after', String(RETRY_AFTER_SECONDS));
    void reply.code(known.statusCode).send({ error: known.code, message: known.message });
    return;
  }
  if (typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500) {
    request.log.info({ code: error.code, reason: error.message }, 'request refused');
    void reply.code(error.statusCode).send({ error: error.code ?? 'WH_ERR_BAD_REQUEST', message: error.message });
    return;
  }
  request.log.error({ cause: describeCause(error) }, 'request failed');
  void reply.header('retry-after', String(RETRY_AFTER_SECONDS)).code(503).send({ error: 'WH_ERR_UNAVAILABLE', message: ERRORS.WH_ERR_UNAVAILABLE.message });
}

/**
 * The cause's name, code and first line only: database errors can carry row values in their
 * detail fields, and those may be patient data.
 */
function describeCause(cause: unknown): string | undefined {
  if (!(cause instanceof Error)) return undefined;
  const code = (cause as { code?: unknown }).code;
  // Prisma wraps PostgreSQL's errors; their SQLSTATE says what happened, their message may quote values.
  const sqlState = (cause as { meta?: { driverAdapterError?: { cause?: { originalCode?: unknown } } } }).meta?.driverAdapterError?.cause?.originalCode;
  const message = typeof sqlState === 'string' ? `SQLSTATE ${sqlState}` : cause.message.split('\n')[0]?.slice(0, 200);
  return `${cause.name}${typeof code === 'string' ? ` ${code}` : ''}: ${message}`;
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): void {
  void reply.code(404).send({ error: 'WH_ERR_NOT_FOUND', message: `No route for ${request.method} ${request.url.split('?')[0]}` });
}
