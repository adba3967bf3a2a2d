import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { closeDatabase, createDatabase, type Database } from '../../src/db/client.js';
import { createMetrics } from '../../src/metrics.js';
import type { FastifyInstance } from 'fastify';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { captureLogs, type CapturedLogs } from '../helpers/logs.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice } from '../helpers/physitrack.js';

// Clients that try to wear the service down, over real sockets against the real app: pipelining
// without reading, floods of connections, slow headers and bodies, malformed URLs, bad signatures
// by the thousand. Each row of issue 20's table has its test here; each must fail without its fix.

const REQUEST_TIMEOUT_MS = 2000;
const MAX_CONNECTIONS = 40;

let database: TestDatabase;
let db: Database;
let app: FastifyInstance;
let logs: CapturedLogs;
let port: number;
let metrics: ReturnType<typeof createMetrics>;

beforeAll(async () => {
  database = await createTestDatabase();
  db = createDatabase({ url: database.url, poolSize: 4, connectTimeoutMs: 2000 });
  const config = loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: database.url,
    PATIRO_SIGNING_SECRET: PATIRO_SECRET,
    PATIRO_TOKEN: 'query-token-0123456789abcdef',
    PHYSITRACK_API_KEY: PHYSITRACK_KEY,
    REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    MAX_CONNECTIONS: String(MAX_CONNECTIONS),
  });
  logs = captureLogs('info');
  metrics = createMetrics(db);
  app = await buildApp({ config, db, logger: logs.logger, metrics });
  await app.listen({ host: '127.0.0.1', port: 0 });
  port = (app.server.address() as net.AddressInfo).port;
});
afterAll(async () => {
  await app.close();
  await closeDatabase(db);
  await database.drop();
});

function connect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.on('error', reject);
  });
}

/** Resolves with what the server sent and when it closed the connection (ms after `since`). */
function closed(socket: net.Socket, since = Date.now()): Promise<{ received: string; afterMs: number }> {
  let received = '';
  socket.on('data', (chunk) => (received += chunk.toString('latin1')));
  socket.on('error', () => undefined);
  return new Promise((resolve) => socket.on('close', () => resolve({ received, afterMs: Date.now() - since })));
}

