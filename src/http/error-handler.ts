import http from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { ThrottledLog } from './throttled-log.js';
import { ERRORS, RETRY_AFTER_SECONDS, WebhookError } from '../errors.js';
import { logOutcome, logQuietly } from './request-log.js';

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

/**
 * One place that answers errors: 4xx say what was wrong, 5xx say nothing internal. Each is logged
 * once, on the request's one line (request-log.ts), never with the query string.
 */
export function errorHandler(error: FastifyError | WebhookError, request: FastifyRequest, reply: FastifyReply): void {
  const known = toWebhookError(error);
  if (known) {
    const reason = known.detail ?? ERRORS[known.code].message;
    if (known.statusCode >= 500) logOutcome(request, 'request not stored', { code: known.code, reason, cause: describeCause(known.cause) }, 'error');
    else logOutcome(request, 'request refused', { code: known.code, reason });
    if (known.statusCode === 503) void reply.header('retry-after', String(RETRY_AFTER_SECONDS));
    void reply.code(known.statusCode).send({ error: known.code, message: known.message });
    return;
  }
  if (typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500) {
    // Fastify's own 4xx, in our shape: its code (FST_ERR_…) is named in the log, not the answer.
    logOutcome(request, 'request refused', { code: error.code, reason: error.message.split('?')[0] });
    void reply.code(error.statusCode).send({ error: 'WH_ERR_BAD_REQUEST', message: 'The request is malformed' });
    return;
  }
  logOutcome(request, 'request failed', { cause: describeCause(error) }, 'error');
  void reply.header('retry-after', String(RETRY_AFTER_SECONDS)).code(503).send({ error: 'WH_ERR_UNAVAILABLE', message: ERRORS.WH_ERR_UNAVAILABLE.message });
}

/**
 * Fastify's framework errors (a URL that does not decode, a path parameter over its limit), which it
 * would answer itself, echoing the URL with its query string: answered in our shape instead.
 */
export function frameworkErrorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const badUrl = error.code === 'FST_ERR_BAD_URL';
  const status = badUrl ? 400 : 414;
  // Fastify writes no line of its own for these: this is the request's one line (path only).
  logQuietly(request);
  request.log.info({ req: request, res: { statusCode: status }, code: error.code, reason: badUrl ? 'the URL is not valid' : 'a path parameter is too long' }, 'request refused');
  void reply
    .code(status)
    .send(badUrl ? { error: 'WH_ERR_BAD_URL', message: 'The URL is not valid (a malformed %-escape)' } : { error: 'WH_ERR_URL_TOO_LONG', message: 'A path segment is longer than any source id' });
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

const CLIENT_ERRORS: Record<string, [number, string, string]> = {
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'WH_ERR_REQUEST_TIMEOUT', 'The request did not arrive within REQUEST_TIMEOUT_MS'],
  HPE_HEADER_OVERFLOW: [431, 'WH_ERR_HEADERS_TOO_LARGE', 'The request headers are too large'],
};

/**
 * What Node's HTTP parser refuses before any route sees it (a malformed request line, headers too
 * large, a request that took too long to arrive): answered in our shape, and logged at most once a
 * second per kind, since a client can send them at will.
 */
export function clientErrorHandler(throttled: ThrottledLog) {
  return (err: NodeJS.ErrnoException, socket: Socket): void => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    const [status, code, message] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'WH_ERR_BAD_REQUEST', 'The request is malformed'];
    throttled.write('info', `client_error/${code}`, { code, parserCode: err.code, remoteAddress: socket.remoteAddress }, 'request refused by the HTTP parser');
    if (socket.writable) {
      const body = JSON.stringify({ error: code, message });
      socket.write(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    }
    socket.destroy();
  };
}
