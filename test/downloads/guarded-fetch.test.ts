import { createHash } from 'node:crypto';
import type { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createBufferSink,
  createDownloadAgent,
  DownloadError,
  downloadPdf,
  type DownloadPdfOptions,
} from '../../src/downloads/guarded-fetch.js';
import { parseHostPatterns, type FileUrlPolicy } from '../../src/downloads/url-policy.js';
import * as host from '../helpers/https-file-host.js';

let files: host.FileHost;
let other: host.FileHost; // a second server, to prove refused redirect targets receive nothing
let localAgent: Agent; // private addresses allowed, as in local development
let guardedAgent: Agent; // production setting

const localPolicy: FileUrlPolicy = { allowedHosts: parseHostPatterns('localhost, 127.0.0.1'), allowPrivateAddresses: true };

beforeAll(async () => {
  [files, other] = await Promise.all([host.startFileHost(), host.startFileHost()]);
  localAgent = createDownloadAgent({ allowPrivateAddresses: true });
  guardedAgent = createDownloadAgent({ allowPrivateAddresses: false });
});

afterAll(async () => {
  await Promise.all([localAgent.close(), guardedAgent.close(), files.close(), other.close()]);
});

let pathCounter = 0;
/** A fresh path per test, so request counts and routes never leak between tests. */
function freshPath(name = 'program.pdf'): string {
  pathCounter += 1;
  return `/integrations/ehr/${pathCounter}/${name}`;
}

function download(url: string, overrides: Partial<DownloadPdfOptions> = {}) {
  const sink = createBufferSink();
  const result = downloadPdf({ url, agent: localAgent, policy: localPolicy, timeoutMs: 5_000, maxBytes: 1024 * 1024, sink, ...overrides });
  return { sink, result };
}

