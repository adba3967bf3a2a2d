import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { freePort } from '../../src/db/embedded.js';
import { checkHealth, healthTarget } from '../../src/http/health-probe.js';
import { startService, type RunningService } from '../../src/server.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';
import { captureLogs } from '../helpers/logs.js';
import { testServerTls } from '../helpers/tls.js';

// The image's HEALTHCHECK runs dist/cli/healthcheck.js: it must find the service as it is configured,
// over HTTPS when TLS_CERT_FILE is set (a plain request there marked a healthy container unhealthy).

let database: TestDatabase;
let dir: string;
beforeAll(async () => {
  database = await createTestDatabase();
  dir = await mkdtemp(path.join(os.tmpdir(), 'healthcheck-'));
});
afterAll(async () => {
  await database.drop();
  await rm(dir, { recursive: true, force: true });
});

async function serve(env: Record<string, string>, logs = captureLogs()): Promise<RunningService> {
  const base = { NODE_ENV: 'test', DATABASE_URL: database.url, METRICS_ENABLED: 'false', SHUTDOWN_DRAIN_MS: '0', DATA_DIR: dir };
  return startService(loadConfig({ ...base, ...env }), logs.logger);
}

/** Where the check connects for these variables, read as the service reads them. */
const targetOf = (env: Record<string, string>) => healthTarget(loadConfig({ NODE_ENV: 'test', ...env }));

describe('the container health check', () => {
  it('connects where HOST binds: loopback for a wildcard, the address otherwise', () => {
    expect(targetOf({})).toEqual({ host: '127.0.0.1', port: 3000, tls: false });
    expect(targetOf({ HOST: '0.0.0.0', PORT: '3100' })).toEqual({ host: '127.0.0.1', port: 3100, tls: false });
    expect(targetOf({ HOST: '::' })).toMatchObject({ host: '127.0.0.1' });
    expect(targetOf({ HOST: '[::]' })).toMatchObject({ host: '127.0.0.1' });
    expect(targetOf({ HOST: '[::1]' })).toMatchObject({ host: '::1' });
    expect(targetOf({ HOST: '10.1.2.3', TLS_CERT_FILE: '/run/tls.crt', TLS_KEY_FILE: '/run/tls.key' })).toEqual({ host: '10.1.2.3', port: 3000, tls: true });
  });

  it('finds the service healthy over HTTP and over HTTPS, and not where nothing listens nor with a configuration it could not start with, as the real script exits', async () => {
    const tls = testServerTls();
    const [cert, key] = [path.join(dir, 'tls.crt'), path.join(dir, 'tls.key')];
    await writeFile(cert, tls.cert);
    await writeFile(key, tls.key);
    const [plainPort, tlsPort] = [await freePort(), await freePort()];
    const plain = await serve({ HOST: '127.0.0.1', PORT: String(plainPort) });
    const secureLogs = captureLogs();
    const secure = await serve({ HOST: '127.0.0.1', PORT: String(tlsPort), TLS_CERT_FILE: cert, TLS_KEY_FILE: key }, secureLogs);
    try {
      // Its line names the scheme it serves (Fastify's own said http).
      expect(secureLogs.entries().map((e) => e.msg)).toContain(`Server listening at https://127.0.0.1:${tlsPort}`);
      // Not spawnSync: the services run in this process and must answer meanwhile.
      const script = (env: Record<string, string>) => new Promise<{ status: number | null; stderr: string }>((resolve) => {
        const child = execFile(process.execPath, ['--import', 'tsx', 'src/cli/healthcheck.ts'], { env: { PATH: process.env.PATH, NODE_ENV: 'test', ...env }, timeout: 20_000 }, (_err, _stdout, stderr) =>
          resolve({ status: child.exitCode, stderr }));
      });
      const cases: { env: Record<string, string>; healthy: boolean }[] = [
        { env: { HOST: '127.0.0.1', PORT: String(plainPort) }, healthy: true },
        { env: { HOST: '0.0.0.0', PORT: String(tlsPort), TLS_CERT_FILE: cert, TLS_KEY_FILE: key }, healthy: true },
        // A plain request to the TLS port: what the old HEALTHCHECK did.
        { env: { HOST: '0.0.0.0', PORT: String(tlsPort) }, healthy: false },
        { env: { HOST: '127.0.0.1', PORT: String(await freePort()) }, healthy: false },
      ];
      for (const { env, healthy } of cases) {
        expect(await checkHealth(targetOf(env)), JSON.stringify(env)).toBe(healthy);
        const run = await script(env);
        expect(run.status, `${JSON.stringify(env)}: ${run.stderr}`).toBe(healthy ? 0 : 1);
      }
      // TLS_CERT_FILE without its key: the service would not start; the check says so, and fails.
      const broken = await script({ HOST: '127.0.0.1', PORT: String(tlsPort), TLS_CERT_FILE: cert });
      expect(broken.status).toBe(1);
      expect(broken.stderr).toContain('TLS_CERT_FILE, TLS_KEY_FILE');
    } finally {
      await plain.stop();
      await secure.stop();
    }
  });

  it('gives up at its deadline on a process that accepts and never answers, over HTTP and HTTPS', async () => {
    // A stuck process: the kernel accepts, nobody reads. Over HTTPS the handshake never ends.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as net.AddressInfo;
    try {
      for (const target of [{ host: '127.0.0.1', port, tls: false }, { host: '127.0.0.1', port, tls: true }]) {
        const started = performance.now();
        expect(await checkHealth(target, 1000), JSON.stringify(target)).toBe(false);
        expect(performance.now() - started, JSON.stringify(target)).toBeLessThan(1700); // a socket timeout alone took 2 s over HTTPS
      }
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('is what the Dockerfile runs, from the compiled dist/', async () => {
    const dockerfile = await readFile(new URL('../../Dockerfile', import.meta.url), 'utf8');
    expect(dockerfile).toMatch(/^\s*CMD \["node", "dist\/cli\/healthcheck\.js"\]$/m);
  });
});
