import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { PATIRO_SECRET, patiroEvent, signedPatiroRequest } from '../helpers/patiro.js';
import { PHYSITRACK_KEY, physitrackNotice } from '../helpers/physitrack.js';

// What app.inject cannot show: header limits, repeated headers and framing are decided by Node's
// HTTP parser. The real app listens on 127.0.0.1 and gets hand-written requests over a socket.

let database: TestDatabase;
let t: TestApp;
let port: number;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, { PATIRO_SIGNING_SECRET: PATIRO_SECRET, PHYSITRACK_API_KEY: PHYSITRACK_KEY });
  await t.app.listen({ host: '127.0.0.1', port: 0 });
  port = (t.app.server.address() as net.AddressInfo).port;
});
afterAll(async () => {
  await t.close();
  await database.drop();
});

/** Sends `head` (request line and headers, without the blank line) and `body`; resolves with the status and body. */
function raw(head: string[], body = ''): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    socket.setTimeout(5000, () => socket.destroy(new Error('no answer within 5 s')));
    socket.on('data', (chunk) => (received += chunk.toString('latin1')));
    socket.on('error', reject);
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1] ?? 0);
      resolve({ status, body: received.slice(received.indexOf('\r\n\r\n') + 4) });
    });
    // Written, not ended: a half-closed socket may be dropped before the answer. `Connection: close` ends it.
    socket.write(`${head.join('\r\n')}\r\n\r\n${body}`);
  });
}

/** A correctly signed Patiro request as header lines, plus its body. */
function patiroParts(extra: string[] = []): { head: string[]; body: string } {
  const body = JSON.stringify(patiroEvent());
  const headers = signedPatiroRequest({ body }).headers as Record<string, string>;
  const head = [
    'POST /webhooks/patiro HTTP/1.1',
    'Host: 127.0.0.1',
    'Connection: close',
    `Content-Length: ${Buffer.byteLength(body)}`,
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
    ...extra,
  ];
  return { head, body };
}

const without = (head: string[], name: string) => head.filter((line) => !line.toLowerCase().startsWith(`${name}:`));

describe('hostile HTTP framing and headers, over a real socket', () => {
  it('stores a well-formed signed request (the baseline the cases below change one thing of)', async () => {
    const { head, body } = patiroParts();
    expect((await raw(head, body)).status).toBe(204);
  });

  it.each([
    ['/webhooks/patiro', patiroParts()],
    ['/webhooks/physitrack', { head: ['POST /webhooks/physitrack HTTP/1.1', 'Host: 127.0.0.1', 'Connection: close', 'Content-Type: application/json'], body: JSON.stringify(physitrackNotice()) }],
  ])('answers 431 to a 20 KB header on %s, and keeps serving', async (_path, { head, body }) => {
    const withLength = [...without(head, 'content-length'), `Content-Length: ${Buffer.byteLength(body)}`];
    expect((await raw([...withLength, `X-Padding: ${'p'.repeat(20_000)}`], body)).status).toBe(431);
    expect((await raw(['GET /healthz HTTP/1.1', 'Host: 127.0.0.1', 'Connection: close'])).status).toBe(200);
  });

  it('answers 401 malformed_signature to a repeated signature header (Node joins the two values)', async () => {
    const { head, body } = patiroParts();
    const signature = head.find((line) => line.startsWith('x-patiro-hmacsha256:'))!;
    const res = await raw([...head, signature], body);
    expect(res.status).toBe(401);
    expect(JSON.parse(res.body).message).toBe('Authentication failed (malformed_signature)');
  });

  it('answers 401 malformed_timestamp to a repeated timestamp header', async () => {
    const { head, body } = patiroParts();
    const res = await raw([...head, head.find((line) => line.startsWith('x-patiro-timestamp:'))!], body);
    expect(res.status).toBe(401);
    expect(JSON.parse(res.body).message).toBe('Authentication failed (malformed_timestamp)');
  });

  it('takes the first of two content types, as Node does: JSON first is stored, text first is 415', async () => {
    const first = patiroParts(['Content-Type: text/plain']);
    expect((await raw(first.head, first.body)).status).toBe(204);
    const second = patiroParts();
    expect((await raw([...without(second.head, 'content-type').slice(0, 2), 'Content-Type: text/plain', ...second.head.slice(2)], second.body)).status).toBe(415);
  });

  it.each([
    ['Content-Length and Transfer-Encoding together', (head: string[]) => [...head, 'Transfer-Encoding: chunked']],
    ['two different Content-Lengths', (head: string[]) => [...head, 'Content-Length: 3']],
    ['a non-numeric Content-Length', (head: string[]) => [...without(head, 'content-length'), 'Content-Length: 12abc']],
    ['a header name with a space', (head: string[]) => [...head, 'X Bad: 1']],
  ])('answers 400 to %s, before any handler runs, and stores nothing', async (_label, change) => {
    const before = Number((await database.pool.query('SELECT count(*) AS n FROM patiro_events')).rows[0].n);
    const { head, body } = patiroParts();
    expect((await raw(change(head), body)).status).toBe(400);
    expect(Number((await database.pool.query('SELECT count(*) AS n FROM patiro_events')).rows[0].n)).toBe(before);
  });

  it('logged no unexpected error for any of it', () => {
    expect(t.logs.entries().filter((e) => e.msg === 'request failed' || e.level === 50)).toEqual([]);
  });
});