async function failure(promise: Promise<unknown>): Promise<DownloadError> {
  const error = await promise.then(
    () => expect.fail('the download should have failed'),
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(DownloadError);
  const downloadError = error as DownloadError;
  expect(downloadError.message).not.toMatch(/integrations|program\.pdf/); // paths grant access; never shown
  return downloadError;
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

describe('downloadPdf over real HTTPS', () => {
  it('trusts the test CA through NODE_EXTRA_CA_CERTS and hashes exactly the bytes served', async () => {
    expect(process.env.NODE_EXTRA_CA_CERTS).toBeTruthy();
    const pdf = host.samplePdf(200_000);
    const path = freshPath();
    files.route(path, host.servePdf(pdf));
    const { sink, result } = download(files.url(path));
    expect(await result).toEqual({ sha256: sha256(pdf), sizeBytes: pdf.length, contentType: 'application/pdf', host: 'localhost', redirects: 0 });
    expect(sink.toBuffer().equals(pdf)).toBe(true);
  });

  it("takes the sha256 from a sink that hashes anyway, instead of hashing twice", async () => {
    const pdf = host.samplePdf(50_000);
    const path = freshPath();
    files.route(path, host.servePdf(pdf));
    let received = 0;
    const lending = { write: async (chunk: Uint8Array) => void (received += chunk.length), sha256: () => 'the sink says' };
    expect(await download(files.url(path), { sink: lending }).result).toMatchObject({ sha256: 'the sink says', sizeBytes: pdf.length });
    expect(received).toBe(pdf.length);
  });

  it('accepts a PDF whose first five bytes arrive in separate pieces', async () => {
    const path = freshPath();
    files.route(path, (_request, response) => {
      response.writeHead(200);
      response.write('%P');
      setTimeout(() => response.end('DF-1.7 tiny'), 20);
    });
    const { sink, result } = download(files.url(path));
    expect((await result).sizeBytes).toBe(13);
    expect(sink.toBuffer().toString()).toBe('%PDF-1.7 tiny');
  });

  it('follows three redirects, resolving each Location against the current URL', async () => {
    const pdf = host.samplePdf();
    const target = freshPath();
    const [a, b, c] = [freshPath('a'), freshPath('b'), freshPath('c')];
    files.route(a, host.redirectTo(files.url(b, '127.0.0.1'), 301));
    files.route(b, host.redirectTo(c, 307)); // path-absolute, on the new host
    files.route(c, host.redirectTo(`../${target.split('/').slice(-2).join('/')}`, 308));
    files.route(target, host.servePdf(pdf));
    const { result } = download(files.url(a));
    expect(await result).toMatchObject({ sha256: sha256(pdf), redirects: 3, host: '127.0.0.1' });
  });
});

describe('downloadPdf refuses by policy before any request', () => {
  it.each([
    ['plain http', (path: string) => files.url(path).replace('https:', 'http:')],
    ['a user name and password', (path: string) => files.url(path).replace('https://', 'https://user:pw@')],
    ['a host outside the list', (path: string) => files.url(path, 'localhost.localdomain')],
    ['a file: URL', (path: string) => `file://${path}`],
  ])('refuses %s, permanently', async (_label, makeUrl) => {
    const path = freshPath();
    files.route(path, host.servePdf(host.samplePdf()));
    const error = await failure(download(makeUrl(path)).result);
    expect(error).toMatchObject({ code: 'DL_ERR_POLICY', permanent: true });
    expect(files.requestCount(path)).toBe(0);
  });

  it('refuses the cloud metadata address even when someone listed it', async () => {
    const policy = { allowedHosts: parseHostPatterns('169.254.169.254'), allowPrivateAddresses: false };
    const error = await failure(download('https://169.254.169.254/latest/meta-data/', { policy, agent: guardedAgent }).result);
    expect(error).toMatchObject({ code: 'DL_ERR_POLICY', permanent: true });
    expect(error.message).toMatch(/169\.254\.169\.254 is a link-local address/);
  });
});

describe('downloadPdf re-checks every redirect', () => {
  it('refuses a redirect to a host outside the list; the target receives nothing', async () => {
    const [start, target] = [freshPath('start'), freshPath()];
    files.route(start, host.redirectTo(other.url(target, '127.0.0.1')));
    const policy = { allowedHosts: parseHostPatterns('localhost'), allowPrivateAddresses: true };
    const error = await failure(download(files.url(start), { policy }).result);
    expect(error).toMatchObject({ code: 'DL_ERR_POLICY', permanent: true, httpStatus: 302 });
    expect(error.message).toMatch(/redirected somewhere refused: the file URL's host 127\.0\.0\.1 is not in/);
    expect(other.requestCount()).toBe(0);
  });

  it('refuses a redirect to a loopback address literal; the target receives nothing', async () => {
    const [start, target] = [freshPath('start'), freshPath()];
    files.route(start, host.redirectTo(other.url(target, '127.0.0.1')));
    const policy = { allowedHosts: parseHostPatterns('localhost, 127.0.0.1'), allowPrivateAddresses: false };
    const error = await failure(download(files.url(start), { policy }).result);
    expect(error).toMatchObject({ code: 'DL_ERR_POLICY', permanent: true });
    expect(error.message).toMatch(/127\.0\.0\.1 is a loopback address/);
    expect(other.requestCount()).toBe(0);
  });

  it('refuses a redirect to plain http', async () => {
    const start = freshPath('start');
    files.route(start, host.redirectTo(files.url(freshPath()).replace('https:', 'http:')));
    expect(await failure(download(files.url(start)).result)).toMatchObject({ code: 'DL_ERR_POLICY', permanent: true });
  });

  it('gives up after the fourth redirect without following it', async () => {
    const hops = [1, 2, 3, 4].map((n) => freshPath(`hop-${n}`));
    const target = freshPath();
    hops.forEach((hop, index) => files.route(hop, host.redirectTo(hops[index + 1] ?? target)));
    files.route(target, host.servePdf(host.samplePdf()));
    const error = await failure(download(files.url(hops[0] ?? '')).result);
    expect(error).toMatchObject({ code: 'DL_ERR_TOO_MANY_REDIRECTS', permanent: true });
    expect(files.requestCount(target)).toBe(0);
  });
});

describe('the download agent judges the addresses it connects to', () => {
  it('refuses a name that resolves to 127.0.0.1 when private addresses are not allowed', async () => {
    const path = freshPath();
    other.route(path, host.servePdf(host.samplePdf()));
    const connectionsBefore = other.connectionCount();
    const policy = { ...localPolicy, allowPrivateAddresses: false }; // "localhost" is a name, so the URL passes
    const error = await failure(download(other.url(path), { agent: guardedAgent, policy }).result);
    expect(error).toMatchObject({ code: 'DL_ERR_POLICY', permanent: true });
    expect(error.message).toBe('The file host localhost resolved to 127.0.0.1, which is a loopback address (this machine); downloads from it are refused.');
    expect(other.requestCount(path)).toBe(0);
    expect(other.connectionCount()).toBe(connectionsBefore);
  });

  it('refuses an IP literal, which Node connects to without any lookup, before connecting', async () => {
    const path = freshPath();
    const connectionsBefore = other.connectionCount();
    const error = await failure(download(other.url(path, '127.0.0.1'), { agent: guardedAgent }).result);
    expect(error).toMatchObject({ code: 'DL_ERR_POLICY', permanent: true });
    expect(error.message).toBe('The file host 127.0.0.1 is a loopback address (this machine); downloads from it are refused.');
    expect(other.connectionCount()).toBe(connectionsBefore);
  });

  it('refuses a name when any one of its addresses is private', async () => {
    const agent = createDownloadAgent({
      allowPrivateAddresses: false,
      resolveHost: async () => [{ address: '8.8.8.8', family: 4 }, { address: '::ffff:10.0.0.7', family: 6 }],
    });
    const policy = { allowedHosts: parseHostPatterns('*.physitrack.test'), allowPrivateAddresses: false };
    const error = await failure(download('https://files.physitrack.test/a.pdf', { agent, policy }).result);
    expect(error.message).toMatch(/resolved to ::ffff:10\.0\.0\.7, which is a private network address/);
    await agent.close();
  });

  it('connects to exactly the address its resolver answered', async () => {
    const pdf = host.samplePdf();
    const path = freshPath();
    files.route(path, host.servePdf(pdf));
    const asked: string[] = [];
    const agent = createDownloadAgent({
      allowPrivateAddresses: true,
      resolveHost: async (name) => (asked.push(name), [{ address: '127.0.0.1', family: 4 }]),
    });
    const policy = { allowedHosts: parseHostPatterns('*.physitrack.test'), allowPrivateAddresses: false };
    const { result } = download(files.url(path, 'files.physitrack.test'), { agent, policy });
    expect(await result).toMatchObject({ sha256: sha256(pdf), host: 'files.physitrack.test' });
    expect(asked).toEqual(['files.physitrack.test']);
    await agent.close();
  });
});

describe('downloadPdf classifies failures', () => {
  it('calls an HTML page not a PDF, retryable', async () => {
    const path = freshPath();
    files.route(path, host.serveHtml());
    const error = await failure(download(files.url(path)).result);
    expect(error).toMatchObject({ code: 'DL_ERR_NOT_PDF', permanent: false });
    expect(error.message).toMatch(/not a PDF \(it sent text\/html\)/);
  });

  it('refuses a declared Content-Length over the limit at once, permanently', async () => {
    const path = freshPath();
    files.route(path, host.declareOversize(50 * 1024 * 1024));
    const started = Date.now();
    const error = await failure(download(files.url(path), { maxBytes: 1024 * 1024 }).result);
    expect(error).toMatchObject({ code: 'DL_ERR_TOO_LARGE', permanent: true });
    expect(Date.now() - started).toBeLessThan(2_000); // did not wait for a body that never comes
  });

  it('aborts a body without Content-Length once it grows past the limit, permanently', async () => {
    const path = freshPath();
    const serverSaw = new Promise<host.StreamOutcome>((resolve) => files.route(path, host.streamWithoutLength(50 * 1024 * 1024, resolve)));
    const error = await failure(download(files.url(path), { maxBytes: 64 * 1024 }).result);
    expect(error).toMatchObject({ code: 'DL_ERR_TOO_LARGE', permanent: true });
    expect(await serverSaw).toMatchObject({ completed: false });
  });

  it('times out a server that drips bytes, retryable', async () => {
    const path = freshPath();
    files.route(path, host.slowDrip(50));
    const error = await failure(download(files.url(path), { timeoutMs: 400 }).result);
    expect(error).toMatchObject({ code: 'DL_ERR_TIMEOUT', permanent: false });
  });

  it('reports 404 as retryable with the status, and succeeds once the file exists', async () => {
    const pdf = host.samplePdf();
    const path = freshPath();
    files.route(path, host.failThenServe(2, 404, pdf));
    for (let attempt = 0; attempt < 2; attempt += 1) {
      expect(await failure(download(files.url(path)).result)).toMatchObject({ code: 'DL_ERR_HTTP_STATUS', permanent: false, httpStatus: 404 });
    }
    expect((await download(files.url(path)).result).sha256).toBe(sha256(pdf));
  });

  // 403 from a file host is retried on purpose: a signed-URL store (S3, GCS) answers 403 until the
  // object is written. (The receiver itself never answers 403: Patiro would stop retrying.)
  it.each([
    [503, false],
    [429, false],
    [403, false],
    [400, true],
    [401, true],
  ])('reports HTTP %i with permanent=%s', async (status, permanent) => {
    const path = freshPath();
    files.route(path, host.failThenServe(1, status, host.samplePdf()));
    expect(await failure(download(files.url(path)).result)).toMatchObject({ code: 'DL_ERR_HTTP_STATUS', permanent, httpStatus: status });
  });

  it('stops when the caller aborts, retryable', async () => {
    const path = freshPath();
    files.route(path, host.slowDrip(50));
    const error = await failure(download(files.url(path), { signal: AbortSignal.timeout(200) }).result);
    expect(error).toMatchObject({ code: 'DL_ERR_ABORTED', permanent: false });
  });

  it('reports a failing sink as a storage problem, retryable', async () => {
    const path = freshPath();
    files.route(path, host.servePdf(host.samplePdf()));
    const sink = { write: async () => Promise.reject(new Error('disk full')) };
    const error = await failure(downloadPdf({ url: files.url(path), agent: localAgent, policy: localPolicy, timeoutMs: 5_000, maxBytes: 1e6, sink }));
    expect(error).toMatchObject({ code: 'DL_ERR_SINK', permanent: false });
  });

  it('reports a closed port as a network error, retryable', async () => {
    const closed = await host.startFileHost();
    await closed.close();
    const error = await failure(download(closed.url(freshPath())).result);
    expect(error).toMatchObject({ code: 'DL_ERR_NETWORK', permanent: false });
    expect(error.message).toMatch(/ECONNREFUSED/);
  });
});
