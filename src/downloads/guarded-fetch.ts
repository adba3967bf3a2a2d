import { createHash } from 'node:crypto';
import { promises as dns, type LookupAddress } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { Agent, buildConnector, request, type Dispatcher } from 'undici';
import { classifyAddress } from './address-policy.js';
import { checkFileUrl, type FileUrlPolicy } from './url-policy.js';

export type DownloadErrorCode =
  | 'DL_ERR_POLICY' // URL, redirect target or resolved address refused: permanent
  | 'DL_ERR_TOO_MANY_REDIRECTS' // permanent
  | 'DL_ERR_TOO_LARGE' // declared or streamed past maxBytes: permanent
  | 'DL_ERR_NOT_PDF' // retryable: a login or error page now may be the PDF later
  | 'DL_ERR_HTTP_STATUS' // see isRetryableStatus
  | 'DL_ERR_TIMEOUT' // retryable
  | 'DL_ERR_NETWORK' // DNS, TCP, TLS or a broken stream: retryable
  | 'DL_ERR_SINK' // the caller's storage failed while writing: retryable
  | 'DL_ERR_ABORTED'; // the caller's signal (e.g. shutdown) stopped it: retryable

export class DownloadError extends Error {
  override readonly name = 'DownloadError';
  readonly code: DownloadErrorCode;
  readonly permanent: boolean;
  readonly httpStatus?: number;

  constructor(
    code: DownloadErrorCode,
    message: string,
    options: { permanent: boolean; httpStatus?: number; cause?: unknown },
  ) {
    super(message, { cause: options.cause });
    this.code = code;
    this.permanent = options.permanent;
    if (options.httpStatus !== undefined) this.httpStatus = options.httpStatus;
  }
}

/** Where the bytes go. Called in order and awaited, so a slow sink slows the download down. */
export interface DownloadSink {
  write(chunk: Uint8Array): Promise<void>;
  /**
   * A sink that hashes what it is given anyway (content-addressed storage) lends its sha256 here,
   * read once after the last write, so the bytes are not hashed twice (about 0.5 ms of CPU per MiB).
   */
  sha256?(): string;
}

/** Keeps the one file in memory, for callers that store the bytes in the database. */
export function createBufferSink(): DownloadSink & { toBuffer(): Buffer } {
  const chunks: Uint8Array[] = [];
  return {
    async write(chunk) {
      chunks.push(chunk);
    },
    toBuffer: () => Buffer.concat(chunks),
  };
}

export interface DownloadAgentOptions {
  allowPrivateAddresses: boolean;
  connectTimeoutMs?: number;
  /** Defaults to the system resolver (`dns.lookup` with `all: true`). */
  resolveHost?: (hostname: string) => Promise<LookupAddress[]>;
}

function refusedAddress(hostname: string, address: string, description: string): DownloadError {
  const resolved = hostname === address ? '' : ` resolved to ${address}, which`;
  const message = `The file host ${hostname}${resolved} is ${description}; downloads from it are refused.`;
  return new DownloadError('DL_ERR_POLICY', message, { permanent: true });
}

/** The address the socket connects to is one this function checked: no second lookup to rebind. */
function guardedLookup(resolve: (hostname: string) => Promise<LookupAddress[]>, allowPrivate: boolean): LookupFunction {
  return (hostname, options, callback) => {
    const family = options.family === 'IPv4' ? 4 : options.family === 'IPv6' ? 6 : options.family;
    resolve(hostname).then(
      (all) => {
        const addresses = family === 4 || family === 6 ? all.filter((a) => a.family === family) : all;
        // One refused address refuses the name: a public name pointing inward is an attack or a mistake.
        for (const { address } of allowPrivate ? [] : addresses) {
          const verdict = classifyAddress(address);
          if (verdict.refused) return callback(refusedAddress(hostname, address, verdict.description), '');
        }
        const [first] = addresses;
        if (first === undefined) {
          const none = Object.assign(new Error(`DNS has no usable address for ${hostname}`), { code: 'ENOTFOUND' });
          return callback(none, '');
        }
        return options.all ? callback(null, addresses) : callback(null, first.address, first.family);
      },
      (error: NodeJS.ErrnoException) => callback(error, ''),
    );
  };
}

