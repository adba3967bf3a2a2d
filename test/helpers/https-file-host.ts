import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { testServerTls } from './tls.js';

// A real HTTPS server on port 0 whose routes each test programs, and which counts every request
// so a test can prove that a refused target was never asked for anything.

export type Route = (request: IncomingMessage, response: ServerResponse) => void;

export interface FileHost {
  port: number;
  /** `https://<host>:<port><path>`; the host defaults to localhost (the certificate also covers 127.0.0.1). */
  url(path: string, host?: string): string;
  route(path: string, handler: Route): void;
  /** Requests received, for one path or in total. */
  requestCount(path?: string): number;
  /** TCP connections accepted, to prove a refusal happened before even connecting. */
  connectionCount(): number;
  close(): Promise<void>;
}

export async function startFileHost(): Promise<FileHost> {
  const routes = new Map<string, Route>();
  const counts = new Map<string, number>();
  const server: Server = createServer(testServerTls(), (request, response) => {
    const path = new URL(request.url ?? '/', 'https://placeholder').pathname;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const handler = routes.get(path);
    if (handler) handler(request, response);
    else response.writeHead(404, { 'content-type': 'text/plain' }).end('no such file');
  });
  let connections = 0;
  server.on('connection', () => void (connections += 1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    port,
    url: (path, host = 'localhost') => `https://${host}:${port}${path}`,
    route: (path, handler) => void routes.set(path, handler),
    requestCount: (path) => (path === undefined ? [...counts.values()].reduce((a, b) => a + b, 0) : counts.get(path) ?? 0),
    connectionCount: () => connections,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}

/** A small valid-looking PDF with random content, so its hash is unique per test. */
export function samplePdf(paddingBytes = 2048): Buffer {
  return Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(paddingBytes), Buffer.from('\n%%EOF\n')]);
}

export function servePdf(bytes: Buffer): Route {
  return (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/pdf', 'content-length': bytes.length }).end(bytes);
  };
}

/** Answers `status` the first `failures` times, then serves the PDF. */
export function failThenServe(failures: number, status: number, bytes: Buffer): Route {
  let remaining = failures;
  return (request, response) => {
    if (remaining <= 0) return servePdf(bytes)(request, response);
    remaining -= 1;
    response.writeHead(status, { 'content-type': 'text/plain' }).end(`failing with ${status}`);
  };
}

export function redirectTo(location: string, status = 302): Route {
  return (_request, response) => {
    response.writeHead(status, { location, 'content-type': 'text/html' }).end('<a href="elsewhere">moved</a>');
  };
}

export function serveHtml(): Route {
  return (_request, response) => {
    response.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>Sign in</title>');
  };
}

/** Declares a huge Content-Length but only ever sends a PDF header; the client must not wait for it. */
export function declareOversize(declaredBytes: number): Route {
  return (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/pdf', 'content-length': declaredBytes });
    response.write('%PDF-1.7\n');
  };
}

export interface StreamOutcome {
  sentBytes: number;
  /** False when the client went away before the server finished sending. */
  completed: boolean;
}

/** Streams a PDF without Content-Length, up to `totalBytes` or until the client leaves. */
export function streamWithoutLength(totalBytes: number, report?: (outcome: StreamOutcome) => void): Route {
  return (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/pdf' });
    response.write('%PDF-1.7\n');
    let sent = 0;
    const chunk = Buffer.alloc(16 * 1024, 0x20);
    const pump = (): void => {
      while (sent < totalBytes && !response.destroyed) {
        sent += chunk.length;
        if (!response.write(chunk)) return void response.once('drain', pump);
      }
      if (!response.destroyed) response.end();
    };
    response.on('close', () => report?.({ sentBytes: sent, completed: response.writableFinished }));
    pump();
  };
}

/** Sends the start of a PDF and then one byte every `intervalMs`, forever. */
export function slowDrip(intervalMs: number): Route {
  return (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/pdf' });
    response.write('%PDF-');
    const timer = setInterval(() => response.write(' '), intervalMs);
    response.on('close', () => clearInterval(timer));
  };
}

/** Sends the PDF's first bytes at once and the rest after `delayMs`, so the download is in flight meanwhile. */
export function servePdfSlowly(bytes: Buffer, delayMs: number): Route {
  return (_request, response) => {
    response.writeHead(200, { 'content-type': 'application/pdf', 'content-length': bytes.length });
    response.write(bytes.subarray(0, 100));
    const timer = setTimeout(() => response.end(bytes.subarray(100)), delayMs);
    response.on('close', () => clearTimeout(timer));
  };
}
