import { execFile, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { freePort } from '../../src/db/embedded.js';
import type { BenchOptions } from './options.js';

export const REPO_ROOT = path.resolve(import.meta.dirname, '../..');
export const run = promisify(execFile);
/** The environment of every child process starts from this: nothing else of the caller's leaks in. */
export const baseEnv = () => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', TMPDIR: process.env.TMPDIR ?? '/tmp' });

/** Everything the bench starts registers how to undo it: last-in first-out, once, each step bounded, however the run ends (Ctrl-C aborts `signal`). */
export type Cleanup = { add(name: string, step: () => unknown, timeoutMs?: number): void; run(): Promise<void>; readonly signal: AbortSignal };

export function createCleanup(): Cleanup {
  const steps: { name: string; step: () => unknown; timeoutMs: number }[] = [];
  const interrupted = new AbortController();
  let running: Promise<void> | undefined;
  const runAll = () => (running ??= (async () => {
    for (let s = steps.pop(); s; s = steps.pop()) {
      const late = sleep(s.timeoutMs, `took over ${s.timeoutMs} ms; moving on`); // the run ends in process.exit, which ends these timers
      const problem = await Promise.race([Promise.resolve().then(s.step).then(() => '', (err: Error) => `failed: ${err.message}`), late]);
      if (problem) process.stderr.write(`cleanup: "${s.name}" ${problem}\n`);
    }
  })());
  let firstSignalAt = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    // Ctrl-C reaches this process twice, from the terminal and relayed by the tsx wrapper; a later one exits at once.
    if (Date.now() - firstSignalAt < 2000) return;
    if (firstSignalAt > 0) process.exit(130);
    firstSignalAt = Date.now();
    process.stderr.write(`\n${signal}: stopping the benchmark and cleaning up (Ctrl-C again to skip)\n`);
    interrupted.abort(new Error(`interrupted by ${signal}`));
    void runAll().then(() => process.exit(130));
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  return { add: (name, step, timeoutMs = 15_000) => void steps.push({ name, step, timeoutMs }), run: runAll, signal: interrupted.signal };
}

/** `memory()`: VmRSS and VmHWM (the peak since start), in bytes. */
export type Child = { pid: number; baseUrl: string; memory(): { rss: number; peak: number }; stop(): Promise<void> };

export const logTail = (logPath: string) => (existsSync(logPath) ? readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-15).join('\n') : '(no log)');

/** `node <args>` on 127.0.0.1 and a free port, its output in `logPath` (a pipe nobody reads would stall it); ready once GET /healthz answers. */
export async function startChild(name: string, args: string[], env: Record<string, string>, logPath: string, cleanup: Cleanup): Promise<Child> {
  const port = await freePort();
  const log = openSync(logPath, 'a');
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, env: { ...baseEnv(), ...env, HOST: '127.0.0.1', PORT: String(port) }, stdio: ['ignore', log, log] });
  closeSync(log);
  let exitCode: number | undefined;
  const exited = new Promise<void>((resolve) => child.once('exit', (code) => resolve(void (exitCode = code ?? -1))));
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${name} could not be started`);
  const stop = async () => {
    if (exitCode !== undefined) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => (process.stderr.write(`${name} did not stop within 15 s of SIGTERM; killing it\n`), child.kill('SIGKILL')), 15_000);
    await exited.finally(() => clearTimeout(killer));
  };
  cleanup.add(`stop ${name}`, stop, 20_000);
  const baseUrl = `http://127.0.0.1:${port}`;
  for (const deadline = Date.now() + 90_000; ; await sleep(100, undefined, { signal: cleanup.signal })) {
    if (exitCode !== undefined || Date.now() > deadline) throw new Error(`${name} ${exitCode === undefined ? 'did not answer /healthz within 90 s' : `exited during start (code ${exitCode})`}; its log ends:\n${logTail(logPath)}`);
    if (await fetch(`${baseUrl}/healthz`).then(async (r) => (await r.body?.cancel(), r.ok), () => false)) break;
  }
  const status = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
  return { pid, baseUrl, memory: () => ({ rss: status('VmRSS'), peak: status('VmHWM') }), stop };
}

/** `npm start`'s node flags and entry, from package.json: the bench measures the runtime settings that are deployed. */
function startCommand(): string[] {
  const { scripts } = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const match = /\bnode((?: --[\w-]+(?:=\S+)?)*) dist\/main\.js\b/.exec(scripts.start ?? '');
  if (!match) throw new Error(`package.json's start script does not run "node [flags] dist/main.js": ${scripts.start}`);
  return [...match[1]!.trim().split(' ').filter(Boolean), 'dist/main.js'];
}

export const serviceCommand = () => ['node', ...startCommand()].join(' ');

