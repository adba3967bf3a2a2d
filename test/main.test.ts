import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from './helpers/wait.js';

const root = path.resolve(import.meta.dirname, '..');
const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

interface Run {
  exitCode: Promise<number | null>;
  output: () => string;
  kill: (signal: NodeJS.Signals) => void;
}

/** `npm start` exactly as the README says, or (faster) the entry point from source. */
function runMain(env: Record<string, string>, command: 'npm start' | 'source' = 'source'): Run {
  const [file, args] = command === 'npm start' ? ['npm', ['start']] : [process.execPath, ['--import', 'tsx', 'src/main.ts']];
  const child = spawn(file as string, args as string[], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exitCode = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { exitCode, output: () => output, kill: (signal) => child.kill(signal) };
}

describe('the service process', () => {
  it('exits non-zero in production without DATABASE_URL, naming the variable', async () => {
    const run = runMain({ NODE_ENV: 'production' });
    expect(await run.exitCode).toBe(1);
    expect(run.output()).toMatch(/DATABASE_URL: is required when NODE_ENV=production/);
  });

  it('starts on the embedded PostgreSQL with no setup, and SIGTERM stops everything', async () => {
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'wr-main-'));
    await chmod(dataDir, 0o755);
    dirs.push(dataDir);
    // SIGTERM goes to npm, as a supervisor would send it: npm must hand it to the service.
    const run = runMain({ NODE_ENV: 'development', DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1' }, 'npm start');
    await waitFor(() => /listening on http:\/\/127\.0\.0\.1:\d+/.test(run.output()), 90_000, 100);
    const port = run.output().match(/listening on http:\/\/127\.0\.0\.1:(\d+)/)![1];
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
    expect(run.output()).toMatch(/PATIRO_SIGNING_SECRET=\S+/);

    const pid = Number((await readFile(path.join(dataDir, 'postgres', 'cluster', 'postmaster.pid'), 'utf8')).split('\n')[0]);
    const stoppedAt = Date.now();
    run.kill('SIGTERM');
    expect(await run.exitCode).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(30_000);
    expect(() => process.kill(pid, 0)).toThrow();
    expect(run.output()).toMatch(/"msg":"stopped"/);
  }, 120_000);
});