/** A signed Patiro delivery over a fresh connection; resolves with its status and time. */
async function deliver(): Promise<{ status: number; ms: number }> {
  const started = Date.now();
  const request = signedPatiroRequest({ body: JSON.stringify(patiroEvent()), query: '?token=query-token-0123456789abcdef' });
  const res = await fetch(`http://127.0.0.1:${port}${request.url as string}`, { method: 'POST', headers: request.headers as Record<string, string>, body: new Uint8Array(request.payload as Buffer), signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  return { status: res.status, ms: Date.now() - started };
}

/** A scrape newer than the flood's (a rendered scrape is reused for a second). */
async function scrape(): Promise<string> {
  await new Promise((resolve) => setTimeout(resolve, 1100));
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

const sample = (text: string, name: string) => Number(new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);

describe('a client that pipelines requests and never reads the answers', () => {
  it('is cut off at a bounded number of answers owed, while deliveries stay fast', async () => {
    const rssBefore = process.memoryUsage().rss;
    const flood = Array.from({ length: 5 }, () => 'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(10_000));
    const sockets = await Promise.all(flood.map(() => connect()));
    // Never read (no 'data' listener, paused): the server's answers pile up on its side, as the
    // attacker wants; only the close is watched.
    const ends = sockets.map((s) => new Promise((resolve) => s.on('close', resolve).on('error', () => undefined)));
    sockets.forEach((s, i) => {
      s.pause();
      s.write(flood[i]!);
    });
    const during = await deliver();
    await Promise.race([Promise.all(ends), new Promise((resolve) => setTimeout(resolve, 5000))]);
    sockets.forEach((s) => s.destroy());
    expect(during.status).toBe(204);
    expect(during.ms).toBeLessThan(1500);
    const scraped = await scrape();
    expect(sample(scraped, 'webhook_connections_dropped_total{reason="pipelining"}')).toBe(5);
    // 50,000 requests sent; a few dozen handled.
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(150 * 1024 * 1024);
    expect(logs.entries().filter((e) => e.msg === 'closed a connection that pipelined requests without reading the answers').length).toBeLessThanOrEqual(2);
  });
});

describe('timeouts that hold', () => {
  it('closes a connection that never sends a request at REQUEST_TIMEOUT_MS', async () => {
    const socket = await connect();
    const { afterMs } = await closed(socket);
    expect(afterMs).toBeGreaterThanOrEqual(REQUEST_TIMEOUT_MS - 100);
    expect(afterMs).toBeLessThan(REQUEST_TIMEOUT_MS + 1500);
  });

  it('closes a connection whose headers trickle in, within about a second of REQUEST_TIMEOUT_MS, with a 408 in our shape', async () => {
    const socket = await connect();
    const end = closed(socket);
    const head = 'POST /webhooks/patiro HTTP/1.1\r\nHost: x\r\nX-Slow: ';
    let i = 0;
    const drip = setInterval(() => socket.writable && socket.write(head[i++ % head.length]!), 100);
    const { received, afterMs } = await end;
    clearInterval(drip);
    expect(afterMs).toBeLessThan(REQUEST_TIMEOUT_MS + 1500);
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    expect(JSON.parse(received.slice(received.indexOf('\r\n\r\n') + 4))).toEqual({ error: 'WH_ERR_REQUEST_TIMEOUT', message: expect.any(String) });
  });

  it('closes a connection whose body trickles in at 2 B/s within about a second of REQUEST_TIMEOUT_MS', async () => {
    const socket = await connect();
    const end = closed(socket);
    socket.write('POST /webhooks/physitrack HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n');
    const drip = setInterval(() => socket.writable && socket.write('  '), 1000);
    const { afterMs } = await end;
    clearInterval(drip);
    expect(afterMs).toBeLessThan(REQUEST_TIMEOUT_MS + 1500);
  });
});

describe('a flood of connections', () => {
  it('refuses connections past MAX_CONNECTIONS, warns once, counts them, and recovers when the idle ones time out', async () => {
    const sockets: net.Socket[] = [];
    const ends: Promise<unknown>[] = [];
    for (let i = 0; i < MAX_CONNECTIONS * 3; i++) {
      const socket = await connect();
      ends.push(closed(socket));
      sockets.push(socket);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
    const open = sockets.filter((s) => !s.destroyed && s.readyState === 'open').length;
    expect(open).toBeLessThanOrEqual(MAX_CONNECTIONS);
    // The idle ones never sent a request: closed at REQUEST_TIMEOUT_MS, and the port serves again.
    await Promise.all(ends);
    expect((await deliver()).status).toBe(204);
    const scraped = await scrape();
    expect(sample(scraped, 'webhook_connections_dropped_total{reason="max_connections"}')).toBeGreaterThanOrEqual(MAX_CONNECTIONS);
    expect(logs.entries().filter((e) => String(e.msg).startsWith('MAX_CONNECTIONS connections are open'))).toHaveLength(1);
  });
});

describe('malformed requests', () => {
  it('answers a URL that does not decode in our shape, without echoing its query, and logs its path only', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/webhooks/patiro/%zz?token=query-token-0123456789abcdef`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    const text = await res.text();
    expect(res.status).toBe(400);
    expect(JSON.parse(text)).toEqual({ error: 'WH_ERR_BAD_URL', message: expect.any(String) });
    expect(text).not.toContain('query-token');
    const lines = logs.lines.filter((l) => l.includes('%zz'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain('query-token');
  });

  it('answers a path parameter over its limit, and a request line the parser refuses, in our shape', async () => {
    const long = await fetch(`http://127.0.0.1:${port}/webhooks/patiro/${'a'.repeat(300)}?token=query-token-0123456789abcdef`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    const longText = await long.text();
    expect(JSON.parse(longText)).toMatchObject({ error: expect.stringMatching(/^WH_ERR_/) });
    expect(longText).not.toContain('query-token');
    const socket = await connect();
    const end = closed(socket);
    socket.write('BREW /coffee HTCPCP/1.0\r\n\r\n');
    const { received } = await end;
    expect(received).toMatch(/^HTTP\/1\.1 400 /);
    expect(JSON.parse(received.slice(received.indexOf('\r\n\r\n') + 4))).toEqual({ error: 'WH_ERR_BAD_REQUEST', message: expect.any(String) });
  });
});

describe('bodies built to break the checks', () => {
  it('answers 401, not 503, to a Physitrack body with a 300,000-element array and a wrong key', async () => {
    const body = JSON.stringify({ ...physitrackNotice({ api_key: 'wrong-key-0123456789abcdef' }), name: new Array(300_000).fill(0) });
    const res = await fetch(`http://127.0.0.1:${port}/webhooks/physitrack`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(401);
  });

  it('stores a signed Patiro event with a 300,000-element array', async () => {
    const event = patiroEvent({ data: { id: 'p-array', values: new Array(300_000).fill(0) } });
    const request = signedPatiroRequest({ body: JSON.stringify(event), query: '?token=query-token-0123456789abcdef' });
    const res = await fetch(`http://127.0.0.1:${port}${request.url as string}`, { method: 'POST', headers: request.headers as Record<string, string>, body: new Uint8Array(request.payload as Buffer) });
    expect(res.status).toBe(204);
    const { rows } = await database.pool.query(`SELECT jsonb_array_length(data->'values') AS n FROM patiro_events WHERE event_id = $1`, [event.eventId]);
    expect(rows).toEqual([{ n: 300_000 }]);
  });
});

describe('log volume under attack', () => {
  it('logs 2,000 bad signatures in a handful of lines, counting all of them', async () => {
    const before = logs.lines.length;
    const started = Date.now();
    // 20 at a time: more connections at once than MAX_CONNECTIONS would be refused, rightly.
    for (let batch = 0; batch < 100; batch++) {
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          const request = signedPatiroRequest({ body: JSON.stringify(patiroEvent()), secret: 'a-wrong-secret-0123456789abcdef', query: '?token=query-token-0123456789abcdef' });
          const res = await fetch(`http://127.0.0.1:${port}${request.url as string}`, { method: 'POST', headers: request.headers as Record<string, string>, body: new Uint8Array(request.payload as Buffer) });
          await res.arrayBuffer();
          expect(res.status).toBe(401);
        }),
      );
    }
    // One more, a second later: its line carries the number held back since the previous one.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const last = signedPatiroRequest({ body: JSON.stringify(patiroEvent()), secret: 'a-wrong-secret-0123456789abcdef', query: '?token=query-token-0123456789abcdef' });
    await (await fetch(`http://127.0.0.1:${port}${last.url as string}`, { method: 'POST', headers: last.headers as Record<string, string>, body: new Uint8Array(last.payload as Buffer) })).arrayBuffer();
    const seconds = Math.ceil((Date.now() - started) / 1000);
    const lines = logs.entries().slice(before);
    // At most one line a second for this source and reason; each line plus the number it held back
    // accounts for every one of the 2,001 failures.
    expect(lines.length).toBeLessThanOrEqual(seconds + 2);
    const suppressed = lines.reduce((sum, e) => sum + (typeof e.suppressed === 'number' ? e.suppressed : 0), 0);
    expect(lines.length + suppressed).toBe(2001);
    const scraped = await scrape();
    expect(sample(scraped, 'webhook_auth_failures_total{vendor="patiro",reason="bad_signature"}')).toBe(2001);
  });
});
