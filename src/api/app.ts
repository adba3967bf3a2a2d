import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import pg from 'pg';
import { z } from 'zod';
import { CursorExpiredError, decodeCursor, encodeCursor, readHead, readPage, type Page } from '../changes/changes-table.js';
import type { Database } from '../db/client.js';
import { API_ERRORS, ApiError, RETRY_AFTER_SECONDS } from '../errors.js';
import { serverFactory } from '../http/connections.js';
import { createThrottledLog, type ThrottledLog } from '../http/throttled-log.js';
import { documentOfSources } from '../storage/document-rows.js';
import type { PdfStorage } from '../storage/pdf-storage.js';
import { authenticate, TOUCH, type Caller } from './consumers-table.js';
import { decodePosition, encodePosition, keyFits, readRows, readSources, ROW_KINDS, type RowKind } from './rows.js';
import type { Wakeup } from './wakeup.js';

// The internal HTTP API: the change feed and the PDFs, for a PMS that cannot read this PostgreSQL.
// Its own Fastify app on its own port (API_PORT), never on the webhook port: an ingress that
// exposes the webhooks does not expose patient data. Every route needs a consumer's bearer token.

export interface ApiDeps {
  db: Database;
  /** The API's own connections (createReadPool): its reads never take a connection from the writes. */
  pool: pg.Pool;
  logger: FastifyBaseLogger;
  storage: Pick<PdfStorage, 'open'>;
  wakeup: Wakeup;
  requestTimeoutMs: number;
  maxConnections: number;
  https?: { key: Buffer; cert: Buffer } | undefined;
}

/** Connections the internal API holds: its reads queue here, never in the writes' pool. */
export const API_POOL_SIZE = 4;

/** The longest a long poll waits; a connection may stay silent a little longer than that. */
export const MAX_WAIT_SECONDS = 60;
/** How often a waiting poll reads the feed again without a notification (a lost listener, a held-back change). */
const RECHECK_MS = 1000;

const changesQuery = z.object({
  after: z.string().max(64).default(''),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  wait: z.coerce.number().int().min(0).max(MAX_WAIT_SECONDS).default(0),
});

