import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startChild, type Child } from './child-process.js';
import type { Cleanup } from './cleanup.js';
import type { BenchOptions } from './options.js';

// The service under test, run as deployed (`npm start`): compiled by tsc into dist/ once per run,
// then started with plain node, each process with its own database URL and data directory.

export const SERVICE_ENTRY = 'dist/main.js';

/**
 * The node flags of `npm start`, read from package.json so the benchmark measures the runtime
 * settings that are deployed (the Dockerfile's CMD is checked against the same script by a test).
 */
export function startFlags(repoRoot: string): string[] {
  const { scripts } = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const match = /\bnode((?: --[\w-]+(?:=\S+)?)*) dist\/main\.js\b/.exec(scripts.start ?? '');
  if (!match) throw new Error(`package.json's start script does not run "node [flags] ${SERVICE_ENTRY}": ${scripts.start}`);
  return match[1]!.trim().split(' ').filter(Boolean);
}

export const serviceCommand = (repoRoot: string) => ['node', ...startFlags(repoRoot), SERVICE_ENTRY].join(' ');

export interface Secrets {
  patiro: string;
  physitrack: string;
  /** SOURCES_SECRET_KEY: base64 of 32 bytes, for the database source of phase 1b. */
  sourcesKey: string;
}

/**
 * The service's whole configuration, every variable named so that a developer's .env file in the
 * repository (read by main.ts, but never overriding a variable that is set, even to "") cannot
 * change what is measured. Empty means the documented default.
 */
export function serviceEnv(o: BenchOptions, databaseUrl: string, dataDir: string, secrets: Secrets, certPath: string): Record<string, string> {
  return {
    NODE_ENV: 'production',
    DATABASE_URL: databaseUrl,
    DATA_DIR: dataDir,
    LOG_LEVEL: o.logLevel,
    BODY_LIMIT_BYTES: '', ACK_DEADLINE_MS: '', DATABASE_POOL_SIZE: '', WRITE_BATCH_MAX_ROWS: '',
    SHUTDOWN_TIMEOUT_MS: '10000', SHUTDOWN_DRAIN_MS: '0', // no load balancer to drain from
    PATIRO_SIGNING_SECRET: secrets.patiro, PATIRO_TIMESTAMP_TOLERANCE_SECONDS: '', PATIRO_TOKEN: '', PATIRO_BASIC_AUTH: '',
    PHYSITRACK_API_KEY: secrets.physitrack, PHYSITRACK_TOKENS: '',
    SOURCES_SECRET_KEY: secrets.sourcesKey,
    // The local file host is https://127.0.0.1:<port>, so loopback must be allowed for this run.
    PHYSITRACK_FILE_URL_HOSTS: '127.0.0.1', DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true',
    DOWNLOAD_CONCURRENCY: String(o.downloadConcurrency),
    DOWNLOAD_TIMEOUT_MS: '', DOWNLOAD_MAX_BYTES: '', DOWNLOAD_RETRY_BASE_MS: '', DOWNLOAD_DEADLINE_HOURS: '', DOWNLOAD_LEASE_SECONDS: '',
    PDF_STORAGE: o.storage, PDF_DIR: '',
    NODE_EXTRA_CA_CERTS: certPath,
  };
}

/**
 * `tsc -p tsconfig.build.json` into dist/, as `npm run build` does, minus its `prisma generate`:
 * that would rewrite src/generated/, which belongs to whoever is editing src/, while tsc writes
 * only dist/. The compiler's own output is the error when the service does not compile.
 */
export function compileService(repoRoot: string, signal: AbortSignal): Promise<void> {
  const tsc = path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: repoRoot, signal, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve();
      const output = `${stdout}${stderr}`.trim();
      reject(new Error(`the service does not compile (tsc -p tsconfig.build.json):\n${output || err.message}`));
    });
  });
}

export interface ServiceSetup {
  o: BenchOptions;
  repoRoot: string;
  tmpDir: string;
  secrets: Secrets;
  certPath: string;
  cleanup: Cleanup;
}

export type StartService = (name: string, databaseUrl: string, dir: string, envOverrides?: Record<string, string>) => Promise<Child>;

/** Starts service processes named `dir`: data in tmpDir/<dir>, log in tmpDir/<dir>.log, profiles in <cpu-prof>/<dir>. */
export function serviceStarter(setup: ServiceSetup): StartService {
  const { o, repoRoot, tmpDir } = setup;
  return (name, databaseUrl, dir, envOverrides = {}) =>
    startChild({
      name, entry: SERVICE_ENTRY,
      env: { ...serviceEnv(o, databaseUrl, path.join(tmpDir, dir), setup.secrets, setup.certPath), ...envOverrides },
      // Plain node profiles one thread, but several service processes run in one benchmark: a
      // directory per process keeps their profiles apart.
      nodeArgs: [...startFlags(repoRoot), ...(o.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(o.cpuProfDir, dir)}`] : [])],
      logPath: path.join(tmpDir, `${dir}.log`), repoRoot,
    }, setup.cleanup);
}