export function createDownloadAgent(options: DownloadAgentOptions): Agent {
  const allowPrivate = options.allowPrivateAddresses;
  const resolve = options.resolveHost ?? ((hostname: string) => dns.lookup(hostname, { all: true }));
  const connectSocket = buildConnector({
    lookup: guardedLookup(resolve, allowPrivate),
    timeout: options.connectTimeoutMs ?? 10_000,
  });

  const connect: buildConnector.connector = (connectOptions, callback) => {
    const { hostname } = connectOptions;
    // Node skips `lookup` for IP literals, so they are judged here.
    const literal = isIP(hostname) !== 0 ? classifyAddress(hostname) : undefined;
    if (!allowPrivate && literal?.refused) {
      return callback(refusedAddress(hostname, hostname, literal.description), null);
    }
    connectSocket(connectOptions, (...result) => {
      if (result[0] !== null) return callback(result[0], null);
      const socket = result[1];
      // Belt and braces: judge the peer actually connected to, whatever produced its address.
      const peer = socket.remoteAddress ?? 'an unknown address';
      const verdict = classifyAddress(peer);
      if (!allowPrivate && verdict.refused) {
        socket.destroy();
        return callback(refusedAddress(hostname, peer, verdict.description), null);
      }
      return callback(null, socket);
    });
  };
  return new Agent({ connect });
}

export interface DownloadPdfOptions {
  url: string;
  agent: Dispatcher;
  policy: FileUrlPolicy;
  /** One budget for the whole attempt: every redirect, the whole body and the sink's writes. */
  timeoutMs: number;
  maxBytes: number;
  maxRedirects?: number;
  sink: DownloadSink;
  signal?: AbortSignal;
}

export interface DownloadResult {
  sha256: string;
  sizeBytes: number;
  contentType: string | null;
  /** Host the PDF finally came from (never the URL: its path and query grant access). */
  host: string;
  redirects: number;
}

const pdfMagic = Buffer.from('%PDF-');
const redirectStatuses = new Set([301, 302, 303, 307, 308]);

// 403 is retryable because signed-URL stores (S3, GCS) answer 403 for an object not written yet.
// Other 4xx say the request itself is unacceptable; sending it again will not change that.
function isRetryableStatus(status: number): boolean {
  // A 2xx other than 200 (204, 206) is a glitch on their side, not a verdict on this file.
  return [403, 404, 408, 410, 425, 429].includes(status) || status >= 500 || (status >= 200 && status < 300);
}

/** Reads and drops a small body so the connection can be reused; a big one is cancelled. */
async function discardBody(body: Dispatcher.ResponseData['body']): Promise<void> {
  await body.dump({ limit: 64 * 1024 }).catch(() => undefined);
}

function nextLocation(current: URL, location: unknown, policy: FileUrlPolicy, status: number): URL {
  const host = current.hostname;
  if (typeof location !== 'string' || location === '') {
    // A redirect to nowhere will not become a redirect to somewhere for this file URL.
    const message = `The file host ${host} answered HTTP ${status} without saying where to go.`;
    throw new DownloadError('DL_ERR_HTTP_STATUS', message, { permanent: true, httpStatus: status });
  }
  let target: string;
  try {
    target = new URL(location, current).href;
  } catch {
    const message = `The file host ${host} redirected to an invalid URL.`;
    throw new DownloadError('DL_ERR_POLICY', message, { permanent: true, httpStatus: status });
  }
  const check = checkFileUrl(target, policy);
  if (!check.ok) {
    const message = `The file host ${host} redirected somewhere refused: ${check.reason}.`;
    throw new DownloadError('DL_ERR_POLICY', message, { permanent: true, httpStatus: status });
  }
  return check.url;
}

