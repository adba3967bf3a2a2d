import http from 'node:http';
import https from 'node:https';
import { pathToFileURL } from 'node:url';

// The container's HEALTHCHECK (Dockerfile): GET /healthz of this process, as the process serves it.
// Over HTTPS when TLS_CERT_FILE is set (a plain request to a TLS port fails, and the image would be
// marked unhealthy for serving as configured). The certificate is not verified: the check talks to
// its own container on a loopback address, and whether it is alive is the question, not who it is.
// On the address HOST binds, or loopback when HOST is a wildcard.

type Env = Record<string, string | undefined>;

/** Where the check connects: host, port and whether to speak TLS. */
export function healthTarget(env: Env): { host: string; port: number; tls: boolean } {
  const host = (env.HOST ?? '').trim();
  const unbracketed = host.replace(/^\[(.*)\]$/, '$1');
  // A wildcard, IPv6's included, listens on 127.0.0.1 too (Node's sockets are dual-stack), and ::1
  // may be missing where IPv6 is off.
  const wildcard = unbracketed === '' || unbracketed === '0.0.0.0' || unbracketed === '::';
  return {
    host: wildcard ? '127.0.0.1' : unbracketed,
    port: Number(env.PORT || 3000),
    tls: Boolean(env.TLS_CERT_FILE?.trim()),
  };
}

/** True when /healthz answers 200 within `timeoutMs`, all of it (connect, TLS handshake, answer). */
export function checkHealth(env: Env, timeoutMs = 4000): Promise<boolean> {
  const { host, port, tls } = healthTarget(env);
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

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void checkHealth(process.env).then((healthy) => process.exit(healthy ? 0 : 1));
}
