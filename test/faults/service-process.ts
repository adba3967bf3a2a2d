import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { PATIRO_SECRET } from '../helpers/patiro.js';
import { PHYSITRACK_KEY } from '../helpers/physitrack.js';

// The real service as a child process (`node --import tsx src/main.ts`), so a fault test can
// kill -9 it, SIGTERM it, run two of it, and read what it logged.

const root = path.resolve(import.meta.dirname, '../..');

export interface ServiceOptions {
  databaseUrl: string;
  /** Extra or overriding environment variables. */
  env?: Record<string, string>;
  /** Listen on this port (a restart keeps its port); a free one by default. */
  port?: number;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Date.now() when the process exited. */
  at: number;
}

export interface ServiceProcess {
  readonly options: ServiceOptions & { port: number };
  readonly pid: number;
  readonly baseUrl: string;
  /** Every stdout line so far (one JSON log object per line). */
  readonly lines: string[];
  /** Every stdout line that parses as JSON. */
  logEntries(): Record<string, unknown>[];
  /** Everything it wrote, stdout then stderr: what an operator would read after a failed start. */
  output(): string;
  readonly exited: Promise<Exit>;
  isRunning(): boolean;
  signal(signal: NodeJS.Signals): void;
  /** kill -9, resolved once the process is gone. */
  kill9(): Promise<Exit>;
  /** Resolves when GET /readyz answers 200; fails early (with the output) if the process exits. */
  waitReady(timeoutMs?: number): Promise<void>;
}

const running = new Set<ChildProcess>();
// Last line of defence: a worker that dies must not leave services behind.
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== 'object' || address === null) throw new Error('no port');
  return address.port;
}

/** The environment the brief prescribes: explicit, nothing inherited but PATH, HOME and the test CA. */
export function serviceEnv(options: ServiceOptions & { port: number }): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: process.env.HOME ?? '/tmp',
    NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS ?? '',
    NODE_ENV: 'test',
    DATABASE_URL: options.databaseUrl,
    HOST: '127.0.0.1',
    PORT: String(options.port),
    PATIRO_SIGNING_SECRET: PATIRO_SECRET,
    PHYSITRACK_API_KEY: PHYSITRACK_KEY,
    PHYSITRACK_FILE_URL_HOSTS: 'localhost',
    DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true',
    DOWNLOAD_LEASE_SECONDS: '3',
    DOWNLOAD_TIMEOUT_MS: '2000',
    DOWNLOAD_RETRY_BASE_MS: '200',
    LOG_LEVEL: 'info',
    ...options.env,
  };
}

export async function startServiceProcess(options: ServiceOptions): Promise<ServiceProcess> {
  const port = options.port ?? (await freePort());
  const resolved = { ...options, port };
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: serviceEnv(resolved),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  const lines: string[] = [];
  let partial = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    const parts = (partial + chunk.toString('utf8')).split('\n');
    partial = parts.pop() ?? '';
    lines.push(...parts.filter((line) => line !== ''));
  });
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  let exit: Exit | undefined;
  const exited = new Promise<Exit>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child);
      exit = { code, signal, at: Date.now() };
      resolve(exit);
    }),
  );
  const baseUrl = `http://127.0.0.1:${port}`;
  const output = () => `--- stdout (last 20 lines)\n${lines.slice(-20).join('\n')}\n--- stderr\n${stderr.slice(-4000)}`;

  return {
    options: resolved,
    pid: child.pid ?? -1,
    baseUrl,
    lines,
    logEntries: () =>
      lines.flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>];
        } catch {
          return [];
        }
      }),
    output: () => `${lines.join('\n')}\n${partial}\n${stderr}`,
    exited,
    isRunning: () => exit === undefined,
    signal: (signal) => void child.kill(signal),
    async kill9() {
      if (exit === undefined) child.kill('SIGKILL');
      return exited;
    },
    async waitReady(timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        if (exit !== undefined) throw new Error(`the service exited (${exit.code ?? exit.signal}) before it was ready\n${output()}`);
        const status = await fetch(`${baseUrl}/readyz`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status, () => 0);
        if (status === 200) return;
        if (Date.now() > until) throw new Error(`the service was not ready within ${timeoutMs} ms\n${output()}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
  };
}

/** Starts the service again with the same options (and port) after the previous process is gone. */
export async function restartServiceProcess(previous: ServiceProcess): Promise<ServiceProcess> {
  await previous.kill9();
  return startServiceProcess(previous.options);
}

/** For afterAll: kill -9 whatever is still running, even when a test failed half-way. */
export async function killAllServiceProcesses(): Promise<void> {
  const children = [...running];
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGKILL');
        }),
    ),
  );
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The operator CLI (`node --import tsx src/cli/main.ts …`) as a process of its own, with an explicit
 * environment like the service's: nothing inherited but PATH and HOME.
 */
export function runCliProcess(args: string[], env: Record<string, string>): Promise<CliRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', NODE_ENV: 'test', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => {
      running.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}