async function receivePdf(response: Dispatcher.ResponseData, options: DownloadPdfOptions, host: string) {
  const { body, headers } = response;
  const tooLarge = (what: string) => {
    const message = `The PDF from ${host} ${what} the limit of ${options.maxBytes} bytes.`;
    return new DownloadError('DL_ERR_TOO_LARGE', message, { permanent: true });
  };
  const declared = Number(headers['content-length']);
  if (Number.isFinite(declared) && declared > options.maxBytes) {
    body.destroy();
    throw tooLarge(`declares ${declared} bytes, more than`);
  }
  const hash = options.sink.sha256 ? undefined : createHash('sha256');
  const emit = async (chunk: Buffer) => {
    hash?.update(chunk);
    try {
      await options.sink.write(chunk);
    } catch (error) {
      const message = `Storing the PDF from ${host} failed while it was downloading.`;
      throw new DownloadError('DL_ERR_SINK', message, { permanent: false, cause: error });
    }
  };
  let size = 0;
  let prefix: Buffer | null = Buffer.alloc(0); // held back until the first bytes prove it is a PDF
  // Leaving this loop by throwing destroys the body, which cancels the transfer.
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > options.maxBytes) throw tooLarge('grew past');
    if (prefix === null) {
      await emit(chunk);
      continue;
    }
    prefix = Buffer.concat([prefix, chunk]);
    if (prefix.length < pdfMagic.length) continue;
    if (!prefix.subarray(0, pdfMagic.length).equals(pdfMagic)) break;
    await emit(prefix);
    prefix = null;
  }
  const contentType = typeof headers['content-type'] === 'string' ? headers['content-type'] : null;
  if (prefix !== null) {
    body.destroy();
    const sent = contentType === null ? '' : ` (it sent ${contentType.slice(0, 60)})`;
    throw new DownloadError('DL_ERR_NOT_PDF', `The file from ${host} is not a PDF${sent}.`, { permanent: false });
  }
  const sha256 = hash ? hash.digest('hex') : options.sink.sha256!();
  return { sha256, sizeBytes: size, contentType };
}

/** Error text from Node or undici, minus anything that looks like a URL. */
function describeCause(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  const text = error instanceof Error ? error.message : String(error);
  const message = text.replace(/\b[a-z][a-z0-9+.-]*:\/\/\S+/gi, '[url]');
  return typeof code === 'string' ? `${code}: ${message}` : message;
}

function toDownloadError(error: unknown, host: string, why: { timedOutAfterMs?: number; cancelled: boolean }) {
  if (error instanceof DownloadError) return error;
  if (error instanceof Error && error.cause instanceof DownloadError) return error.cause;
  const retryable = { permanent: false, cause: error };
  if (why.timedOutAfterMs !== undefined) {
    const message = `The download from ${host} took longer than ${why.timedOutAfterMs} ms.`;
    return new DownloadError('DL_ERR_TIMEOUT', message, retryable);
  }
  if (why.cancelled) return new DownloadError('DL_ERR_ABORTED', `The download from ${host} was cancelled.`, retryable);
  return new DownloadError('DL_ERR_NETWORK', `The download from ${host} failed (${describeCause(error)}).`, retryable);
}

/**
 * Downloads one PDF into `options.sink`. The sink is never finished here: on success the caller
 * commits what it received (insert the buffer, rename the temporary file); on a thrown
 * `DownloadError` it throws away whatever was written.
 */
export async function downloadPdf(options: DownloadPdfOptions): Promise<DownloadResult> {
  const first = checkFileUrl(options.url, options.policy);
  if (!first.ok) {
    throw new DownloadError('DL_ERR_POLICY', `The file URL was refused: ${first.reason}.`, { permanent: true });
  }
  const maxRedirects = options.maxRedirects ?? 3;
  const timer = new AbortController();
  const timeout = setTimeout(() => timer.abort(), options.timeoutMs);
  const signal = options.signal ? AbortSignal.any([timer.signal, options.signal]) : timer.signal;
  let url = first.url;
  try {
    for (let redirects = 0; ; redirects += 1) {
      const headers = { accept: 'application/pdf' };
      const response = await request(url, { dispatcher: options.agent, method: 'GET', signal, headers });
      const status = response.statusCode;
      const host = url.hostname;
      if (status === 200) return { ...(await receivePdf(response, options, host)), host, redirects };
      await discardBody(response.body);
      if (!redirectStatuses.has(status)) {
        const message = `The file host ${host} answered HTTP ${status} instead of the PDF.`;
        const permanent = !isRetryableStatus(status);
        throw new DownloadError('DL_ERR_HTTP_STATUS', message, { permanent, httpStatus: status });
      }
      if (redirects >= maxRedirects) {
        const message = `The file host ${host} redirected more than ${maxRedirects} times.`;
        throw new DownloadError('DL_ERR_TOO_MANY_REDIRECTS', message, { permanent: true, httpStatus: status });
      }
      url = nextLocation(url, response.headers.location, options.policy, status);
    }
  } catch (error) {
    const timedOutAfterMs = timer.signal.aborted ? options.timeoutMs : undefined;
    throw toDownloadError(error, url.hostname, { timedOutAfterMs, cancelled: options.signal?.aborted ?? false });
  } finally {
    clearTimeout(timeout);
  }
}