/** `tsc -p tsconfig.build.json` into dist/, as `npm run build` does, minus its `prisma generate`: that would rewrite src/generated/. */
export async function compileService(signal: AbortSignal): Promise<void> {
  await run(process.execPath, [path.join(REPO_ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: REPO_ROOT, signal, maxBuffer: 16 << 20 })
    .catch((err: { stdout?: string; stderr?: string; message: string }) => Promise.reject(new Error(`the service does not compile:\n${`${err.stdout ?? ''}${err.stderr ?? ''}`.trim() || err.message}`)));
}

/** The default source's vendor secrets, and SOURCES_SECRET_KEY for the database source of phase 1b. */
export type Secrets = Record<'patiro' | 'physitrack' | 'sourcesKey', string>;

// Service processes as deployed, with data in tmpDir/<dir> and log in <dir>.log. Every variable is named (empty means the default), so that
// a developer's .env file, read by main.ts but never overriding a variable that is set, cannot change what is measured.
export function serviceStarter(o: BenchOptions, tmpDir: string, secrets: Secrets, certPath: string, cleanup: Cleanup) {
  const defaults = ['BODY_LIMIT_BYTES', 'ACK_DEADLINE_MS', 'DATABASE_POOL_SIZE', 'WRITE_BATCH_MAX_ROWS', 'METRICS_ENABLED', 'METRICS_PORT', 'RETENTION_DAYS', 'TLS_CERT_FILE',
    'TLS_KEY_FILE', 'PATIRO_TIMESTAMP_TOLERANCE_SECONDS', 'PATIRO_TOKEN', 'PATIRO_BASIC_AUTH', 'PHYSITRACK_TOKENS', 'DOWNLOAD_TIMEOUT_MS', 'DOWNLOAD_MAX_BYTES',
    'DOWNLOAD_RETRY_BASE_MS', 'DOWNLOAD_DEADLINE_HOURS', 'DOWNLOAD_LEASE_SECONDS', 'PDF_DIR', 'SPOOL_DIR', 'SPOOL_MAX_BYTES'];
  return (name: string, databaseUrl: string, dir: string, overrides: Record<string, string> = {}) => startChild(name, startCommand(), {
    ...Object.fromEntries(defaults.map((variable) => [variable, ''])),
    NODE_ENV: 'production', DATABASE_URL: databaseUrl, DATA_DIR: path.join(tmpDir, dir), LOG_LEVEL: o.logLevel,
    SHUTDOWN_TIMEOUT_MS: '10000', SHUTDOWN_DRAIN_MS: '0', // no load balancer to drain from
    PATIRO_SIGNING_SECRET: secrets.patiro, PHYSITRACK_API_KEY: secrets.physitrack, SOURCES_SECRET_KEY: secrets.sourcesKey,
    // The file host is https://127.0.0.1:<port>: loopback must be allowed, and its certificate trusted as a private CA is.
    PHYSITRACK_FILE_URL_HOSTS: '127.0.0.1', DOWNLOAD_ALLOW_PRIVATE_ADDRESSES: 'true', NODE_EXTRA_CA_CERTS: certPath,
    DOWNLOAD_CONCURRENCY: String(o.downloadConcurrency), PDF_STORAGE: o.storage,
    ...overrides,
  }, path.join(tmpDir, `${dir}.log`), cleanup);
}
export type StartService = ReturnType<typeof serviceStarter>;

// Where the CPU went during a phase, from /proc (Linux): the process under test, the PostgreSQL server (its postmaster and every child of
// it, not other clusters on the machine), this process (load generator, file host, node-postgres loops), and everything else.

const TICK_S = 0.01; // USER_HZ; `getconf CLK_TCK` is 100 on every Linux we run on

/** CPU seconds (user + system) used during `windowS` seconds; `others` is the rest of the machine, where other people's processes show up. */
export type CpuUse = { windowS: number; target: number; postgres: number; bench: number; others: number };

/** In ticks: `own` is utime + stime, `reaped` cutime + cstime (the postmaster reaps its exited backends). */
function procStat(pid: number | string): { comm: string; ppid: number; own: number; reaped: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After "(comm) ": state, ppid, …; utime, stime, cutime, cstime are fields 14–17.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    return { comm: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), ppid: f[1] ?? 0, own: (f[11] ?? 0) + (f[12] ?? 0), reaped: (f[13] ?? 0) + (f[14] ?? 0) };
  } catch {
    return undefined; // it exited between listing and reading
  }
}

/** The postmaster of a local server, found from a backend's pid (`SELECT pg_backend_pid()`). */
export function postmasterOf(backendPid: number): number | undefined {
  const backend = procStat(backendPid);
  return backend?.comm.startsWith('postgres') ? backend.ppid : undefined;
}

/** Without a `target`, the target is the children this process reaped meanwhile (pgbench, the fetch loop): counted once they exit. */
function snapshot(pids: { target?: number; postmaster?: number }) {
  const [, user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = (readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '').trim().split(/\s+/).map(Number);
  let postgres = 0;
  for (const entry of pids.postmaster === undefined ? [] : readdirSync('/proc')) {
    const p = /^\d+$/.test(entry) ? procStat(entry) : undefined;
    if (p && (Number(entry) === pids.postmaster || p.ppid === pids.postmaster)) postgres += p.own + p.reaped;
  }
  const target = (pids.target === undefined ? procStat('self')?.reaped : procStat(pids.target)?.own) ?? 0;
  const self = process.cpuUsage();
  return { atMs: performance.now(), machine: (user + nice + system + irq + softirq + steal) * TICK_S, target: target * TICK_S, postgres: postgres * TICK_S, bench: (self.user + self.system) / 1e6 };
}

/** Runs `work` and measures the CPU used meanwhile. */
export async function withCpu<T>(pids: { target?: number; postmaster?: number }, work: () => Promise<T>): Promise<{ result: T; cpu: CpuUse }> {
  const start = snapshot(pids);
  const result = await work();
  const end = snapshot(pids);
  const [target, postgres, bench] = [end.target - start.target, end.postgres - start.postgres, end.bench - start.bench];
  const others = Math.max(0, end.machine - start.machine - target - postgres - bench);
  return { result, cpu: { windowS: Math.max((end.atMs - start.atMs) / 1000, 1e-3), target, postgres, bench, others } };
}
