import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { FastifyServerFactory } from 'fastify';

// The webhook port faces the internet. What one client can hold here is bounded: connections
// (MAX_CONNECTIONS, so the process keeps descriptors for PostgreSQL and PDF files), the time a
// request may take to arrive (REQUEST_TIMEOUT_MS, for its headers too: Node's 60 s headersTimeout
// would otherwise win, and its check would run every 30 s), and the answers a connection may have
// outstanding (a client that pipelines requests and never reads the answers).

/** Answers one connection may owe at once; a webhook sender sends one request at a time. */
export const MAX_IN_FLIGHT_PER_CONNECTION = 16;

/** Fastify's default: longer than the idle timeout of common load balancers (60 s). */
const KEEP_ALIVE_TIMEOUT_MS = 72_000;

export interface ConnectionLimits {
  requestTimeoutMs: number;
  maxConnections: number;
  tls?: { key: Buffer; cert: Buffer } | undefined;
  /** How long a connection may stay silent (no bytes either way); requestTimeoutMs by default. A long poll needs more. */
  idleTimeoutMs?: number;
  /** A connection was refused because MAX_CONNECTIONS were open. */
  onDrop?: () => void;
  /** A connection was closed for owing more than MAX_IN_FLIGHT_PER_CONNECTION answers. */
  onPipelineFlood?: (remoteAddress: string | undefined) => void;
}

/**
 * Counts the requests a connection has in flight (answered or not yet); one past the bound closes
 * the connection, and that request and every one after it go unanswered and unhandled. Node reads
 * on while its outgoing buffer is small, and a request parsed is a request handled: without this,
 * 10,000 pipelined requests are 10,000 handlers and their answers in memory.
 */
function boundInFlight(handler: http.RequestListener, onFlood: ConnectionLimits['onPipelineFlood']): http.RequestListener {
  const inFlight = new WeakMap<Socket, number>();
  return (req, res) => {
    const socket = req.socket;
    if (socket.destroyed) return;
    const n = (inFlight.get(socket) ?? 0) + 1;
    inFlight.set(socket, n);
    res.once('close', () => inFlight.set(socket, (inFlight.get(socket) ?? 1) - 1));
    if (n > MAX_IN_FLIGHT_PER_CONNECTION) {
      onFlood?.(socket.remoteAddress);
      socket.destroy();
      return;
    }
    handler(req, res);
  };
}

/** The HTTP(S) server Fastify runs on, with the limits above. */
export function serverFactory(limits: ConnectionLimits): FastifyServerFactory {
  return (handler) => {
    const timeouts = {
      requestTimeout: limits.requestTimeoutMs,
      // Not longer than the whole request may take; checked every second, so a slow request is
      // closed within about a second of its limit.
      headersTimeout: limits.requestTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, limits.requestTimeoutMs),
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    };
    const listener = boundInFlight(handler as http.RequestListener, limits.onPipelineFlood);
    // A TLS handshake that never starts or ends holds its connection as long as Node's default (120 s).
    const server = limits.tls ? https.createServer({ ...limits.tls, ...timeouts, handshakeTimeout: limits.requestTimeoutMs }, listener) : http.createServer(timeouts, listener);
    server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
    // A connection silent this long (no request, no bytes) is closed.
    server.setTimeout(limits.idleTimeoutMs ?? limits.requestTimeoutMs);
    server.maxConnections = limits.maxConnections;
    if (limits.onDrop) server.on('drop', limits.onDrop);
    return server;
  };
}
