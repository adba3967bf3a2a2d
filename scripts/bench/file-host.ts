import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { ServerResponse } from 'node:http';
import type { Cleanup } from './cleanup.js';
import type { BenchTls } from './tls.js';

export interface FileHost {
  /** `https://127.0.0.1:<port>/pdf/<i>.pdf`: a distinct PDF per index, so no two hash alike. */
  pdfUrl(index: number): string;
  /** The URL without `<i>.pdf`. */
  pdfUrlPrefix: string;
  /** A URL that is accepted and then never answered (until `releaseHeld`). */
  holdUrl(name: string): string;
  /** Ends every held request by closing its connection, and from now on every new one at once. */
  stopHolding(): void;
  stats(): { pdfsServed: number; bytesServed: number; held: number };
}

/**
 * The PDF host for the pipeline phase, on 127.0.0.1 only. Every file is `pdfBytes` long: a header
 * naming its index, a random middle shared by all files (sent from one buffer, no copy per request)
 * and a trailer.
 */
export async function startFileHost(tls: BenchTls, pdfBytes: number, cleanup: Cleanup): Promise<FileHost> {
  const trailer = Buffer.from('\n%%EOF\n');
  const header = (index: string) => Buffer.from(`%PDF-1.7\n% webhook-receiver bench file ${index.padStart(12, '0')}\n`);
  const middle = randomBytes(Math.max(0, pdfBytes - header('0').length - trailer.length));
  const held = new Set<ServerResponse>();
  let holding = true;
  let pdfsServed = 0;
  let bytesServed = 0;

  const server: Server = createServer({ key: tls.key, cert: tls.cert }, (request, response) => {
    const url = request.url ?? '/';
    const pdf = /^\/pdf\/(\d{1,12})\.pdf$/.exec(url);
    if (pdf) {
      const head = header(pdf[1]!);
      response.writeHead(200, { 'content-type': 'application/pdf', 'content-length': head.length + middle.length + trailer.length });
      response.write(head);
      response.write(middle);
      response.end(trailer);
      pdfsServed += 1;
      bytesServed += head.length + middle.length + trailer.length;
    } else if (url.startsWith('/hold/')) {
      if (!holding) return void response.destroy();
      held.add(response);
      response.on('close', () => held.delete(response));
    } else {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('no such file');
    }
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  cleanup.add('stop the PDF file host', () => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  const { port } = server.address() as AddressInfo;
  const base = `https://127.0.0.1:${port}`;
  return {
    pdfUrl: (index) => `${base}/pdf/${index}.pdf`,
    pdfUrlPrefix: `${base}/pdf/`,
    holdUrl: (name) => `${base}/hold/${encodeURIComponent(name)}.pdf`,
    stopHolding() {
      holding = false;
      for (const response of held) response.destroy();
      held.clear();
    },
    stats: () => ({ pdfsServed, bytesServed, held: held.size }),
  };
}
