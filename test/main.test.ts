import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from './helpers/wait.js';

const root = path.resolve(import.meta.dirname, '..');
const tsx = createRequire(import.meta.url).resolve('tsx');
const isRoot = os.userInfo().uid === 0;
const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

interface Run {
  exitCode: Promise<number | null>;
  output: () => string;
  kill: (signal: NodeJS.Signals) => void;
}

/** `npm start` exactly as the README says, or (faster) the entry point from source, in `cwd`. */
function runMain(env: Record<string, string>, command: 'npm start' | 'source' = 'source', cwd = root): Run {
  const [file, args] = command === 'npm start' ? ['npm', ['start']] : [process.execPath, ['--import', tsx, path.join(root, 'src/main.ts')]];
  const child = spawn(file as string, args as string[], {
    cwd,
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

  it.runIf(isRoot)('as root, starts from a 0700 directory with DATA_DIR inside it, its database kept where postgres can reach it', async () => {
    const home = await mkdtemp(path.join(os.tmpdir(), 'wr-main-home-'));
    await chmod(home, 0o700);
    dirs.push(home);
    const requested = path.join(home, 'data', 'postgres'); // DATA_DIR is the default ./data
    const places: string[] = [];
    for (const start of ['first', 'second']) {
      const run = runMain({ NODE_ENV: 'development', PORT: '0', HOST: '127.0.0.1' }, 'source', home);
      await waitFor(() => /listening on http:\/\/127\.0\.0\.1:\d+/.test(run.output()) || run.output().includes('could not start'), 90_000, 100);
      const place = run.output().match(/the embedded PostgreSQL keeps its data in (\S+): it runs as the postgres user, which cannot reach (\S+)"/);
      expect(place?.slice(1), run.output()).toEqual([expect.not.stringContaining(home), requested]);
      places.push(place![1]!);
      if (start === 'first') dirs.push(place![1]!);
      // The same database on the second start: initialised once.
      expect(run.output().includes('initialising embedded PostgreSQL (first start)'), start).toBe(start === 'first');
      const port = run.output().match(/listening on http:\/\/127\.0\.0\.1:(\d+)/)![1];
      expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);

      const pid = Number((await readFile(path.join(place![1]!, 'cluster', 'postmaster.pid'), 'utf8')).split('\n')[0]);
      run.kill('SIGTERM');
      expect(await run.exitCode).toBe(0);
      expect(() => process.kill(pid, 0)).toThrow();
    }
    expect(places[1]).toBe(places[0]);
  }, 180_000);
});
