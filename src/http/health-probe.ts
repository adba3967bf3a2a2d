import http from 'node:http';
import https from 'node:https';
import type { Config } from '../config.js';

// The container's HEALTHCHECK (src/cli/healthcheck.ts): GET /healthz of this process, as the
// process serves it. Over HTTPS when TLS is configured (a plain request to a TLS port fails, and the
// image would be marked unhealthy for serving as configured). The certificate is not verified: the
// check talks to its own container on a loopback address, and whether it is alive is the question,
// not who it is. On the address HOST binds, or loopback when HOST is a wildcard.

export interface HealthTarget {
  host: string;
  port: number;
  tls: boolean;
}

/** Where the check connects, from the service's own configuration. */
export function healthTarget(config: Pick<Config, 'host' | 'port' | 'tls'>): HealthTarget {
  const host = config.host.trim().replace(/^\[(.*)\]$/, '$1');
  // A wildcard, IPv6's included, listens on 127.0.0.1 too (Node's sockets are dual-stack), and ::1
  // may be missing where IPv6 is off.
  const wildcard = host === '' || host === '0.0.0.0' || host === '::';
  return { host: wildcard ? '127.0.0.1' : host, port: config.port, tls: config.tls !== undefined };
}

/** True when /healthz answers 200 within `timeoutMs`, all of it (connect, TLS handshake, answer). */
export function checkHealth({ host, port, tls }: HealthTarget, timeoutMs = 4000): Promise<boolean> {
  // A deadline for the whole check: a socket timeout counts idle time only, and a handshake that
  // never ends took twice that. The Dockerfile gives the check 5 s.
  const options = { host, port, path: '/healthz', signal: AbortSignal.timeout(timeoutMs), ...(tls ? { rejectUnauthorized: false } : {}) };
  return new Promise((resolve) => {
    const request = (tls ? https : http).get(options, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.on('error', () => resolve(false));
  });
}
