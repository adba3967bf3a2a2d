import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { Cleanup } from './cleanup.js';
import { sleep } from './cleanup.js';

export interface Child {
  pid: number;
  port: number;
  baseUrl: string;
  /** Resident set size now and at its peak (VmHWM), in bytes, from /proc/<pid>/status. */
  memory(): { rss: number; peak: number };
  /** Restarts VmHWM from the current RSS (Linux ≥ 4.0); false if the kernel refused. */
  resetPeak(): boolean;
  /** SIGTERM, then SIGKILL if it has not exited within the bound. Safe to call twice. */
  stop(): Promise<void>;
}

export interface ChildSpec {
  name: string;
  /**
   * The entry point relative to the repository root: a .ts file runs as `node --import tsx <file>`
   * (the benchmark's own helpers), a .js file with plain node (the compiled service, as deployed).
   */
  entry: string;
  /** Extra flags for node, e.g. --cpu-prof. */
  nodeArgs?: string[];
  env: Record<string, string>;
  /** stdout and stderr go here: the service logs every request, and a pipe nobody reads would stall it. */
  logPath: string;
  repoRoot: string;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function statusField(pid: number, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : 0;
}

export function logTail(logPath: string, lines = 15): string {
  try {
    return readFileSync(logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Starts a process the way `npm start` (compiled .js) or `npm run dev` (.ts) does, with a minimal
 * environment (nothing of the caller's leaks in), on 127.0.0.1 and a free port, and waits until
 * GET /healthz answers 200.
 */
export async function startChild(spec: ChildSpec, cleanup: Cleanup): Promise<Child> {
  const port = await freePort();
  const log = openSync(spec.logPath, 'a');
  const base = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', TMPDIR: process.env.TMPDIR ?? '/tmp' };
  const loader = spec.entry.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const child = spawn(process.execPath, [...(spec.nodeArgs ?? []), ...loader, spec.entry], {
    cwd: spec.repoRoot,
    env: { ...base, ...spec.env, HOST: '127.0.0.1', PORT: String(port) },
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  let exitCode: number | null | undefined;
  const exited = new Promise<void>((resolve) => child.once('exit', (code, signal) => {
    exitCode = code ?? (signal ? -1 : null);
    resolve();
  }));
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${spec.name} could not be started`);

  const stop = async () => {
    if (exitCode !== undefined) return;
    child.kill('SIGTERM');
    const killed = await Promise.race([exited.then(() => false), sleep(15_000).then(() => true)]);
    if (killed) {
      process.stderr.write(`${spec.name} did not stop within 15 s of SIGTERM; killing it\n`);
      child.kill('SIGKILL');
      await exited;
    }
  };
  cleanup.add(`stop ${spec.name}`, stop, 20_000);

  const baseUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (exitCode !== undefined) throw new Error(`${spec.name} exited during start (code ${exitCode}); its log ends:\n${logTail(spec.logPath)}`);
    if (Date.now() > deadline) throw new Error(`${spec.name} did not answer /healthz within 90 s; its log ends:\n${logTail(spec.logPath)}`);
    const ok = await fetch(`${baseUrl}/healthz`).then(
      async (r) => {
        await r.body?.cancel();
        return r.ok;
      },
      () => false,
    );
    if (ok) break;
    await sleep(100, cleanup.signal);
  }
  return {
    pid,
    port,
    baseUrl,
    memory: () => ({ rss: statusField(pid, 'VmRSS'), peak: statusField(pid, 'VmHWM') }),
    resetPeak() {
      try {
        writeFileSync(`/proc/${pid}/clear_refs`, '5');
        return true;
      } catch {
        return false;
      }
    },
    stop,
  };
}