const rowsQuery = z.object({
  after: z.string().max(4096).default(''),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

declare module 'fastify' {
  interface FastifyRequest {
    caller?: Caller;
  }
}

function bearerOf(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  const match = typeof header === 'string' ? /^Bearer ([\x21-\x7e]{1,200})$/i.exec(header) : null;
  return match?.[1];
}

export async function buildApiApp(deps: ApiDeps): Promise<FastifyInstance> {
  const { db, wakeup, pool } = deps;
  // What a client can cause at will (PostgreSQL away, a query refused) is logged once a second at most.
  const throttled = createThrottledLog(deps.logger);
  const app = Fastify({
    loggerInstance: deps.logger,
    // onResponse below writes the one line per answer, without the query string.
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: () => randomUUID(),
    bodyLimit: 1024,
    serverFactory: serverFactory({
      requestTimeoutMs: deps.requestTimeoutMs,
      idleTimeoutMs: (MAX_WAIT_SECONDS + 15) * 1000,
      maxConnections: deps.maxConnections,
      tls: deps.https,
    }),
    return503OnClosing: true,
  });
  // Waiting polls answer what they have as soon as the shutdown starts: preClose runs before the
  // server waits for in-flight requests (onClose would run only after them). From then on every
  // answer closes its connection, so no keep-alive connection holds the stop.
  const closing = new AbortController();
  setMaxListeners(0, closing.signal); // one listener per waiting poll, however many there are
  app.addHook('preClose', async () => closing.abort());
  app.addHook('onSend', async (_request, reply) => {
    if (closing.signal.aborted) void reply.header('connection', 'close');
  });
  app.setErrorHandler((error: FastifyError | ApiError, request: FastifyRequest, reply: FastifyReply) => answerError(error, request, reply, throttled));
  app.setNotFoundHandler((_request, reply) => answer(reply, new ApiError('API_ERR_NOT_FOUND')));

  app.addHook('onRequest', async (request) => {
    const token = bearerOf(request);
    const caller = token === undefined ? undefined : await authenticate(pool, token);
    if (!caller) throw new ApiError('API_ERR_UNAUTHENTICATED');
    request.caller = caller;
    void pool.query(TOUCH, [caller.id]).catch(() => undefined);
  });
  // One line per answer, without the query string (a cursor is harmless, but a URL is no place to look for data).
  app.addHook('onResponse', async (request, reply) => {
    const level = reply.statusCode >= 500 ? 'error' : 'debug';
    request.log[level]({ method: request.method, path: request.routeOptions.url ?? 'unknown', statusCode: reply.statusCode, consumer: request.caller?.id, ms: Math.round(reply.elapsedTime) }, 'api request');
  });

  app.get('/v1/changes', async (request, reply) => {
    const query = changesQuery.safeParse(request.query);
    if (!query.success) throw new ApiError('API_ERR_BAD_REQUEST', `Bad query: ${query.error.issues.map((i) => i.path.join('.') || 'query').join(', ')} (after: a cursor, limit: 1 to 1000, wait: 0 to ${MAX_WAIT_SECONDS} seconds)`);
    const after = decodeCursor(query.data.after);
    if (!after) throw new ApiError('API_ERR_BAD_REQUEST', 'after is not a cursor this feed gave out');
    const deadline = Date.now() + query.data.wait * 1000;
    // A poll stops waiting when the service stops, and when its client has gone (it would read the
    // feed for nobody). One controller per poll, its listeners removed after: many polls over a
    // long life leave nothing on the app's signal.
    const stopping = new AbortController();
    let gone = false;
    const onGone = () => ((gone = true), stopping.abort());
    const onClosing = () => stopping.abort();
    reply.raw.once('close', onGone);
    // Gone already (while its token was checked): 'close' has fired and will not again.
    if (reply.raw.destroyed) onGone();
    closing.signal.addEventListener('abort', onClosing, { once: true });
    if (closing.signal.aborted) stopping.abort();
    const stop = stopping.signal;
    let page: Page;
    let from = after;
    try {
      for (;;) {
        page = await readPage(pool, from, query.data.limit, request.caller!.scope);
        // A consumer limited to sources skips others' changes: its cursor moves on, and it goes on
        // waiting for its own, so the answer's timing says nothing of other clinics' writes.
        if (page.count > 0 || Date.now() >= deadline || stop.aborted) break;
        from = page.next;
        await wakeup.wait(Math.min(RECHECK_MS, deadline - Date.now()), stop);
      }
    } finally {
      reply.raw.off('close', onGone);
      closing.signal.removeEventListener('abort', onClosing);
      // onResponse never runs for it: its line is this one.
      if (gone) request.log.debug({ method: request.method, path: '/v1/changes', consumer: request.caller?.id, ms: Math.round(reply.elapsedTime) }, 'api request left by its client');
    }
    // Written as PostgreSQL made it: numbers in the rows' data stay exactly as sent.
    return reply.type('application/json').send(`{"changes":${page.changesJson},"next":${JSON.stringify(encodeCursor(page.next))}}`);
  });

  app.get('/v1/changes/head', async () => ({ cursor: encodeCursor(await readHead(pool)) }));

  app.get<{ Params: { kind: string } }>('/v1/rows/:kind', async (request, reply) => {
    const kind = request.params.kind as RowKind;
    if (!ROW_KINDS.includes(kind)) throw new ApiError('API_ERR_NOT_FOUND', `No such kind of rows: one of ${ROW_KINDS.join(', ')}`);
    const query = rowsQuery.safeParse(request.query);
    if (!query.success) throw new ApiError('API_ERR_BAD_REQUEST', 'Bad query (after: a position this API gave out, limit: 1 to 1000)');
    const after = decodePosition(query.data.after);
    if (after === undefined || (after !== null && !keyFits(kind, after.key))) throw new ApiError('API_ERR_BAD_REQUEST', 'after is not a position this API gave out');
    const page = await readRows(pool, kind, after, query.data.limit, request.caller!.scope);
    const next = page.next === undefined ? 'null' : JSON.stringify(encodePosition(page.next));
    return reply.type('application/json').send(`{"rows":${page.rowsJson},"next":${next}}`);
  });

  // The sources a consumer may read, as receiver_v1.sources shows them (never a credential): how a
  // PMS maps source_id to its own clinic (tenant_ref).
  app.get('/v1/sources', async (request, reply) => reply.type('application/json').send(`{"sources":${await readSources(pool, request.caller!.scope)}}`));

  app.get<{ Params: { id: string } }>('/v1/documents/:id', async (request, reply) => {
    if (!/^[1-9][0-9]{0,18}$/.test(request.params.id)) throw new ApiError('API_ERR_NOT_FOUND');
    const id = BigInt(request.params.id);
    if (!(await documentOfSources(db, id, request.caller!.scope))) throw new ApiError('API_ERR_NOT_FOUND');
    const pdf = await deps.storage.open(id);
    if (!pdf) throw new ApiError('API_ERR_NOT_FOUND');
    const tag = `"${pdf.sha256}"`;
    if (request.headers['if-none-match'] === tag) {
      pdf.stream.destroy();
      return reply.code(304).header('etag', tag).send();
    }
    return reply.type(pdf.contentType).header('content-length', String(pdf.sizeBytes)).header('etag', tag).header('cache-control', 'private, max-age=31536000, immutable').send(pdf.stream);
  });

  return app;
}

function answer(reply: FastifyReply, error: ApiError): FastifyReply {
  if (error.statusCode === 401) void reply.header('www-authenticate', 'Bearer');
  if (error.statusCode === 503) void reply.header('retry-after', String(RETRY_AFTER_SECONDS));
  return reply.code(error.statusCode).send({ error: error.code, message: error.message });
}

/** 4xx say what was wrong; anything else is a 503 that names nothing internal (and is logged). */
function answerError(error: FastifyError | ApiError, request: FastifyRequest, reply: FastifyReply, throttled: ThrottledLog): FastifyReply {
  if (error instanceof ApiError) return answer(reply, error);
  if (error instanceof CursorExpiredError) return answer(reply, new ApiError('API_ERR_CURSOR_EXPIRED'));
  if (typeof error.statusCode === 'number' && error.statusCode >= 400 && error.statusCode < 500) return answer(reply, new ApiError('API_ERR_BAD_REQUEST'));
  const err = error instanceof pg.DatabaseError ? { code: error.code, message: error.message } : { name: error.name, message: error.message };
  throttled.write('error', `api:${err.message}`, { err, path: request.routeOptions.url }, 'api request failed');
  return answer(reply, new ApiError('API_ERR_UNAVAILABLE', API_ERRORS.API_ERR_UNAVAILABLE.message));
}
