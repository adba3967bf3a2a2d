import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { redirectTo, samplePdf, servePdf, slowDrip, startFileHost, type FileHost } from '../helpers/https-file-host.js';
import { PHYSITRACK_KEY, physitrackNotice, physitrackRequest } from '../helpers/physitrack.js';
import { waitFor } from '../helpers/wait.js';
import { createTestWorker } from '../helpers/worker.js';

// Server-side request forgery through the real route and the real worker: a file_url that points
// inward is refused, and a listener at the target counts that it never heard from us.
// Every target is on 127.0.0.1 (or refused before any lookup): no traffic leaves the machine.

let database: TestDatabase;
let t: TestApp;
let host: FileHost; // HTTPS, counts requests and connections
let plain: Server; // plain HTTP, counts requests
let plainRequests = 0;

beforeAll(async () => {
  database = await createTestDatabase();
  t = await buildTestApp(database.url, {
    PHYSITRACK_API_KEY: PHYSITRACK_KEY,
    // The IP literals are listed on purpose: the address check must refuse them anyway.
    PHYSITRACK_FILE_URL_HOSTS: 'localhost,127.0.0.1,169.254.169.254',
    DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'false',
  });
  host = await startFileHost();
  plain = createServer((_request, response) => {
    plainRequests += 1;
    response.end('%PDF-1.7\n');
  });
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
});
afterAll(async () => {
  await new Promise((resolve) => plain.close(resolve));
  await host.close();
  await t.close();
  await database.drop();
});
beforeEach(async () => {
  await database.pool.query('TRUNCATE physitrack_deliveries, documents, document_owners, webhook_audit');
});

async function announce(fileUrl: string): Promise<{ status: number; body: string }> {
  const res = await t.app.inject(physitrackRequest(physitrackNotice({ file_url: fileUrl })));
  return { status: res.statusCode, body: res.body };
}

async function onlyRow(): Promise<{ download_status: string; last_error: string | null; attempts: number }> {
  const { rows } = await database.pool.query('SELECT download_status, last_error, attempts FROM physitrack_deliveries');
  expect(rows).toHaveLength(1);
  return rows[0];
}

/** Runs a worker (of the given permissiveness) once and closes it. */
async function runWorker(options: { allowPrivateAddresses: boolean; hosts?: string; timeoutMs?: number }) {
  const { worker, close } = createTestWorker({ db: t.db, log: t.logs.logger, ...options });
  try {
    return await worker.runOnce();
  } finally {
    await close();
  }
}

describe('file URLs refused at the route', () => {
  const port = () => host.port;
  it.each([
    ['plain http', () => `http://localhost:${(plain.address() as AddressInfo).port}/programs/1.pdf`, /uses http:/],
    ['another host (an IPv4-mapped IPv6 loopback)', () => `https://[::ffff:127.0.0.1]:${port()}/programs/2.pdf`, /not in PHYSITRACK_FILE_URL_HOSTS/],
    ['a listed loopback literal', () => `https://127.0.0.1:${port()}/programs/3.pdf`, /loopback/],
    ['loopback written as a decimal number', () => `https://2130706433:${port()}/programs/4.pdf`, /loopback/],
    ['loopback written in hex, shortened', () => `https://0x7f.1:${port()}/programs/5.pdf`, /loopback/],
    ['the cloud metadata address, even listed', () => 'https://169.254.169.254/latest/meta-data/iam/security-credentials/', /link-local/],
    ['a user name and password', () => `https://user:secret@localhost:${port()}/programs/6.pdf`, /user name or password/],
    ['file://', () => 'file:///etc/passwd', /uses file:/],
    ['not a URL at all', () => 'programs/7.pdf', /not a valid absolute URL/],
  ])('answers 422 to %s, records it failed, and no worker ever fetches it', async (_label, fileUrl, reason) => {
    const before = { requests: host.requestCount(), connections: host.connectionCount(), plain: plainRequests };
    const res = await announce(fileUrl());
    expect(res.status, res.body).toBe(422);
    expect(JSON.parse(res.body).error).toBe('WH_ERR_URL_REFUSED');
    const row = await onlyRow();
    expect(row.download_status).toBe('failed');
    expect(row.last_error).toMatch(reason);
    // Not even a worker that may reach private addresses touches a refused row.
    expect(await runWorker({ allowPrivateAddresses: true, hosts: 'localhost,127.0.0.1,169.254.169.254' })).toEqual([]);
    expect({ requests: host.requestCount(), connections: host.connectionCount(), plain: plainRequests }).toEqual(before);
  });
});

describe('file URLs refused by the worker', () => {
  it('refuses a DNS name that resolves to a loopback address, before connecting', async () => {
    host.route('/dns/1.pdf', servePdf(samplePdf()));
    const connections = host.connectionCount();
    expect((await announce(host.url('/dns/1.pdf'))).status).toBe(204); // names are resolved at download time
    expect(await runWorker({ allowPrivateAddresses: false })).toEqual(['failed']);
    expect(await onlyRow()).toMatchObject({ download_status: 'failed', attempts: 1, last_error: expect.stringMatching(/resolved to 127\.0\.0\.1.*loopback/) });
    expect(host.requestCount('/dns/1.pdf')).toBe(0);
    expect(host.connectionCount()).toBe(connections);
  });

  it.each([
    ['a private address', (port: number) => `https://[::ffff:127.0.0.1]:${port}/private/1.pdf`],
    ['the cloud metadata address', () => 'https://169.254.169.254/latest/meta-data/'],
    ['plain http on the same host', (port: number) => `http://localhost:${port}/private/1.pdf`],
  ])('follows a redirect chain only until it leads to %s, which receives nothing', async (_label, target) => {
    host.route('/chain/1.pdf', redirectTo(host.url('/chain/2.pdf')));
    host.route('/chain/2.pdf', redirectTo(target(host.port), 307));
    host.route('/private/1.pdf', servePdf(samplePdf()));
    const before = { first: host.requestCount('/chain/1.pdf'), second: host.requestCount('/chain/2.pdf'), target: host.requestCount('/private/1.pdf') };
    expect((await announce(host.url('/chain/1.pdf'))).status).toBe(204);
    // A worker that can reach this machine at all, with only `localhost` allowed.
    expect(await runWorker({ allowPrivateAddresses: true, hosts: 'localhost' })).toEqual(['failed']);
    expect((await onlyRow()).last_error).toMatch(/redirected somewhere refused/);
    expect({ first: host.requestCount('/chain/1.pdf'), second: host.requestCount('/chain/2.pdf'), target: host.requestCount('/private/1.pdf') })
      .toEqual({ first: before.first + 1, second: before.second + 1, target: before.target });
  });

  it('gives up on a slow-drip response at the timeout, drops the connection and retries later', async () => {
    let closed = false;
    const drip = slowDrip(100);
    host.route('/drip/1.pdf', (request, response) => {
      response.on('close', () => (closed = true));
      drip(request, response);
    });
    expect((await announce(host.url('/drip/1.pdf'))).status).toBe(204);
    const started = Date.now();
    expect(await runWorker({ allowPrivateAddresses: true, timeoutMs: 1000 })).toEqual(['retry']);
    expect(Date.now() - started).toBeLessThan(2500);
    await waitFor(() => closed, 2000);
    expect(await onlyRow()).toMatchObject({ download_status: 'pending', attempts: 1, last_error: expect.stringMatching(/took longer than 1000 ms/) });
    expect(Number((await database.pool.query('SELECT count(*) AS n FROM documents')).rows[0].n)).toBe(0);
  });
});
